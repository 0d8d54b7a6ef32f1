#include "service/open_file_limit.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace samplerd {

absl::StatusOr<uint64_t> RaiseOpenFileLimit() {
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::InternalError(absl::StrCat("getrlimit(RLIMIT_NOFILE): ", std::strerror(errno)));
  }
  if (limit.rlim_cur >= limit.rlim_max) return static_cast<uint64_t>(limit.rlim_cur);
  const rlim_t soft = limit.rlim_cur;
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::InternalError(absl::StrCat("open files stay at ", soft, ": setrlimit(RLIMIT_NOFILE, ", limit.rlim_max,
                                            "): ", std::strerror(errno)));
  }
  return static_cast<uint64_t>(limit.rlim_max);
}

uint64_t OpenFileLimit() {
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) {
    return std::numeric_limits<uint64_t>::max();
  }
  return static_cast<uint64_t>(limit.rlim_cur);
}

}  // namespace samplerd
