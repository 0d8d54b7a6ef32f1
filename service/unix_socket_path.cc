#include "service/unix_socket_path.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace samplerd {
namespace {

// Whether a listener answers at `path`: a connect of either socket type gets through, meets a full backlog, or
// reaches a listener of the other type (EPROTOTYPE); only ECONNREFUSED (or no file) means nobody listens.
bool Answers(const std::string& path) {
  struct sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof(address.sun_path)) return false;
  std::memcpy(address.sun_path, path.data(), path.size());
  for (const int type : {SOCK_STREAM, SOCK_SEQPACKET}) {
    const int fd = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) continue;
    const int connected = connect(fd, reinterpret_cast<const struct sockaddr*>(&address), sizeof(address));
    const int error = errno;
    close(fd);
    if (connected == 0 || error == EAGAIN || error == EINPROGRESS || error == EPROTOTYPE) return true;
  }
  return false;
}

}  // namespace

absl::Status ClaimUnixSocketPath(const std::string& path, absl::string_view flag) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return absl::OkStatus();
  if (Answers(path)) {
    return absl::UnavailableError(absl::StrCat(flag, " ", path,
                                               ": another server is listening there (a second samplerd with the "
                                               "same path?); stop it or choose another path"));
  }
  unlink(path.c_str());
  return absl::OkStatus();
}

std::optional<UnixListenAddress> ParseUnixListenAddress(absl::string_view address) {
  UnixListenAddress parsed;
  if (absl::ConsumePrefix(&address, "unix-abstract:")) {
    parsed.abstract = true;
  } else if (!absl::ConsumePrefix(&address, "unix:")) {
    return std::nullopt;
  }
  parsed.after_slashes = absl::ConsumePrefix(&address, "//");
  parsed.path = std::string(address);
  return parsed;
}

std::string UnixListenPath(absl::string_view address) {
  const std::optional<UnixListenAddress> parsed = ParseUnixListenAddress(address);
  return parsed.has_value() && !parsed->abstract ? parsed->path : "";
}

}  // namespace samplerd
