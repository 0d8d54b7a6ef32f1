// Pins Decide beyond the golden cases: whatever a profile's coefficients make of the metrics, the applied
// parameters stay in the chain's ranges and are never NaN (formulas that overflow keep the base value, or go
// greedy when the temperature is lost), and a top_k a formula puts past int32 is capped, not cast.
#include "core/strategy.h"

#include <cmath>
#include <limits>
#include <memory>
#include <string>

#include "core/metrics.h"
#include "core/profile.h"
#include "gtest/gtest.h"

namespace samplerd {
namespace {

// The one profile of `json`'s "profiles" (a config for ProfileRegistry::FromJson).
std::shared_ptr<const ProfileRegistry> Registry(const std::string& json) {
  absl::StatusOr<std::shared_ptr<const ProfileRegistry>> registry = ProfileRegistry::FromJson(json);
  EXPECT_TRUE(registry.ok()) << registry.status();
  return registry.ok() ? *registry : nullptr;
}

MetricValues Metrics(double entropy, double varentropy, double attn_entropy, double interaction) {
  MetricValues m;
  m.logits_entropy = entropy;
  m.logits_varentropy = varentropy;
  AttentionMetrics a;
  a.entropy = attn_entropy;
  a.varentropy = 0.01;
  a.agreement = 0.001;
  a.interaction_strength = interaction;
  a.rows_used = 8;
  m.attention = a;
  return m;
}

void ExpectInRange(const Decision& d, const std::string& label) {
  EXPECT_FALSE(std::isnan(d.params.temperature)) << label;
  EXPECT_GE(d.params.temperature, 0.0f) << label;
  EXPECT_FALSE(std::isnan(d.params.top_p)) << label;
  EXPECT_GT(d.params.top_p, 0.0f) << label;
  EXPECT_LE(d.params.top_p, 1.0f) << label;
  EXPECT_FALSE(std::isnan(d.params.min_p)) << label;
  EXPECT_GE(d.params.min_p, 0.0f) << label;
  EXPECT_LE(d.params.min_p, 1.0f) << label;
  EXPECT_GE(d.params.top_k, 0) << label;
}

TEST(Decide, AnAdaptiveMinPFormulaThatOverflowsKeepsTheBaseMinP) {
  // 1 - 1e308 * 2 + 1e308 * 2 is inf - inf: NaN.
  auto registry = Registry(R"({"profiles": [{"name": "x", "params": {"minP": 0.05},
      "regimes": [{"regime": "REGIME_ADAPTIVE", "bounds": [{"metric": "METRIC_LOGITS_ENTROPY", "op": "OP_GT",
                   "value": 0}]}],
      "coefficients": {"adaptiveMinPLogitsEntropy": 1e308, "adaptiveMinPLogitsVarentropy": -1e308}}]})");
  ASSERT_NE(registry, nullptr);
  const Profile& profile = *registry->Find("x");
  const Decision d = Decide(profile, profile.base(), Metrics(2.0, 2.0, 5.0, 0.5), {}, 1000);
  EXPECT_EQ(d.regime, v1::REGIME_ADAPTIVE);
  ExpectInRange(d, "adaptive min_p");
  EXPECT_FLOAT_EQ(d.params.min_p, 0.05f);
}

TEST(Decide, AMinPOfZeroIsReportedAsPositiveZero) {
  // A base min_p of 0 times a negative factor is -0.0, which a clamp to [0, max] keeps.
  auto registry = Registry(R"({"profiles": [{"name": "x", "params": {"minP": 0},
      "regimes": [{"regime": "REGIME_ADAPTIVE", "bounds": [{"metric": "METRIC_LOGITS_ENTROPY", "op": "OP_GT",
                   "value": 0}]}],
      "coefficients": {"adaptiveMinPMin": 0}}]})");
  ASSERT_NE(registry, nullptr);
  const Profile& profile = *registry->Find("x");
  const Decision d = Decide(profile, profile.base(), Metrics(4.0, 4.0, 5.0, 0.5), {}, 1000);
  EXPECT_EQ(d.regime, v1::REGIME_ADAPTIVE);
  EXPECT_EQ(d.params.min_p, 0.0f);
  EXPECT_FALSE(std::signbit(d.params.min_p));
}

TEST(Decide, AnAdaptiveTopKPastInt32IsCappedNotCast) {
  auto registry = Registry(R"({"profiles": [{"name": "x", "params": {"topK": 27},
      "regimes": [{"regime": "REGIME_ADAPTIVE", "bounds": [{"metric": "METRIC_LOGITS_ENTROPY", "op": "OP_GT",
                   "value": 0}]}],
      "coefficients": {"adaptiveTopKMax": 1e12, "adaptiveTopKInteractionStrength": 1e10}}]})");
  ASSERT_NE(registry, nullptr);
  const Profile& profile = *registry->Find("x");
  const Decision d = Decide(profile, profile.base(), Metrics(2.0, 1.0, 5.0, 87.0), {}, 1000);
  ExpectInRange(d, "adaptive top_k");
  EXPECT_EQ(d.params.top_k, std::numeric_limits<int32_t>::max());
}

TEST(Decide, ATemperatureOfZeroTimesAnInfiniteFactorIsGreedy) {
  // CLARIFY with a clarifying token that cannot be emitted samples at min(max, T * (offset + coef * attn_entropy)):
  // T = 0 and an infinite factor is NaN, which std::min turned into the maximum.
  auto registry = Registry(R"({"profiles": [{"name": "x", "params": {"temperature": 0, "clarifyingToken": 5000},
      "regimes": [{"regime": "REGIME_CLARIFY", "bounds": [{"metric": "METRIC_LOGITS_ENTROPY", "op": "OP_GT",
                   "value": 0}]}],
      "coefficients": {"clarifyTemperatureAttnEntropy": 1e308}}]})");
  ASSERT_NE(registry, nullptr);
  const Profile& profile = *registry->Find("x");
  const Decision d = Decide(profile, profile.base(), Metrics(2.0, 1.0, 5.0, 0.5), {}, 1000);
  EXPECT_EQ(d.regime, v1::REGIME_CLARIFY);
  ExpectInRange(d, "clarify temperature");
  EXPECT_EQ(d.action, Action::kGreedy);
  EXPECT_EQ(d.params.temperature, 0.0f);
}

// top_p's range is (0, 1]: a small value the client sent is the chain's to apply, not raised to a floor.
TEST(Decide, ATinyTopPIsAppliedAsSentAndAFormulaBelowZeroIsTheSmallestPositive) {
  auto registry =
      Registry(R"({"profiles": [{"name": "fixed", "defaultRegime": "REGIME_FIXED", "params": {"topP": 1e-7}}]})");
  ASSERT_NE(registry, nullptr);
  const Profile& fixed = *registry->Find("fixed");
  const Decision d = Decide(fixed, fixed.base(), Metrics(2.0, 1.0, 5.0, 0.5), {}, 1000);
  EXPECT_EQ(d.regime, v1::REGIME_FIXED);
  EXPECT_EQ(d.params.top_p, 1e-7f);

  // RESAMPLE: top_p = max(min, P - coef * attn_entropy), here 0.9 - 1 * 5 with no floor.
  registry = Registry(R"({"profiles": [{"name": "x", "params": {"topP": 0.9},
      "regimes": [{"regime": "REGIME_RESAMPLE", "bounds": [{"metric": "METRIC_LOGITS_ENTROPY", "op": "OP_GT",
                   "value": 0}]}],
      "coefficients": {"resampleTopPAttnEntropy": 1, "resampleTopPMin": -1}}]})");
  ASSERT_NE(registry, nullptr);
  const Profile& x = *registry->Find("x");
  const Decision r = Decide(x, x.base(), Metrics(2.0, 1.0, 5.0, 0.5), {}, 1000);
  EXPECT_EQ(r.regime, v1::REGIME_RESAMPLE);
  ExpectInRange(r, "resample top_p");
  EXPECT_EQ(r.params.top_p, std::numeric_limits<float>::denorm_min());
}

}  // namespace
}  // namespace samplerd
