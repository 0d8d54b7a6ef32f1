// The decision tree and the regime formulas (docs/contract.md section 4).
//
// `Decide` is pure: the profile's rules are tested in order on the step's metrics (absent attention metrics
// read as 0); the first rule whose bounds all hold names the regime, else the profile's default regime; the
// regime's formula turns the base parameters (profile values with the step's overrides) into the parameters
// of the draw.
//
//   Decision d = Decide(profile, base, metrics, recent_tokens, vocab);
//   if (d.action == Action::kEmitToken) token = d.emit_token;
#ifndef SAMPLERD_CORE_STRATEGY_H_
#define SAMPLERD_CORE_STRATEGY_H_

#include <cstdint>

#include "absl/types/span.h"
#include "core/metrics.h"
#include "core/profile.h"
#include "core/sampling_config.h"

namespace samplerd {

// What the sampler does with a decision.
enum class Action {
  kGreedy,     // largest (penalised) logit, lowest id on ties; no random number
  kEmitToken,  // CLARIFY: return `emit_token` without a draw
  kSample,     // one draw through the chain
  kBestOfN,    // ADAPTIVE: n draws, highest log-probability under the unmodified logits wins
};

struct Decision {
  v1::Regime regime = v1::REGIME_UNSPECIFIED;
  Action action = Action::kSample;
  SamplingConfig params;  // what the chain uses (temperature 0 and top_k 1 for kGreedy)
  int32_t emit_token = -1;
};

// Index of the regime rule that matches `metrics` (-1: none, the default regime applies).
int MatchRule(const Profile& profile, const MetricValues& metrics);

Decision Decide(const Profile& profile, const SamplingConfig& base, const MetricValues& metrics,
                absl::Span<const int32_t> recent_tokens, int64_t vocab);

}  // namespace samplerd

#endif  // SAMPLERD_CORE_STRATEGY_H_
