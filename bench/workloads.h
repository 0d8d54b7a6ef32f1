// The benchmarks' workloads (issue 3's names) and the rotating inputs issue 21 measures the step over, shared by
// core_benchmark and llama_chain_benchmark so that both time the same tensors.
//   S: vocab 32000, attention 8 x 1024;  L: vocab 128256, attention 32 x 4096;  XL: vocab 256000, 64 x 8192.
//
//   const samplerd::bench::RotatingData& d = samplerd::bench::MakeRotating(1);  // L
//   const float* row = reinterpret_cast<const float*>(d.logits[step % samplerd::bench::kRotatingInputs].data());
#ifndef SAMPLERD_BENCH_WORKLOADS_H_
#define SAMPLERD_BENCH_WORKLOADS_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace samplerd::bench {

struct Workload {
  int64_t vocab, heads, kv_len;
};

inline Workload Get(int index) {
  static const Workload kWorkloads[] = {{32000, 8, 1024}, {128256, 32, 4096}, {256000, 64, 8192}};
  return kWorkloads[index];
}

inline const char* Name(int index) { return index == 0 ? "S" : index == 1 ? "L" : "XL"; }

// kRotatingInputs distinct N(0, 2) inputs per workload, used in turn, so that the tensors come from memory as a
// host's do (one input reused stays in cache where it fits). The same inputs for every configuration and binary.
inline constexpr int kRotatingInputs = 16;

struct RotatingData {
  std::vector<std::string> logits, attention;  // float32 bytes
  std::vector<int64_t> logit_shape, attention_shape;
};

inline const RotatingData& MakeRotating(int index) {
  static RotatingData* cache[3] = {nullptr, nullptr, nullptr};
  if (cache[index] != nullptr) return *cache[index];
  const Workload w = Get(index);
  auto* d = new RotatingData();
  std::mt19937 gen(1000 + index);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const auto bytes = [&](int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = normal(gen);
    return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
  };
  for (int i = 0; i < kRotatingInputs; ++i) {
    d->logits.push_back(bytes(w.vocab));
    d->attention.push_back(bytes(w.heads * w.kv_len));
  }
  d->logit_shape = {w.vocab};
  d->attention_shape = {w.heads, w.kv_len};
  cache[index] = d;
  return *d;
}

}  // namespace samplerd::bench

#endif  // SAMPLERD_BENCH_WORKLOADS_H_
