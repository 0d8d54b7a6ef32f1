// Pins the calibration method of core/calibration.h on small records whose quantiles are worked out by hand,
// and its refusals of bad input.
#include "core/calibration.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/profile.h"
#include "gtest/gtest.h"

namespace samplerd {
namespace {

StepMetrics Logits(double entropy, double varentropy) {
  StepMetrics m;
  m.logits_entropy = entropy;
  m.logits_varentropy = varentropy;
  return m;
}

StepMetrics WithAttention(double entropy, double varentropy, double attn_entropy, double attn_varentropy,
                          double agreement, double interaction) {
  StepMetrics m = Logits(entropy, varentropy);
  m.attn_entropy = attn_entropy;
  m.attn_varentropy = attn_varentropy;
  m.agreement = agreement;
  m.interaction_strength = interaction;
  return m;
}

// Five steps: entropy 0.1..0.5, varentropy 1..5 (listed out of order: the order must not matter).
std::vector<StepMetrics> FiveSteps() {
  return {Logits(0.3, 3), Logits(0.5, 5), Logits(0.1, 1), Logits(0.4, 4), Logits(0.2, 2)};
}

double BoundValue(const v1::Profile& p, v1::Regime regime, v1::Metric metric) {
  for (const auto& rule : p.regimes()) {
    if (rule.regime() != regime) continue;
    for (const auto& b : rule.bounds()) {
      if (b.metric() == metric) return b.value();
    }
  }
  ADD_FAILURE() << "no bound " << v1::Metric_Name(metric) << " in " << v1::Regime_Name(regime);
  return NAN;
}

TEST(Quantile, InterpolatesLinearlyBetweenOrderStatistics) {
  EXPECT_DOUBLE_EQ(Quantile({3, 1, 2, 4, 5}, 0.25), 2.0);  // h = 4 * 0.25 = 1: x_1
  EXPECT_DOUBLE_EQ(Quantile({1, 2, 3, 4}, 0.5), 2.5);      // h = 1.5: halfway between x_1 and x_2
  EXPECT_DOUBLE_EQ(Quantile({10, 0}, 0.9), 9.0);           // h = 0.9
  EXPECT_DOUBLE_EQ(Quantile({7}, 0.3), 7.0);
  EXPECT_DOUBLE_EQ(Quantile({1, 2, 3}, 1.0), 3.0);
}

TEST(Calibrate, EntropixBoundsGoToTheLowMiddleAndHighQuantiles) {
  CalibrationOptions options;
  options.quantile_low = 0.25;
  options.quantile_high = 0.75;
  absl::StatusOr<Calibration> c = Calibrate(FiveSteps(), options);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->profile_set.profiles_size(), 1);
  const v1::Profile& p = c->profile_set.profiles(0);
  EXPECT_EQ(p.name(), "calibrated");
  EXPECT_EQ(c->steps, 5);
  // Entropy bounds 0.1 / 3 / 5 -> quantiles 0.25 / 0.5 / 0.75 of {0.1..0.5} = 0.2 / 0.3 / 0.4.
  EXPECT_DOUBLE_EQ(BoundValue(p, v1::REGIME_ARGMAX, v1::METRIC_LOGITS_ENTROPY), 0.2);
  EXPECT_DOUBLE_EQ(BoundValue(p, v1::REGIME_CLARIFY, v1::METRIC_LOGITS_ENTROPY), 0.3);
  EXPECT_DOUBLE_EQ(BoundValue(p, v1::REGIME_EXPLORE, v1::METRIC_LOGITS_ENTROPY), 0.4);
  EXPECT_DOUBLE_EQ(BoundValue(p, v1::REGIME_RESAMPLE, v1::METRIC_LOGITS_ENTROPY), 0.4);
  // Varentropy bounds 0.1 / 5 -> quantiles 0.25 / 0.75 of {1..5} = 2 / 4.
  EXPECT_DOUBLE_EQ(BoundValue(p, v1::REGIME_ARGMAX, v1::METRIC_LOGITS_VARENTROPY), 2.0);
  EXPECT_DOUBLE_EQ(BoundValue(p, v1::REGIME_CLARIFY, v1::METRIC_LOGITS_VARENTROPY), 2.0);
  EXPECT_DOUBLE_EQ(BoundValue(p, v1::REGIME_EXPLORE, v1::METRIC_LOGITS_VARENTROPY), 4.0);
  EXPECT_DOUBLE_EQ(BoundValue(p, v1::REGIME_RESAMPLE, v1::METRIC_LOGITS_VARENTROPY), 4.0);
  // The ops and the order of the rules are the base's.
  const Profile* base = ProfileRegistry::BuiltIn()->Find("entropix");
  ASSERT_EQ(p.regimes_size(), base->proto().regimes_size());
  for (int i = 0; i < p.regimes_size(); ++i) {
    EXPECT_EQ(p.regimes(i).regime(), base->proto().regimes(i).regime());
    for (int j = 0; j < p.regimes(i).bounds_size(); ++j) {
      EXPECT_EQ(p.regimes(i).bounds(j).op(), base->proto().regimes(i).bounds(j).op());
    }
  }
}

TEST(Calibrate, AdaptiveTemperatureReachesTheMaximumAtTheLargestStep) {
  CalibrationOptions options;
  options.temperature_max = 1.0;
  absl::StatusOr<Calibration> c = Calibrate(FiveSteps(), options);
  ASSERT_TRUE(c.ok()) << c.status();
  const double t = static_cast<double>(0.666f);
  // X = 0.3 * entropy + 0.3 * varentropy (no attention): largest 0.3 * 0.5 + 0.3 * 5 = 1.65, smallest 0.33.
  const double s = (1.0 / t - 1) / 1.65;
  EXPECT_DOUBLE_EQ(c->temperature_scale, s);
  const v1::Coefficients& k = c->profile_set.profiles(0).coefficients();
  EXPECT_DOUBLE_EQ(k.adaptive_temperature_logits_entropy(), 0.3 * s);
  EXPECT_DOUBLE_EQ(k.adaptive_temperature_logits_varentropy(), 0.3 * s);
  EXPECT_DOUBLE_EQ(k.adaptive_temperature_attn_entropy(), 0.2 * s);
  EXPECT_DOUBLE_EQ(k.adaptive_temperature_agreement(), 0.2 * s);
  EXPECT_NEAR(c->adaptive_temperature_max, 1.0, 1e-12);
  EXPECT_NEAR(c->adaptive_temperature_min, t * (1 + s * 0.33), 1e-12);
  EXPECT_DOUBLE_EQ(k.clarify_temperature_max(), 1.0);
  EXPECT_DOUBLE_EQ(k.explore_temperature_max(), 1.0);
  EXPECT_DOUBLE_EQ(k.resample_temperature_min(), 1.0);
  EXPECT_DOUBLE_EQ(k.resample_temperature_offset(), 1.0 / t);
  EXPECT_DOUBLE_EQ(k.resample_temperature_attn_varentropy(), 0.0);
  // Untouched formulas keep the base values.
  EXPECT_DOUBLE_EQ(k.adaptive_top_k_interaction_strength(), 0.3);
  EXPECT_FLOAT_EQ(c->profile_set.profiles(0).params().temperature(), 0.666f);
}

TEST(Calibrate, FrogBoundsEveryMetricFromItsOwnQuantiles) {
  // Attention entropy 1..5, agreement 0.01..0.05; frog's attention entropy bounds 11.915 / 11.926 -> 0.25 / 0.75.
  std::vector<StepMetrics> steps;
  for (int i = 1; i <= 5; ++i) steps.push_back(WithAttention(0.1 * i, i, i, 0.1 * i, 0.01 * i, 2.0 * i));
  CalibrationOptions options;
  options.base = "entropix-frog";
  options.quantile_low = 0.25;
  options.quantile_high = 0.75;
  absl::StatusOr<Calibration> c = Calibrate(steps, options);
  ASSERT_TRUE(c.ok()) << c.status();
  const v1::Profile& p = c->profile_set.profiles(0);
  EXPECT_EQ(c->attention_steps, 5);
  EXPECT_DOUBLE_EQ(BoundValue(p, v1::REGIME_ARGMAX, v1::METRIC_ATTN_ENTROPY), 2.0);
  EXPECT_DOUBLE_EQ(BoundValue(p, v1::REGIME_RESAMPLE, v1::METRIC_ATTN_ENTROPY), 4.0);
  EXPECT_DOUBLE_EQ(BoundValue(p, v1::REGIME_RESAMPLE, v1::METRIC_INTERACTION_STRENGTH), 8.0);
  // Frog's entropy bounds 0.01 / 0.7 / 2.1: quantiles 0.25 / 0.5 / 0.75 (RESAMPLE's 0.7 is the middle one).
  EXPECT_DOUBLE_EQ(BoundValue(p, v1::REGIME_ARGMAX, v1::METRIC_LOGITS_ENTROPY), 0.2);
  EXPECT_DOUBLE_EQ(BoundValue(p, v1::REGIME_RESAMPLE, v1::METRIC_LOGITS_ENTROPY), 0.3);
  EXPECT_DOUBLE_EQ(BoundValue(p, v1::REGIME_CLARIFY, v1::METRIC_LOGITS_ENTROPY), 0.4);
  // Frog's zeroed coefficients stay zero after scaling.
  EXPECT_DOUBLE_EQ(p.coefficients().adaptive_temperature_logits_varentropy(), 0.0);
}

TEST(Calibrate, OutputIsAValidConfigThatSamplerdLoads) {
  absl::StatusOr<Calibration> c = Calibrate(FiveSteps(), CalibrationOptions());
  ASSERT_TRUE(c.ok()) << c.status();
  auto registry = ProfileRegistry::Create(c->profile_set);
  ASSERT_TRUE(registry.ok()) << registry.status();
  EXPECT_NE((*registry)->Find("calibrated"), nullptr);
  EXPECT_EQ((*registry)->default_profile(), "entropix");
}

TEST(Calibrate, IsDeterministicAndIndependentOfStepOrder) {
  std::vector<StepMetrics> steps = FiveSteps();
  absl::StatusOr<Calibration> a = Calibrate(steps, CalibrationOptions());
  std::reverse(steps.begin(), steps.end());
  absl::StatusOr<Calibration> b = Calibrate(steps, CalibrationOptions());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->profile_set.SerializeAsString(), b->profile_set.SerializeAsString());
}

TEST(Calibrate, StepsWithoutMetricsAreSkippedAndCounted) {
  std::vector<StepMetrics> steps = FiveSteps();
  steps.push_back(StepMetrics());
  absl::StatusOr<Calibration> c = Calibrate(steps, CalibrationOptions());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->steps, 5);
  EXPECT_EQ(c->steps_without_metrics, 1);
}

void ExpectRejected(absl::Span<const StepMetrics> steps, const CalibrationOptions& options,
                    const std::string& expected) {
  absl::StatusOr<Calibration> c = Calibrate(steps, options);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find(expected), std::string::npos) << c.status().message();
}

TEST(Calibrate, RejectsAnEmptyRecord) { ExpectRejected({}, CalibrationOptions(), "the record is empty"); }

TEST(Calibrate, RejectsStepsWithoutMetrics) {
  ExpectRejected(std::vector<StepMetrics>(3), CalibrationOptions(), "none of the 3 steps carries metrics");
}

TEST(Calibrate, RejectsQuantilesOutsideTheOpenUnitInterval) {
  for (double q : {0.0, 1.0, 1.5, -0.1, static_cast<double>(NAN)}) {
    CalibrationOptions options;
    options.quantile_low = q;
    ExpectRejected(FiveSteps(), options, "quantile_low: the quantile must be in (0, 1)");
    options = CalibrationOptions();
    options.quantile_high = q;
    ExpectRejected(FiveSteps(), options, "quantile_high: the quantile must be in (0, 1)");
  }
  CalibrationOptions options;
  options.quantile_low = 0.9;
  options.quantile_high = 0.5;
  ExpectRejected(FiveSteps(), options, "must be below quantile_high");
}

TEST(Calibrate, RejectsABaseThatIsNotAnAdaptiveBuiltIn) {
  for (const char* base : {"fixed", "nope", ""}) {
    CalibrationOptions options;
    options.base = base;
    ExpectRejected(FiveSteps(), options, "is not a built-in adaptive profile");
  }
}

TEST(Calibrate, RejectsATemperatureMaximumBelowTheBaseTemperature) {
  CalibrationOptions options;
  options.temperature_max = 0.5;
  ExpectRejected(FiveSteps(), options, "temperature_max");
  options.temperature_max = INFINITY;
  ExpectRejected(FiveSteps(), options, "temperature_max");
}

TEST(Calibrate, RejectsFrogWithoutAttentionMetrics) {
  CalibrationOptions options;
  options.base = "entropix-frog";
  ExpectRejected(FiveSteps(), options, "carries attention metrics");
}

}  // namespace
}  // namespace samplerd
