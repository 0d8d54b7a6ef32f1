// One decode step through core: validate, metrics, strategy, sampler chain.
//
// This is the single entry point the service calls per step. Inputs are views (the tensors borrow the
// request's bytes); outputs are written into a caller-owned StepOutput and all scratch lives in a Workspace,
// so a worker that reuses both allocates nothing per step at steady state.
//
//   Workspace ws;
//   StepOutput out;
//   absl::Status s = RunStep(*registry, limits, input, &ws, &out);
//   if (!s.ok()) { /* s names the field (ErrorField(s)) */ }
#ifndef SAMPLERD_CORE_STEP_ENGINE_H_
#define SAMPLERD_CORE_STEP_ENGINE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/fork_join.h"
#include "core/metrics.h"
#include "core/profile.h"
#include "core/sampler_chain.h"
#include "core/strategy.h"
#include "core/tensor_view.h"

namespace samplerd {

// One step as received (borrowed views; nothing validated yet).
struct StepInput {
  absl::string_view sequence_id;
  uint64_t step = 0;
  uint64_t seed = 0;  // used as given; the service resolves 0 to a per-sequence seed first
  RawTensor logits;
  std::optional<RawTensor> attention;
  absl::Span<const int32_t> recent_tokens;
  const v1::SamplingParams* overrides = nullptr;  // null = none
  absl::string_view profile;                      // empty = the registry's default
  int32_t top_logprobs = 0;
};

struct StepOutput {
  int32_t token = 0;
  float logprob = 0;  // nats, under the unmodified logits
  v1::Regime regime = v1::REGIME_UNSPECIFIED;
  bool drew = false;  // false when CLARIFY emitted its token without a draw
  SamplingConfig applied;
  MetricValues metrics;
  // (token, logprob), best first: the top_logprobs most likely tokens with a finite logprob (fewer when fewer
  // tokens are finite; masked tokens are never listed).
  std::vector<std::pair<int32_t, float>> top;
  const Profile* profile = nullptr;
};

// All scratch memory of a step; one per worker thread or stream, reused.
struct Workspace {
  std::vector<float> logits_buffer;     // f16/bf16 logits converted to f32
  std::vector<float> attention_buffer;  // f16/bf16 attention converted to f32
  MetricsScratch metrics;
  ChainScratch chain;
  Candidates candidates;
  std::vector<int32_t> top_ids;
};

// The longest Step.sequence_id, in bytes (the contract's cap): a longer one is INVALID_ARGUMENT on its step.
// Keys of this size keep the per-stream seed table (service/seed_table.h) small whatever the client sends.
inline constexpr size_t kMaxSequenceIdBytes = 256;

// TrimWorkspace()
//
// Frees the largest buffers of `ws` until their capacities add up to at most `keep_bytes`, so that an outsized
// step does not pin its scratch in a worker for good; the buffers of ordinary steps stay, and reuse keeps them
// allocation-free.
void TrimWorkspace(Workspace* ws, size_t keep_bytes);

// Runs one step. Errors are INVALID_ARGUMENT / RESOURCE_EXHAUSTED / NOT_FOUND (unknown profile) carrying
// the field (core/field_error.h); `out` is then unspecified. With a `fork_join`, the metric passes are shared
// with one other thread when it has one free (ComputeStepMetrics); the result is the same bits either way.
absl::Status RunStep(const ProfileRegistry& profiles, const TensorLimits& limits, const StepInput& in, Workspace* ws,
                     StepOutput* out, ForkJoin* fork_join = nullptr);

}  // namespace samplerd

#endif  // SAMPLERD_CORE_STEP_ENGINE_H_
