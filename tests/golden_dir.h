// The directory of the golden vectors (tests/golden) for a test run.
//
// The build names it once, in the CMake cache variable SAMPLERD_GOLDEN_DIR, compiled into the tests as the macro
// of that name. The environment variable SAMPLERD_GOLDEN_DIR, when set and non-empty, overrides it for one run:
// the scripts hand the configured directory to the client suites the same way, and a test uses it to point a
// golden test at a missing or broken directory.
//
//   std::ifstream in(samplerd::testing::GoldenDir() + "/cases.json");
#ifndef SAMPLERD_TESTS_GOLDEN_DIR_H_
#define SAMPLERD_TESTS_GOLDEN_DIR_H_

#include <cstdlib>
#include <string>

namespace samplerd::testing {

inline std::string GoldenDir() {
  const char* dir = std::getenv("SAMPLERD_GOLDEN_DIR");
  return dir != nullptr && *dir != '\0' ? std::string(dir) : std::string(SAMPLERD_GOLDEN_DIR);
}

}  // namespace samplerd::testing

#endif  // SAMPLERD_TESTS_GOLDEN_DIR_H_
