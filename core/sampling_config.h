// Sampling parameters as the chain uses them, and their validation.
//
// `SamplingConfig` is a profile's base parameters with a step's overrides applied (unset override fields keep
// the profile's value); the strategy then adapts T / top-k / top-p / min-p from the metrics.
//
//   SamplingConfig base = profile.base();
//   RETURN_IF_ERROR(ValidateSamplingParams(step.params(), "params"));
//   ApplyOverrides(step.params(), &base);
#ifndef SAMPLERD_CORE_SAMPLING_CONFIG_H_
#define SAMPLERD_CORE_SAMPLING_CONFIG_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "samplerd/v1/profile.pb.h"

namespace samplerd {

// Upper bounds of the parameter ranges (docs/contract.md section 6).
inline constexpr int32_t kMaxAdaptiveSamples = 64;
inline constexpr int32_t kMaxTopLogprobs = 20;

struct SamplingConfig {
  float temperature = 1.0f;  // 0 = greedy
  int32_t top_k = 0;         // 0 = off
  float top_p = 1.0f;        // 1 = off
  float min_p = 0.0f;        // 0 = off
  float repetition_penalty = 1.0f;
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  // Borrowed from the profile or the request that set it; null or empty = no bias.
  const google::protobuf::Map<int32_t, float>* logit_bias = nullptr;
  int32_t n_adaptive_samples = 1;
  int32_t clarifying_token = -1;  // < 0: CLARIFY never emits a token

  bool HasPenalties() const {
    return repetition_penalty != 1.0f || frequency_penalty != 0.0f || presence_penalty != 0.0f;
  }
  bool HasLogitBias() const { return logit_bias != nullptr && !logit_bias->empty(); }
};

// Checks every set field of `params` (ranges of v1::SamplingParams' comments); errors name
// "<prefix>.<field>" and the value received. Token ids in logit_bias are checked against the vocab later.
absl::Status ValidateSamplingParams(const v1::SamplingParams& params, absl::string_view prefix);

// Copies every set field of `params` over `config`. A non-empty logit_bias replaces the config's.
void ApplyOverrides(const v1::SamplingParams& params, SamplingConfig* config);

// Writes the draw parameters of `config` into `out` (logit_bias excluded).
void ToProto(const SamplingConfig& config, v1::SamplingParams* out);

}  // namespace samplerd

#endif  // SAMPLERD_CORE_SAMPLING_CONFIG_H_
