// Pins "no heap allocation per step at steady state": a counting global operator new watches RunStep after
// a warm-up step has grown the workspace, for every action (sample, best-of-n, greedy, emit) and dtype.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "core/step_engine.h"
#include "core/tensor_view.h"
#include "gtest/gtest.h"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};
}  // namespace

void* operator new(std::size_t size) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace samplerd {
namespace {

struct Payload {
  std::string logits, attention;
  std::vector<int64_t> logits_shape, attention_shape;
  int dtype = 1;
};

Payload Make(float sigma, int dtype, uint32_t seed) {
  constexpr int kVocab = 32000, kHeads = 8, kKv = 512;
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  Payload p;
  p.dtype = dtype;
  p.logits_shape = {kVocab};
  p.attention_shape = {kHeads, kKv};
  auto encode = [dtype](const std::vector<float>& v) {
    if (dtype == 1) return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
    std::string out(v.size() * 2, '\0');
    for (size_t i = 0; i < v.size(); ++i) {
      const uint16_t b = FloatToBFloat16(v[i]);
      std::memcpy(&out[2 * i], &b, 2);
    }
    return out;
  };
  std::vector<float> z(kVocab), a(kHeads * kKv);
  for (float& x : z) x = normal(gen);
  for (float& x : a) x = normal(gen);
  p.logits = encode(z);
  p.attention = encode(a);
  return p;
}

TEST(StepAllocationTest, SteadyStateStepsAllocateNothing) {
  // sigma 0.05: near-uniform (CLARIFY); 1: ADAPTIVE best-of-n; 30: ARGMAX-ish; bf16 exercises conversion.
  std::vector<Payload> payloads = {Make(1.0f, 1, 1), Make(0.05f, 1, 2), Make(30.0f, 1, 3), Make(2.0f, 3, 4)};
  const auto registry = ProfileRegistry::BuiltIn();
  const std::vector<int32_t> recent = {1, 2, 3, 2564};
  Workspace ws;
  StepOutput out;
  auto run_all = [&](uint64_t step) {
    for (const Payload& p : payloads) {
      for (const char* profile : {"entropix", "entropix-frog", "fixed"}) {
        StepInput in;
        in.sequence_id = "alloc";
        in.step = step;
        in.seed = 5;
        in.logits = RawTensor{p.dtype, p.logits_shape, p.logits};
        in.attention = RawTensor{p.dtype, p.attention_shape, p.attention};
        in.recent_tokens = recent;
        in.profile = profile;
        in.top_logprobs = 5;
        ASSERT_TRUE(RunStep(*registry, TensorLimits{}, in, &ws, &out).ok());
      }
    }
  };
  run_all(0);  // warm-up grows every buffer once
  g_allocations = 0;
  g_counting = true;
  for (uint64_t step = 1; step <= 20; ++step) run_all(step);
  g_counting = false;
  EXPECT_EQ(g_allocations.load(), 0) << "heap allocations in 240 steady-state steps";
}

}  // namespace
}  // namespace samplerd
