#include "core/strategy.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace samplerd {
namespace {

bool Holds(const Bound& b, double value) { return b.op == v1::OP_LT ? value < b.value : value > b.value; }

// A formula's top_k as an int32: NaN (an overflowed formula) gives `fallback`, and the cast never sees a value
// an int32 cannot hold.
int32_t ToTopK(double k, int32_t fallback) {
  if (std::isnan(k)) return fallback;
  return static_cast<int32_t>(std::clamp(k, 0.0, static_cast<double>(std::numeric_limits<int32_t>::max())));
}

// std::min / std::max that keep a NaN operand (theirs return the other one, which hid an overflowed formula).
double MinOrNan(double a, double b) { return std::isnan(a) || std::isnan(b) ? NAN : std::min(a, b); }
double MaxOrNan(double a, double b) { return std::isnan(a) || std::isnan(b) ? NAN : std::max(a, b); }

void MakeGreedy(Decision* d) {
  d->action = Action::kGreedy;
  d->params.temperature = 0.0f;
  d->params.top_k = 1;
  d->params.top_p = 1.0f;
  d->params.min_p = 0.0f;
  d->params.n_adaptive_samples = 1;
}

}  // namespace

int MatchRule(const Profile& profile, const MetricValues& metrics) {
  const auto& rules = profile.rules();
  for (size_t i = 0; i < rules.size(); ++i) {
    const bool all = std::all_of(rules[i].bounds.begin(), rules[i].bounds.end(),
                                 [&](const Bound& b) { return Holds(b, metrics.Get(b.metric)); });
    if (all) return static_cast<int>(i);
  }
  return -1;
}

Decision Decide(const Profile& profile, const SamplingConfig& base, const MetricValues& m,
                absl::Span<const int32_t> recent_tokens, int64_t vocab) {
  const int rule = MatchRule(profile, m);
  Decision d;
  d.regime = rule >= 0 ? profile.rules()[static_cast<size_t>(rule)].regime : profile.default_regime();
  d.params = base;
  d.params.n_adaptive_samples = 1;

  const v1::Coefficients& c = profile.coefficients();
  // Formulas in double on the float base values; the results are rounded to float once, as sent.
  const double T = base.temperature, P = base.top_p, K = base.top_k, MP = base.min_p;
  const double ent = m.logits_entropy, vent = m.logits_varentropy;
  const double attn_ent = m.Get(v1::METRIC_ATTN_ENTROPY), attn_vent = m.Get(v1::METRIC_ATTN_VARENTROPY);
  const double agreement = m.Get(v1::METRIC_AGREEMENT), interaction = m.Get(v1::METRIC_INTERACTION_STRENGTH);

  switch (d.regime) {
    case v1::REGIME_ARGMAX:
      MakeGreedy(&d);
      return d;
    case v1::REGIME_CLARIFY: {
      const int32_t token = base.clarifying_token;
      // Emitted once: if the sequence already ends with it, the model has seen the question and we sample.
      // A token outside this vocabulary cannot be emitted; CLARIFY then only samples.
      const bool can_emit = token >= 0 && token < vocab;
      if (can_emit && (recent_tokens.empty() || recent_tokens.back() != token)) {
        d.action = Action::kEmitToken;
        d.emit_token = token;
        return d;
      }
      d.params.temperature = static_cast<float>(
          MinOrNan(c.clarify_temperature_max(),
                   T * (c.clarify_temperature_offset() + c.clarify_temperature_attn_entropy() * attn_ent)));
      break;
    }
    case v1::REGIME_EXPLORE:
      d.params.temperature = static_cast<float>(
          MinOrNan(c.explore_temperature_max(),
                   T * (c.explore_temperature_offset() + c.explore_temperature_interaction_strength() * interaction)));
      // Reference: int() truncation toward zero. Capped at INT32_MAX: a valid top_k near it, widened, does not
      // fit an int32.
      d.params.top_k = ToTopK(
          MaxOrNan(c.explore_top_k_min(), std::trunc(K * (1.0 + c.explore_top_k_agreement() * (1.0 - agreement)))),
          base.top_k);
      break;
    case v1::REGIME_RESAMPLE:
      d.params.temperature = static_cast<float>(
          MaxOrNan(c.resample_temperature_min(),
                   T * (c.resample_temperature_offset() + c.resample_temperature_attn_varentropy() * attn_vent)));
      d.params.top_p =
          static_cast<float>(MaxOrNan(c.resample_top_p_min(), P - c.resample_top_p_attn_entropy() * attn_ent));
      break;
    case v1::REGIME_ADAPTIVE: {
      // Reference: temperature unclamped.
      d.params.temperature = static_cast<float>(
          T * (1.0 + c.adaptive_temperature_logits_entropy() * ent + c.adaptive_temperature_logits_varentropy() * vent +
               c.adaptive_temperature_attn_entropy() * attn_ent + c.adaptive_temperature_attn_varentropy() * attn_vent -
               c.adaptive_temperature_agreement() * agreement));
      d.params.top_p = static_cast<float>(std::clamp(P * (1.0 + c.adaptive_top_p_attn_varentropy() * attn_vent),
                                                     c.adaptive_top_p_min(), c.adaptive_top_p_max()));
      // Reference: round half to even (std::nearbyint in the default rounding mode), then clamp.
      d.params.top_k =
          ToTopK(std::clamp(std::nearbyint(K * (1.0 + c.adaptive_top_k_interaction_strength() * interaction -
                                                c.adaptive_top_k_agreement() * agreement)),
                            c.adaptive_top_k_min(), c.adaptive_top_k_max()),
                 base.top_k);
      d.params.min_p = static_cast<float>(
          std::clamp(MP * (1.0 - c.adaptive_min_p_logits_entropy() * ent - c.adaptive_min_p_logits_varentropy() * vent),
                     c.adaptive_min_p_min(), c.adaptive_min_p_max()));
      d.params.n_adaptive_samples = base.n_adaptive_samples;
      d.action = d.params.n_adaptive_samples > 1 ? Action::kBestOfN : Action::kSample;
      break;
    }
    default:  // REGIME_FIXED: the base parameters as given
      break;
  }
  // Formulas can leave the valid range only through extreme coefficients; keep the chain's contract.
  // A valid base temperature near FLT_MAX times a formula's factor overflows float. A formula that overflowed
  // into NaN (inf - inf, 0 * inf) leaves the base value of top_p and min_p in force, and a NaN temperature is
  // greedy below (it was 0 times an infinite factor, or no temperature at all).
  d.params.temperature = std::min(d.params.temperature, std::numeric_limits<float>::max());
  if (std::isnan(d.params.top_p)) d.params.top_p = base.top_p;
  if (std::isnan(d.params.min_p)) d.params.min_p = base.min_p;
  // Any top_p in (0, 1] is the chain's to apply; only a formula's result outside it is brought back.
  d.params.top_p = std::clamp(d.params.top_p, std::numeric_limits<float>::denorm_min(), 1.0f);
  // A zero base min_p times a negative factor is -0.0, which the clamp keeps; the wire gets +0.
  d.params.min_p = std::clamp(d.params.min_p, 0.0f, 1.0f) + 0.0f;
  d.params.top_k = std::max(d.params.top_k, 0);
  if (!(d.params.temperature > 0.0f)) MakeGreedy(&d);
  return d;
}

}  // namespace samplerd
