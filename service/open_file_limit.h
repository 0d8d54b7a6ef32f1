// RaiseOpenFileLimit(): the soft limit on open files raised to the hard limit, as Go's runtime does for every
// server it starts.
//
// Every connection holds a descriptor, and gRPC 1.51 stops accepting for good after one accept() fails with
// EMFILE (CVE-2023-4785, docs/reliability.md "Known gaps"). A soft limit of 1024, the default for a process a
// shell or systemd starts, is reached by a thousand idle connections; the hard limit, usually 524288 or more,
// is what the operator allows.
//
//   absl::StatusOr<uint64_t> limit = RaiseOpenFileLimit();
//   if (limit.ok()) spdlog::info("open files: {}", *limit);
#ifndef SAMPLERD_SERVICE_OPEN_FILE_LIMIT_H_
#define SAMPLERD_SERVICE_OPEN_FILE_LIMIT_H_

#include <cstdint>

#include "absl/status/statusor.h"

namespace samplerd {

// The soft RLIMIT_NOFILE after the call (the hard limit, or the soft one when it already was as high);
// an error when the limits cannot be read or set.
absl::StatusOr<uint64_t> RaiseOpenFileLimit();

// The soft RLIMIT_NOFILE now (UINT64_MAX when unlimited or unreadable).
uint64_t OpenFileLimit();

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_OPEN_FILE_LIMIT_H_
