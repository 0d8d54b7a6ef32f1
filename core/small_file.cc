#include "core/small_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"

namespace samplerd {

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, int64_t max_bytes) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; the checks below then run on what was opened, so a
  // path swapped after them cannot bring a FIFO or a device back.
  const int fd = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError("cannot be read");
  absl::Cleanup close_fd = [fd] { close(fd); };
  struct stat st;
  if (fstat(fd, &st) != 0) return absl::NotFoundError("cannot be read");
  if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError("is not a regular file");
  if (st.st_size > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("is ", st.st_size, " bytes, over the ", max_bytes, " allowed"));
  }
  // One byte more than the file had, to see it grow while it is read.
  std::string text(static_cast<size_t>(st.st_size) + 1, '\0');
  size_t filled = 0;
  while (filled < text.size()) {
    const ssize_t n = read(fd, text.data() + filled, text.size() - filled);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InvalidArgumentError("cannot be read");
    }
    filled += static_cast<size_t>(n);
  }
  if (filled > static_cast<size_t>(st.st_size)) {
    return absl::InvalidArgumentError(absl::StrCat("grew while it was read (", st.st_size, " bytes when opened)"));
  }
  text.resize(filled);
  return text;
}

}  // namespace samplerd
