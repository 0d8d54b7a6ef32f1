#include "tests/fuzz/golden_seeds.h"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/tensor_view.h"
#include "nlohmann/json.hpp"
#include "samplerd/v1/sampler.pb.h"
#include "tests/fuzz/fuzz_targets.h"
#include "xtensor/xarray.hpp"
#include "xtensor/xnpy.hpp"

namespace samplerd::fuzz {
namespace {

constexpr int64_t kLogitsWindow = 2048;
constexpr int64_t kAttentionRows = 8;
constexpr int64_t kAttentionEdge = 128;  // positions kept from each end of a row
constexpr int kBatchSteps = 4;           // steps of the batch seed (the first cases')

struct Array {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// The window of at most kLogitsWindow logits around the argmax.
Array CutLogits(const xt::xarray<float>& full) {
  const int64_t n = static_cast<int64_t>(full.size());
  const int64_t argmax = static_cast<int64_t>(std::max_element(full.begin(), full.end()) - full.begin());
  const int64_t len = std::min(n, kLogitsWindow);
  const int64_t start = std::clamp<int64_t>(argmax - len / 2, 0, n - len);
  Array a;
  a.shape = {len};
  a.values.assign(full.data() + start, full.data() + start + len);
  return a;
}

// At most kAttentionRows rows (as [rows, cols], or [layers, heads, cols] with the layer count cut to fit), with
// the first and last kAttentionEdge positions of each.
Array CutAttention(const xt::xarray<float>& full) {
  const auto& s = full.shape();
  const int64_t cols = static_cast<int64_t>(s.back());
  const int64_t rows = static_cast<int64_t>(full.size()) / cols;
  const int64_t keep_cols = std::min(cols, 2 * kAttentionEdge);
  Array a;
  int64_t keep_rows = std::min(rows, kAttentionRows);
  if (s.size() == 3) {
    const int64_t heads = std::min<int64_t>(static_cast<int64_t>(s[1]), kAttentionRows / 2);
    const int64_t layers = std::min<int64_t>(static_cast<int64_t>(s[0]), 2);
    a.shape = {layers, heads, keep_cols};
    for (int64_t l = 0; l < layers; ++l) {
      for (int64_t h = 0; h < heads; ++h) {
        const float* row = full.data() + (l * static_cast<int64_t>(s[1]) + h) * cols;
        for (int64_t k = 0; k < keep_cols; ++k) {
          a.values.push_back(row[k < keep_cols / 2 || keep_cols == cols ? k : cols - (keep_cols - k)]);
        }
      }
    }
    return a;
  }
  a.shape = {keep_rows, keep_cols};
  for (int64_t r = 0; r < keep_rows; ++r) {
    const float* row = full.data() + r * cols;
    for (int64_t k = 0; k < keep_cols; ++k) {
      a.values.push_back(row[k < keep_cols / 2 || keep_cols == cols ? k : cols - (keep_cols - k)]);
    }
  }
  return a;
}

void Fill(const Array& a, v1::DType dtype, v1::Tensor* t) {
  t->set_dtype(dtype);
  for (int64_t d : a.shape) t->add_shape(d);
  std::string* data = t->mutable_data();
  if (dtype == v1::DTYPE_F32) {
    data->assign(reinterpret_cast<const char*>(a.values.data()), a.values.size() * sizeof(float));
    return;
  }
  data->resize(a.values.size() * 2);
  for (size_t i = 0; i < a.values.size(); ++i) {
    const uint16_t h = dtype == v1::DTYPE_BF16 ? FloatToBFloat16(a.values[i]) : FloatToHalf(a.values[i]);
    (*data)[2 * i] = static_cast<char>(h & 0xff);
    (*data)[2 * i + 1] = static_cast<char>(h >> 8);
  }
}

}  // namespace

absl::StatusOr<std::vector<Seed>> GoldenSeeds(const std::string& golden_dir, SeedKind kind) {
  std::ifstream in(golden_dir + "/cases.json");
  if (!in) return absl::NotFoundError(absl::StrCat(golden_dir, "/cases.json cannot be read"));
  nlohmann::json cases;
  try {
    cases = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(golden_dir, "/cases.json: ", e.what()));
  }

  std::vector<Seed> seeds;
  v1::SampleRequest batch;
  for (const nlohmann::json& c : cases.at("cases")) {
    const std::string name = c.at("name");
    Array logits, attention;
    bool has_attention = false;
    try {
      logits = CutLogits(xt::load_npy<float>(golden_dir + "/" + c.at("logits").get<std::string>()));
      if (!c.at("attention").is_null()) {
        attention = CutAttention(xt::load_npy<float>(golden_dir + "/" + c.at("attention").get<std::string>()));
        has_attention = true;
      }
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": ", e.what()));
    }

    if (kind == SeedKind::kKernels) {
      seeds.push_back({absl::StrCat(name, "-logits"), EncodeKernelRecipe(false, 1, logits.values)});
      if (has_attention) {
        const int64_t rows = static_cast<int64_t>(attention.values.size()) / attention.shape.back();
        seeds.push_back({absl::StrCat(name, "-attention"), EncodeKernelRecipe(true, rows, attention.values)});
      }
      continue;
    }

    std::vector<int32_t> recent;
    for (int64_t t : c.at("recent_tokens")) {
      if (t >= 0 && t < logits.shape[0]) recent.push_back(static_cast<int32_t>(t));
    }
    const struct {
      const char* suffix;
      v1::DType dtype;
      const char* profile;
      bool params;
    } variants[] = {{"f32", v1::DTYPE_F32, "", false},
                    {"f32-frog", v1::DTYPE_F32, "entropix-frog", false},
                    {"f32-fixed", v1::DTYPE_F32, "fixed", true},
                    {"bf16", v1::DTYPE_BF16, "", false},
                    {"f16-frog", v1::DTYPE_F16, "entropix-frog", true}};
    for (const auto& v : variants) {
      v1::SampleRequest request;
      v1::Step* step = request.add_steps();
      step->set_sequence_id(name);
      step->set_step(3);
      step->set_seed(c.value("seed", 1));
      step->set_profile(v.profile);
      Fill(logits, v.dtype, step->mutable_logits());
      if (has_attention) Fill(attention, v.dtype, step->mutable_attention());
      for (int32_t t : recent) step->add_recent_tokens(t);
      if (v.params) {
        step->set_top_logprobs(5);
        v1::SamplingParams* p = step->mutable_params();
        p->set_temperature(0.7f);
        p->set_top_k(40);
        p->set_top_p(0.9f);
        p->set_min_p(0.05f);
        p->set_repetition_penalty(1.1f);
        p->set_frequency_penalty(0.2f);
        (*p->mutable_logit_bias())[1] = 2.0f;
      }
      if (v.dtype == v1::DTYPE_F32 && v.profile[0] == '\0' && batch.steps_size() < kBatchSteps) {
        *batch.add_steps() = *step;
      }
      seeds.push_back({absl::StrCat(name, "-", v.suffix), request.SerializeAsString()});
    }
  }
  if (kind == SeedKind::kRequest) seeds.push_back({"batch-of-the-first-cases", batch.SerializeAsString()});
  return seeds;
}

}  // namespace samplerd::fuzz
