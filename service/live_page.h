// The live page's static files (service/live_page/), compiled into the binary by embed_files.cmake.
//
//   for (const EmbeddedFile& file : LivePageFiles()) {
//     server.Get(file.path, ...);    // "/index.html" served as file.content_type with file.body
//   }
#ifndef SAMPLERD_SERVICE_LIVE_PAGE_H_
#define SAMPLERD_SERVICE_LIVE_PAGE_H_

#include <string_view>
#include <vector>

namespace samplerd {

struct EmbeddedFile {
  std::string_view path;  // "/index.html"
  std::string_view content_type;
  std::string_view body;
};

const std::vector<EmbeddedFile>& LivePageFiles();

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_LIVE_PAGE_H_
