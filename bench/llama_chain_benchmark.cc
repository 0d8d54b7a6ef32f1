// llama.cpp's sampler chain over core_benchmark's rotating inputs, the reference issue 21 states its targets
// against: top-k 40 -> top-p 0.95 -> min-p 0.05 -> temp 0.8 -> dist, each step's candidates filled from the
// logits row as llama.cpp's common_sampler does. Linked into core_benchmark_llama beside core_benchmark's own
// benchmarks, so that BM_StepRotating and BM_LlamaChainRotating run in one process over the same tensors.
// llama.cpp is not a dependency of samplerd: scripts/bench-llama-chain.sh fetches and builds it for this binary.
//
//   build/bench/core_benchmark_llama --benchmark_filter='BM_StepRotating/[012]/1/1/|BM_LlamaChainRotating'
#include <cstdint>
#include <vector>

#include "bench/workloads.h"
#include "benchmark/benchmark.h"
#include "llama.h"

namespace samplerd::bench {
namespace {

void BM_LlamaChainRotating(benchmark::State& state) {
  const int index = static_cast<int>(state.range(0));
  const RotatingData& d = MakeRotating(index);
  const int64_t vocab = d.logit_shape[0];
  state.SetLabel(Name(index));
  llama_sampler* chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
  llama_sampler_chain_add(chain, llama_sampler_init_top_k(40));
  llama_sampler_chain_add(chain, llama_sampler_init_top_p(0.95f, 1));
  llama_sampler_chain_add(chain, llama_sampler_init_min_p(0.05f, 1));
  llama_sampler_chain_add(chain, llama_sampler_init_temp(0.8f));
  llama_sampler_chain_add(chain, llama_sampler_init_dist(7));
  std::vector<llama_token_data> cur(static_cast<size_t>(vocab));
  uint64_t step = 0;
  for (auto _ : state) {
    const auto* logits = reinterpret_cast<const float*>(d.logits[step++ % kRotatingInputs].data());
    for (int32_t id = 0; id < vocab; ++id) cur[static_cast<size_t>(id)] = llama_token_data{id, logits[id], 0.0f};
    llama_token_data_array array{cur.data(), cur.size(), -1, false};
    llama_sampler_apply(chain, &array);
    benchmark::DoNotOptimize(array.data[array.selected].id);
  }
  llama_sampler_free(chain);
}
BENCHMARK(BM_LlamaChainRotating)->DenseRange(0, 2)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace samplerd::bench
