// Core step and kernel benchmarks per workload (S, L, XL: bench/workloads.h).
// Run: build/bench/core_benchmark --benchmark_filter=Step --benchmark_repetitions=5
// BM_StepRotating is the step over 16 rotating inputs (tensors from memory, as a host sends them), on one
// thread or two; core_benchmark_llama runs it beside llama.cpp's sampler chain (bench/llama_chain_benchmark.cc,
// scripts/bench-llama-chain.sh: issue 21's reference).
// BM_Kernel_* time each kernel of the step over the workload's tensors (BM_Kernel_ScanMax is the plain pass
// over the logits, the memory floor); BM_Floor_SoftmaxEntropy is the issue's softmax + entropy reference
// (max pass, then exp with the two sums, nothing stored), measured in the same run.
// BM_ProfileConfigLoad is a --config of N minimal profiles, parsed, validated and indexed (a SIGHUP reload).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/workloads.h"
#include "benchmark/benchmark.h"
#include "core/metrics.h"
#include "core/profile.h"
#include "core/reduce_kernels.h"
#include "core/sampler_chain.h"
#include "core/step_engine.h"
#include "tests/core/nucleus_adversary.h"

namespace samplerd {
namespace {

using bench::Get;
using bench::kRotatingInputs;
using bench::MakeRotating;
using bench::Name;
using bench::RotatingData;
using bench::Workload;

struct Data {
  std::vector<float> logits, attention;
  std::string logit_bytes, attention_bytes;
  std::string logit_bf16, attention_bf16;
  std::vector<int64_t> logit_shape, attention_shape;
};

const Data& MakeData(int index) {
  static Data* cache[3] = {nullptr, nullptr, nullptr};
  if (cache[index] != nullptr) return *cache[index];
  const Workload w = Get(index);
  auto* d = new Data();
  std::mt19937 gen(42);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  d->logits.resize(static_cast<size_t>(w.vocab));
  for (float& x : d->logits) x = normal(gen);
  d->attention.resize(static_cast<size_t>(w.heads * w.kv_len));
  for (float& x : d->attention) x = normal(gen);
  d->logit_bytes.assign(reinterpret_cast<const char*>(d->logits.data()), d->logits.size() * 4);
  d->attention_bytes.assign(reinterpret_cast<const char*>(d->attention.data()), d->attention.size() * 4);
  auto bf16 = [](const std::vector<float>& v) {
    std::string out(v.size() * 2, '\0');
    for (size_t i = 0; i < v.size(); ++i) {
      const uint16_t b = FloatToBFloat16(v[i]);
      std::memcpy(&out[2 * i], &b, 2);
    }
    return out;
  };
  d->logit_bf16 = bf16(d->logits);
  d->attention_bf16 = bf16(d->attention);
  d->logit_shape = {w.vocab};
  d->attention_shape = {w.heads, w.kv_len};
  cache[index] = d;
  return *d;
}

void BM_Step(benchmark::State& state) {
  const int index = static_cast<int>(state.range(0));
  const Data& d = MakeData(index);
  state.SetLabel(Name(index));
  const auto registry = ProfileRegistry::BuiltIn();
  Workspace ws;
  StepOutput out;
  uint64_t step = 0;
  for (auto _ : state) {
    StepInput in;
    in.sequence_id = "bench";
    in.step = step++;
    in.seed = 7;
    in.logits = RawTensor{1, d.logit_shape, d.logit_bytes};
    in.attention = RawTensor{1, d.attention_shape, d.attention_bytes};
    benchmark::DoNotOptimize(RunStep(*registry, TensorLimits{}, in, &ws, &out));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(d.logit_bytes.size() + d.attention_bytes.size()));
}
BENCHMARK(BM_Step)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond);

// The same step with both tensors sent as bfloat16 (half the bytes on the wire; converted in core).
void BM_StepBf16(benchmark::State& state) {
  const int index = static_cast<int>(state.range(0));
  const Data& d = MakeData(index);
  state.SetLabel(Name(index));
  const auto registry = ProfileRegistry::BuiltIn();
  Workspace ws;
  StepOutput out;
  uint64_t step = 0;
  for (auto _ : state) {
    StepInput in;
    in.sequence_id = "bench";
    in.step = step++;
    in.seed = 7;
    in.logits = RawTensor{3, d.logit_shape, d.logit_bf16};
    in.attention = RawTensor{3, d.attention_shape, d.attention_bf16};
    benchmark::DoNotOptimize(RunStep(*registry, TensorLimits{}, in, &ws, &out));
  }
}
BENCHMARK(BM_StepBf16)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond);

// A second thread that spins for work: the best case of sharing a step (no wake-up), to compare with the
// worker pool's ForkJoin (service_benchmark's BM_Request/<workload>/2) and with BM_Step on one thread.
class SpinningForkJoin final : public ForkJoin {
 public:
  SpinningForkJoin() : thread_([this] { Loop(); }) {}
  ~SpinningForkJoin() override {
    stop_.store(true);
    thread_.join();
  }
  void Run(absl::FunctionRef<void()> mine, absl::FunctionRef<void()> theirs) override {
    task_ = &theirs;
    pending_.store(true, std::memory_order_release);
    mine();
    while (pending_.load(std::memory_order_acquire)) {
    }
  }

 private:
  void Loop() {
    while (!stop_.load(std::memory_order_relaxed)) {
      if (pending_.load(std::memory_order_acquire)) {
        (*task_)();
        pending_.store(false, std::memory_order_release);
      }
    }
  }
  absl::FunctionRef<void()>* task_ = nullptr;
  std::atomic<bool> pending_{false}, stop_{false};
  std::thread thread_;
};

// BM_Step with the metric passes shared with a second, spinning thread (real time: two threads work).
void BM_StepShared(benchmark::State& state) {
  const int index = static_cast<int>(state.range(0));
  const Data& d = MakeData(index);
  state.SetLabel(Name(index));
  const auto registry = ProfileRegistry::BuiltIn();
  Workspace ws;
  StepOutput out;
  SpinningForkJoin fork_join;
  uint64_t step = 0;
  for (auto _ : state) {
    StepInput in;
    in.sequence_id = "bench";
    in.step = step++;
    in.seed = 7;
    in.logits = RawTensor{1, d.logit_shape, d.logit_bytes};
    in.attention = RawTensor{1, d.attention_shape, d.attention_bytes};
    benchmark::DoNotOptimize(RunStep(*registry, TensorLimits{}, in, &ws, &out, &fork_join));
  }
}
BENCHMARK(BM_StepShared)->DenseRange(0, 2)->UseRealTime()->Unit(benchmark::kMicrosecond);

// The step over rotating inputs: arg 1 is 1 (this thread only) or 2 (shared with a spinning second thread;
// real time), arg 2 is 1 with the attention or 0 for the logits alone.
void BM_StepRotating(benchmark::State& state) {
  const int index = static_cast<int>(state.range(0));
  const bool shared = state.range(1) == 2, attention = state.range(2) != 0;
  const RotatingData& d = MakeRotating(index);
  state.SetLabel(absl::StrCat(Name(index), shared ? " 2 threads" : " 1 thread", attention ? "" : " logits only"));
  const auto registry = ProfileRegistry::BuiltIn();
  Workspace ws;
  StepOutput out;
  std::optional<SpinningForkJoin> fork_join;
  if (shared) fork_join.emplace();
  uint64_t step = 0;
  for (auto _ : state) {
    const size_t k = step % kRotatingInputs;
    StepInput in;
    in.sequence_id = "bench";
    in.step = step++;
    in.seed = 7;
    in.logits = RawTensor{1, d.logit_shape, d.logits[k]};
    if (attention) in.attention = RawTensor{1, d.attention_shape, d.attention[k]};
    benchmark::DoNotOptimize(RunStep(*registry, TensorLimits{}, in, &ws, &out, shared ? &*fork_join : nullptr));
  }
}
BENCHMARK(BM_StepRotating)
    ->ArgsProduct({{0, 1, 2}, {1}, {0, 1}})
    ->Args({2, 2, 1})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// The logits' kernels over the rotating inputs (from memory, as in a host's step), arg 1: 0 the two passes
// (ScanMax, then ExpMoments against its max, the clamp decided on its min), 1 LogitsPass (one read), 2 ScanMax
// alone (the memory floor), 3 ExpMoments alone against a shift known beforehand (the floor of one read with the
// exponentials). Ratios between them in one run are what the kernels gain where the step spends it.
void BM_RotatingLogits(benchmark::State& state) {
  const int index = static_cast<int>(state.range(0));
  const int64_t kind = state.range(1);
  const RotatingData& d = MakeRotating(index);
  const int64_t vocab = Get(index).vocab;
  state.SetLabel(absl::StrCat(Name(index), kind == 0   ? " two passes"
                                           : kind == 1 ? " one pass"
                                           : kind == 2 ? " ScanMax alone"
                                                       : " moments, shift given"));
  std::vector<float> block_max(static_cast<size_t>(kernels::MaxBlocks(vocab)));
  std::vector<float> blocks(static_cast<size_t>(kernels::LogitsPassBlockFloats(vocab)));
  size_t k = 0;
  for (auto _ : state) {
    const float* x = reinterpret_cast<const float*>(d.logits[k++ % kRotatingInputs].data());
    if (kind == 1) {
      benchmark::DoNotOptimize(kernels::LogitsPass(x, vocab, block_max.data(), blocks.data()));
      continue;
    }
    if (kind == 3) {
      double sum = 0, mean = 0, m2 = 0;
      kernels::ExpMoments(x, vocab, 12.0f, blocks.data(), &sum, &mean, &m2, true);
      benchmark::DoNotOptimize(m2);
      continue;
    }
    const kernels::ScanResult scan = kernels::ScanMax(x, vocab, block_max.data());
    if (kind == 2) {
      benchmark::DoNotOptimize(scan);
      continue;
    }
    double sum = 0, mean = 0, m2 = 0;
    kernels::ExpMoments(x, vocab, scan.max, blocks.data(), &sum, &mean, &m2,
                        !(scan.min - scan.max >= kernels::kMinShifted));
    benchmark::DoNotOptimize(m2);
  }
}
BENCHMARK(BM_RotatingLogits)->ArgsProduct({{0, 1, 2}, {0, 1, 2, 3}})->Unit(benchmark::kMicrosecond);

// The least a step must do with rotating inputs, on one thread: every tensor read once, one exponential per
// entry (the logits' one pass; each attention row's exponentials with the next row's scan inside, nothing
// stored) and nothing else: no agreement, no top-k, no draw. BM_StepRotating/<w>/1/1 against it in one run is
// what the rest of the step costs.
void BM_RotatingFloor(benchmark::State& state) {
  const int index = static_cast<int>(state.range(0));
  const RotatingData& d = MakeRotating(index);
  const Workload w = Get(index);
  state.SetLabel(absl::StrCat(Name(index), " one read, one exponential per entry"));
  std::vector<float> block_max(static_cast<size_t>(kernels::MaxBlocks(w.vocab)));
  std::vector<float> blocks(static_cast<size_t>(kernels::LogitsPassBlockFloats(w.vocab)));
  size_t k = 0;
  for (auto _ : state) {
    const size_t input = k++ % kRotatingInputs;
    benchmark::DoNotOptimize(kernels::LogitsPass(reinterpret_cast<const float*>(d.logits[input].data()), w.vocab,
                                                 block_max.data(), blocks.data()));
    const float* attention = reinterpret_cast<const float*>(d.attention[input].data());
    kernels::RowScan scan = kernels::ScanRow(attention, w.kv_len);
    for (int64_t r = 0; r < w.heads; ++r) {
      const float* row = attention + r * w.kv_len;
      const float* next = r + 1 < w.heads ? row + w.kv_len : nullptr;
      double sum = 0, sum_d = 0;
      kernels::RowScan next_scan;
      kernels::ExpShifted(row, w.kv_len, scan.max, nullptr, &sum, &sum_d, nullptr, 0, true, next, &next_scan);
      scan = next_scan;
      benchmark::DoNotOptimize(sum_d);
    }
  }
}
BENCHMARK(BM_RotatingFloor)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond);

void BM_LogitsMetrics(benchmark::State& state) {
  const int index = static_cast<int>(state.range(0));
  const Data& d = MakeData(index);
  state.SetLabel(Name(index));
  MetricsScratch scratch;
  FloatView v{d.logits.data(), 1, static_cast<int64_t>(d.logits.size())};
  for (auto _ : state) benchmark::DoNotOptimize(SummarizeLogits(v, &scratch));
}
BENCHMARK(BM_LogitsMetrics)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond);

void BM_AttentionMetrics(benchmark::State& state) {
  const int index = static_cast<int>(state.range(0));
  const Data& d = MakeData(index);
  const Workload w = Get(index);
  state.SetLabel(Name(index));
  MetricsScratch scratch;
  FloatView v{d.attention.data(), w.heads, w.kv_len};
  for (auto _ : state) benchmark::DoNotOptimize(ComputeAttentionMetrics(v, &scratch));
}
BENCHMARK(BM_AttentionMetrics)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond);

// Vocabularies that are not a multiple of the kernels' 256-entry blocks (GPT-2's 50257, Qwen's 151936 = 593.5
// blocks): the last partial block of the logits, beside a multiple of 256 of about the same size.
void BM_LogitsVocab(benchmark::State& state) {
  const int64_t vocab = state.range(0);
  std::mt19937 gen(3);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(static_cast<size_t>(vocab));
  for (float& v : logits) v = normal(gen);
  MetricsScratch scratch;
  const FloatView v{logits.data(), 1, vocab};
  for (auto _ : state) benchmark::DoNotOptimize(SummarizeLogits(v, &scratch));
}
BENCHMARK(BM_LogitsVocab)->Arg(50176)->Arg(50257)->Arg(151808)->Arg(151936)->Unit(benchmark::kMicrosecond);

// Short rows, as early in a generation: 32 heads x kv_len. Below kExactAgreementCols (256) the agreement is taken
// in double (a double exp per entry); 255 vs 256 is the price of that path, 64 and 1024 the scale around it.
void BM_AttentionShortRows(benchmark::State& state) {
  const int64_t heads = 32, cols = state.range(0);
  std::mt19937 gen(7);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> scores(static_cast<size_t>(heads * cols));
  for (float& v : scores) v = normal(gen);
  state.SetLabel(cols < kExactAgreementCols ? "double agreement" : "float32 agreement");
  MetricsScratch scratch;
  FloatView v{scores.data(), heads, cols};
  for (auto _ : state) benchmark::DoNotOptimize(ComputeAttentionMetrics(v, &scratch));
  state.SetItemsProcessed(state.iterations() * heads * cols);
}
BENCHMARK(BM_AttentionShortRows)
    ->Arg(64)
    ->Arg(248)
    ->Arg(255)
    ->Arg(256)
    ->Arg(1024)
    ->Arg(4095)
    ->Arg(4096)
    ->Unit(benchmark::kMicrosecond);

void BM_ChainTopK(benchmark::State& state) {
  const int index = static_cast<int>(state.range(0));
  const Data& d = MakeData(index);
  state.SetLabel(Name(index));
  SamplingConfig c;
  c.temperature = 0.8f;
  c.top_k = 40;
  c.top_p = 0.95f;
  c.min_p = 0.05f;
  ChainScratch scratch;
  Candidates cands;
  // Arg 1: with the block maxima the metrics pass leaves (as in the step), or without.
  const int64_t vocab = static_cast<int64_t>(d.logits.size());
  std::vector<float> block_max(static_cast<size_t>(kernels::MaxBlocks(vocab)));
  kernels::ScanMax(d.logits.data(), vocab, block_max.data());
  const float* maxima = state.range(1) != 0 ? block_max.data() : nullptr;
  for (auto _ : state) {
    benchmark::DoNotOptimize(BuildCandidates(d.logits.data(), vocab, c, &scratch, &cands, maxima));
    benchmark::DoNotOptimize(cands.total);
  }
}
BENCHMARK(BM_ChainTopK)->ArgsProduct({{0, 1, 2}, {0, 1}})->Unit(benchmark::kMicrosecond);

// The nucleus without top-k (top_p 0.99999994, near-uniform weights) over 128,256 tokens: arg 0 in McIlroy's
// adversarial order for the partition rounds (tests/core/nucleus_adversary.h), arg 1 the same weights shuffled.
void BM_NucleusOrder(benchmark::State& state) {
  constexpr int64_t kVocab = 128256;
  static const std::vector<int64_t>* const ranks = new std::vector<int64_t>(AdversarialRanks(kVocab));
  std::vector<int64_t> rank = *ranks;
  if (state.range(0) == 1) std::shuffle(rank.begin(), rank.end(), std::mt19937(7));
  const std::vector<WeightedToken> input = TokensByRank(rank);
  double total = 0;
  for (const WeightedToken& t : input) total += t.weight;
  state.SetLabel(state.range(0) == 0 ? "adversarial" : "shuffled");
  std::vector<WeightedToken> tokens;
  for (auto _ : state) {
    tokens = input;
    benchmark::DoNotOptimize(SelectNucleus(absl::MakeSpan(tokens), 0.99999994 * total).length);
  }
}
BENCHMARK(BM_NucleusOrder)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

// Top-k (k = 1,024, the largest on the heap) over 128,256 logits with their block maxima, as in a step: arg 0 in
// ascending order, where every entry beats the heap's worst, arg 1 the same values shuffled.
void BM_TopTokensOrder(benchmark::State& state) {
  constexpr int64_t kVocab = 128256;
  std::vector<float> z(static_cast<size_t>(kVocab));
  for (int64_t i = 0; i < kVocab; ++i) z[static_cast<size_t>(i)] = static_cast<float>(i) * 1e-4f;
  if (state.range(0) == 1) std::shuffle(z.begin(), z.end(), std::mt19937(7));
  std::vector<float> block_max(static_cast<size_t>(kernels::MaxBlocks(kVocab)));
  kernels::ScanMax(z.data(), kVocab, block_max.data());
  state.SetLabel(state.range(0) == 0 ? "ascending" : "shuffled");
  ChainScratch scratch;
  std::vector<int32_t> ids;
  for (auto _ : state) {
    TopTokens(z.data(), kVocab, 1024, &scratch, &ids, block_max.data());
    benchmark::DoNotOptimize(ids.data());
  }
}
BENCHMARK(BM_TopTokensOrder)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

// Penalties over 128,256 logits with `arg` recent tokens (ids below 100, one byte each on the wire).
void BM_PenaltyCount(benchmark::State& state) {
  constexpr int64_t kVocab = 128256;
  const std::vector<float> z(static_cast<size_t>(kVocab), 0.5f);
  std::vector<int32_t> recent(static_cast<size_t>(state.range(0)));
  std::mt19937 gen(5);
  for (int32_t& t : recent) t = static_cast<int32_t>(gen() % 100);
  SamplingConfig c;
  c.frequency_penalty = 0.1f;
  ChainScratch scratch;
  for (auto _ : state) benchmark::DoNotOptimize(ApplyLogitAdjustments(z.data(), kVocab, c, recent, &scratch));
}
BENCHMARK(BM_PenaltyCount)->Arg(1024)->Arg(4 << 20)->Unit(benchmark::kMicrosecond);

// Per kernel (reduce_kernels.h), over the workload's logits or attention rows.
template <typename Fn>
void RunKernel(benchmark::State& state, Fn fn) {
  const int index = static_cast<int>(state.range(0));
  state.SetLabel(Name(index));
  for (auto _ : state) fn(MakeData(index), Get(index));
}

void BM_Kernel_ScanMax(benchmark::State& state) {
  RunKernel(state, [](const Data& d, const Workload& w) {
    benchmark::DoNotOptimize(kernels::ScanMax(d.logits.data(), w.vocab, nullptr));
  });
}
void BM_Kernel_ScanMaxBf16(benchmark::State& state) {
  std::vector<float> out(static_cast<size_t>(Get(static_cast<int>(state.range(0))).vocab));
  RunKernel(state, [&out](const Data& d, const Workload& w) {
    benchmark::DoNotOptimize(kernels::ScanMaxBf16(d.logit_bf16.data(), w.vocab, out.data(), nullptr));
  });
}
void BM_Kernel_ExpMoments(benchmark::State& state) {
  const Data& data = MakeData(static_cast<int>(state.range(0)));
  const float max = kernels::ScanMax(data.logits.data(), static_cast<int64_t>(data.logits.size()), nullptr).max;
  std::vector<float> blocks(static_cast<size_t>(3 * kernels::MomentBlocks(static_cast<int64_t>(data.logits.size()))));
  RunKernel(state, [&](const Data& d, const Workload& w) {
    double sum = 0, mean = 0, m2 = 0;
    kernels::ExpMoments(d.logits.data(), w.vocab, max, blocks.data(), &sum, &mean, &m2, true);
    benchmark::DoNotOptimize(m2);
  });
}
// The logits in one read (max, block maxima and the moments): against BM_Kernel_ScanMax + BM_Kernel_ExpMoments.
void BM_Kernel_LogitsPass(benchmark::State& state) {
  const Data& data = MakeData(static_cast<int>(state.range(0)));
  const int64_t vocab = static_cast<int64_t>(data.logits.size());
  std::vector<float> blocks(static_cast<size_t>(kernels::LogitsPassBlockFloats(vocab)));
  std::vector<float> block_max(static_cast<size_t>(kernels::MaxBlocks(vocab)));
  RunKernel(state, [&](const Data& d, const Workload& w) {
    benchmark::DoNotOptimize(kernels::LogitsPass(d.logits.data(), w.vocab, block_max.data(), blocks.data()));
  });
}
void BM_Kernel_ScanRow(benchmark::State& state) {
  RunKernel(state, [](const Data& d, const Workload& w) {
    for (int64_t r = 0; r < w.heads; ++r)
      benchmark::DoNotOptimize(kernels::ScanRow(d.attention.data() + r * w.kv_len, w.kv_len));
  });
}
void BM_Kernel_ExpShifted(benchmark::State& state) {
  const Workload wl = Get(static_cast<int>(state.range(0)));
  std::vector<float> e(static_cast<size_t>(wl.heads * wl.kv_len));
  RunKernel(state, [&e](const Data& d, const Workload& w) {
    for (int64_t r = 0; r < w.heads; ++r) {
      double sum = 0, sum_d = 0;
      kernels::ExpShifted(d.attention.data() + r * w.kv_len, w.kv_len, 8.0f, e.data() + r * w.kv_len, &sum, &sum_d,
                          nullptr, 0, true, nullptr, nullptr);
      benchmark::DoNotOptimize(sum);
    }
  });
}
// Every attention row's scan and exponentials, the scan of row r + 1 taken separately (arg 1 = 0) or inside row
// r's ExpShifted (arg 1 = 1), as AttentionRows does.
void BM_Kernel_ScanAndExp(benchmark::State& state) {
  const Workload wl = Get(static_cast<int>(state.range(0)));
  const bool inside = state.range(1) != 0;
  std::vector<float> e(static_cast<size_t>(wl.heads * wl.kv_len));
  RunKernel(state, [&](const Data& d, const Workload& w) {
    kernels::RowScan scan = kernels::ScanRow(d.attention.data(), w.kv_len);
    for (int64_t r = 0; r < w.heads; ++r) {
      const float* row = d.attention.data() + r * w.kv_len;
      const float* next = r + 1 < w.heads ? row + w.kv_len : nullptr;
      double sum = 0, sum_d = 0;
      kernels::RowScan next_scan;
      kernels::ExpShifted(row, w.kv_len, scan.max, e.data() + r * w.kv_len, &sum, &sum_d, nullptr, 0, true,
                          inside ? next : nullptr, &next_scan);
      if (!inside && next != nullptr) next_scan = kernels::ScanRow(next, w.kv_len);
      scan = next_scan;
      benchmark::DoNotOptimize(sum);
    }
  });
}
// The agreement's kernels over the workload's attention: the column sums of every 8-row group, their means,
// and every row's deviations from them.
void BM_Kernel_Agreement(benchmark::State& state) {
  const Workload wl = Get(static_cast<int>(state.range(0)));
  const int64_t groups = (wl.heads + kernels::kAgreementGroup - 1) / kernels::kAgreementGroup;
  std::vector<float> inv(static_cast<size_t>(wl.heads), 1.0f / static_cast<float>(wl.kv_len));
  std::vector<float> sums(static_cast<size_t>(groups * wl.kv_len)), means(static_cast<size_t>(wl.kv_len));
  RunKernel(state, [&](const Data& d, const Workload& w) {
    for (int64_t g = 0; g < groups; ++g) {
      const float* rows[kernels::kAgreementGroup];
      int64_t n = 0;
      for (int64_t r = g * kernels::kAgreementGroup; r < std::min(w.heads, (g + 1) * kernels::kAgreementGroup); ++r) {
        rows[n++] = d.attention.data() + r * w.kv_len;
      }
      kernels::GroupColumnSums(rows, inv.data(), n, w.kv_len, sums.data() + g * w.kv_len);
    }
    kernels::GroupMeans(sums.data(), groups, w.kv_len, w.kv_len, 1.0f / static_cast<float>(w.heads), means.data());
    double total = 0;
    for (int64_t r = 0; r < w.heads; ++r) {
      total +=
          kernels::RowDeviation(d.attention.data() + r * w.kv_len, inv[static_cast<size_t>(r)], means.data(), w.kv_len);
    }
    benchmark::DoNotOptimize(total);
  });
}
// The agreement's second read alone: every row's deviations from column means already made (its least cost:
// the probabilities cannot be compared with the means before every row has added to them).
void BM_Kernel_RowDeviations(benchmark::State& state) {
  const Workload wl = Get(static_cast<int>(state.range(0)));
  const std::vector<float> means(static_cast<size_t>(wl.kv_len), 1.0f / static_cast<float>(wl.kv_len));
  RunKernel(state, [&](const Data& d, const Workload& w) {
    double total = 0;
    for (int64_t r = 0; r < w.heads; ++r) {
      total += kernels::RowDeviation(d.attention.data() + r * w.kv_len, 1.0f / static_cast<float>(w.kv_len),
                                     means.data(), w.kv_len);
    }
    benchmark::DoNotOptimize(total);
  });
}
void BM_Kernel_ConvertBf16(benchmark::State& state) {
  std::vector<float> out(static_cast<size_t>(Get(static_cast<int>(state.range(0))).vocab));
  RunKernel(state, [&out](const Data& d, const Workload& w) {
    kernels::ConvertBf16(d.logit_bf16.data(), w.vocab, out.data());
    benchmark::DoNotOptimize(out.data());
  });
}
BENCHMARK(BM_Kernel_ScanMax)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Kernel_ScanMaxBf16)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Kernel_ExpMoments)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Kernel_LogitsPass)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Kernel_ScanRow)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Kernel_ExpShifted)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Kernel_ScanAndExp)->ArgsProduct({{0, 1, 2}, {0, 1}})->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Kernel_Agreement)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Kernel_RowDeviations)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Kernel_ConvertBf16)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond);

// The issue's reference point "softmax + entropy hand-written with xsimd", in the same run: ScanMax, then
// ExpShifted with nothing stored. (Its other point, a plain pass over the floats, is BM_Kernel_ScanMax: one
// SIMD max over the logits.)
void BM_Floor_SoftmaxEntropy(benchmark::State& state) {
  RunKernel(state, [](const Data& d, const Workload& w) {
    const float max = kernels::ScanMax(d.logits.data(), w.vocab, nullptr).max;
    double sum = 0, sum_d = 0;
    kernels::ExpShifted(d.logits.data(), w.vocab, max, nullptr, &sum, &sum_d, nullptr, 0, true, nullptr, nullptr);
    benchmark::DoNotOptimize(std::log(sum) - sum_d / sum);
  });
}
BENCHMARK(BM_Floor_SoftmaxEntropy)->DenseRange(0, 2)->Unit(benchmark::kMicrosecond);

void BM_ProfileConfigLoad(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::string json = R"({"profiles": [)";
  for (int64_t i = 0; i < n; ++i) absl::StrAppend(&json, i == 0 ? "" : ", ", R"({"name": "p)", i, R"("})");
  json += "]}";
  for (auto _ : state) {
    auto registry = ProfileRegistry::FromJson(json);
    if (!registry.ok()) state.SkipWithError("the config did not load");
    benchmark::DoNotOptimize(registry);
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_ProfileConfigLoad)->Arg(1000)->Arg(40000)->Arg(200000)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace samplerd
