// Loads ../shared/golden (cases.json and the .npy inputs) for the core tests.
#ifndef SAMPLERD_TESTS_CORE_GOLDEN_CASES_H_
#define SAMPLERD_TESTS_CORE_GOLDEN_CASES_H_

#include <cstdint>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "xtensor/xarray.hpp"
#include "xtensor/xnpy.hpp"

namespace samplerd::testing {

inline std::string GoldenDir() { return SAMPLERD_GOLDEN_DIR; }

inline const nlohmann::json& GoldenJson() {
  static const nlohmann::json* const kJson = [] {
    std::ifstream in(GoldenDir() + "/cases.json");
    auto* j = new nlohmann::json(nlohmann::json::parse(in));
    return j;
  }();
  return *kJson;
}

// A float32 array from golden/inputs with its shape.
struct Array {
  std::vector<float> values;
  std::vector<int64_t> shape;

  std::string Bytes() const {
    return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  }
};

inline const Array& LoadInput(const std::string& relative_path) {
  static std::map<std::string, Array>* const kCache = new std::map<std::string, Array>();
  auto it = kCache->find(relative_path);
  if (it != kCache->end()) return it->second;
  xt::xarray<float> a = xt::load_npy<float>(GoldenDir() + "/" + relative_path);
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

inline std::string CaseName(const ::testing::TestParamInfo<nlohmann::json>& info) {
  return info.param["name"].get<std::string>();
}

// |got - expected| <= abs + rel * |expected| (golden/README.md "Tolerances").
inline bool WithinTolerance(double got, double expected, double abs_tol, double rel_tol) {
  return std::abs(got - expected) <= abs_tol + rel_tol * std::abs(expected);
}

}  // namespace samplerd::testing

#endif  // SAMPLERD_TESTS_CORE_GOLDEN_CASES_H_
