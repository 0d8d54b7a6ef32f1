// ReadSmallFile(): the contents of an operator's file (a profile config, a token file, a certificate), read
// whole, with the checks that keep a bad path from hanging or exhausting the reader: only a regular file of at
// most `max_bytes` is read. A FIFO would block the reading thread until a writer comes (the reload thread also
// handles SIGTERM), and a device such as /dev/zero would be read without end.
//
//   absl::StatusOr<std::string> text = ReadSmallFile(path, kMaxOperatorFileBytes);
//   if (!text.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", text.status().message()));
#ifndef SAMPLERD_CORE_SMALL_FILE_H_
#define SAMPLERD_CORE_SMALL_FILE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace samplerd {

// A token file or a certificate: far below this.
inline constexpr int64_t kMaxOperatorFileBytes = 1 << 20;

// NOT_FOUND when nothing can be opened at `path`; INVALID_ARGUMENT when it is not a regular file or is (or grows
// while read to) more than `max_bytes`. The messages say what is wrong ("is not a regular file"), for the caller
// to put after the path or flag.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, int64_t max_bytes);

}  // namespace samplerd

#endif  // SAMPLERD_CORE_SMALL_FILE_H_
