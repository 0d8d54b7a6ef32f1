// Loads the golden vectors (tests/golden: cases.json and the .npy inputs) for the core tests.
//
// Nothing is read before a test body runs: the cases are not test parameters, so neither static initialisation
// nor test discovery touches the data, and a missing or broken directory fails the tests that read it (with a
// message naming the path) instead of the build. A test loops over the cases and traces each one's name:
//
//   TEST(MetricsGoldenTest, Something) {
//     for (const nlohmann::json& c : testing::GoldenCases()) {
//       SCOPED_TRACE(testing::CaseName(c));
//       const testing::Array& logits = testing::LoadInput(c["logits"]);
//       ...
//     }
//   }
#ifndef SAMPLERD_TESTS_CORE_GOLDEN_CASES_H_
#define SAMPLERD_TESTS_CORE_GOLDEN_CASES_H_

#include <cmath>
#include <cstdint>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/golden_dir.h"
#include "xtensor/xarray.hpp"
#include "xtensor/xnpy.hpp"

namespace samplerd::testing {

// cases.json, parsed once per process. Throws std::runtime_error naming the file when it cannot be read, is not
// JSON or lacks `cases`, `conventions` or `profiles`; gtest reports that as the failure of the test that asked.
inline const nlohmann::json& GoldenJson() {
  static const nlohmann::json* const kJson = [] {
    const std::string path = GoldenDir() + "/cases.json";
    std::ifstream in(path);
    if (!in) {
      throw std::runtime_error("golden vectors: cannot read " + path +
                               " (SAMPLERD_GOLDEN_DIR: the CMake setting, or the environment for one run)");
    }
    nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) throw std::runtime_error("golden vectors: " + path + " is not valid JSON");
    for (const char* key : {"cases", "conventions", "profiles"}) {
      if (!j.contains(key)) throw std::runtime_error("golden vectors: " + path + " has no \"" + key + "\"");
    }
    if (!j["cases"].is_array() || j["cases"].empty()) {
      throw std::runtime_error("golden vectors: " + path + " has no cases");
    }
    return new nlohmann::json(std::move(j));
  }();
  return *kJson;
}

// A float32 array from the golden inputs with its shape.
struct Array {
  std::vector<float> values;
  std::vector<int64_t> shape;

  std::string Bytes() const {
    return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  }
};

// `relative_path` (as cases.json names it, e.g. "inputs/L32_n1.npy"), read once per process. Throws
// std::runtime_error naming the file when it cannot be read as a float32 .npy.
inline const Array& LoadInput(const std::string& relative_path) {
  static std::map<std::string, Array>* const kCache = new std::map<std::string, Array>();
  auto it = kCache->find(relative_path);
  if (it != kCache->end()) return it->second;
  const std::string path = GoldenDir() + "/" + relative_path;
  if (!std::ifstream(path)) throw std::runtime_error("golden vectors: cannot read " + path);
  xt::xarray<float> a;
  try {
    a = xt::load_npy<float>(path);
  } catch (const std::exception& e) {
    throw std::runtime_error("golden vectors: " + path + " is not a float32 .npy: " + e.what());
  }
  Array out;
  out.values.assign(a.begin(), a.end());
  for (size_t d : a.shape()) out.shape.push_back(static_cast<int64_t>(d));
  return kCache->emplace(relative_path, std::move(out)).first->second;
}

inline std::vector<nlohmann::json> GoldenCases() {
  std::vector<nlohmann::json> cases;
  for (const auto& c : GoldenJson()["cases"]) cases.push_back(c);
  return cases;
}

// The cases that expect an error (rejected = true) or a result.
inline std::vector<nlohmann::json> GoldenCases(bool rejected) {
  std::vector<nlohmann::json> cases;
  for (const auto& c : GoldenJson()["cases"]) {
    if (c["expect_error"].is_null() != rejected) cases.push_back(c);
  }
  return cases;
}

inline std::string CaseName(const nlohmann::json& c) { return "golden case " + c["name"].get<std::string>(); }

// |got - expected| <= abs + rel * |expected| (tests/golden/README.md "Tolerances").
inline bool WithinTolerance(double got, double expected, double abs_tol, double rel_tol) {
  return std::abs(got - expected) <= abs_tol + rel_tol * std::abs(expected);
}

}  // namespace samplerd::testing

#endif  // SAMPLERD_TESTS_CORE_GOLDEN_CASES_H_
