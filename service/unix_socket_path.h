// ClaimUnixSocketPath(): makes a unix socket path ready for bind without taking it from a live server.
//
// bind() fails on an existing file, so a server removes the socket file an earlier run left behind; gRPC does
// the same for a unix: listen address. A socket file can also belong to a server still running (a second samplerd
// started with the same --listen unix: or --shm_socket); removing it would leave that server running with no
// way to reach it. So a socket file is removed only when nothing answers a connect on it.
//
//   if (absl::Status s = ClaimUnixSocketPath("/run/samplerd/shm.sock", "--shm_socket"); !s.ok()) return s;
//   bind(fd, ...);  // the path is free
#ifndef SAMPLERD_SERVICE_UNIX_SOCKET_PATH_H_
#define SAMPLERD_SERVICE_UNIX_SOCKET_PATH_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace samplerd {

// OK when nothing is at `path` or a stale socket file was removed; UNAVAILABLE naming `flag` when a server
// answers there. Anything else at the path (a regular file, a directory) is left for bind to refuse.
absl::Status ClaimUnixSocketPath(const std::string& path, absl::string_view flag);

// A gRPC unix listen address taken apart: "unix:/path" or "unix:///path" (a file), "unix-abstract:name" (no
// file). `path` is what follows the scheme and an optional "//"; `after_slashes` says the "//" was there.
struct UnixListenAddress {
  bool abstract = false;
  bool after_slashes = false;
  std::string path;
};
std::optional<UnixListenAddress> ParseUnixListenAddress(absl::string_view address);

// The file path of a gRPC listen address "unix:/path" or "unix:///path"; empty for any other address (TCP, or
// unix-abstract:, which has no file).
std::string UnixListenPath(absl::string_view address);

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_UNIX_SOCKET_PATH_H_
