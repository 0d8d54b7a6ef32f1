#include "core/small_file.h"

#include <sys/stat.h>

#include <fstream>

#include "absl/strings/str_cat.h"

namespace samplerd {

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, int64_t max_bytes) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return absl::NotFoundError("cannot be read");
  if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError("is not a regular file");
  if (st.st_size > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("is ", st.st_size, " bytes, over the ", max_bytes, " allowed"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot be read");
  std::string text(static_cast<size_t>(max_bytes) + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) return absl::InvalidArgumentError("cannot be read");
  text.resize(static_cast<size_t>(in.gcount()));
  if (static_cast<int64_t>(text.size()) > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("grew past ", max_bytes, " bytes while it was read"));
  }
  return text;
}

}  // namespace samplerd
