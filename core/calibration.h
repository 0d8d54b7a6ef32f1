// Calibration: a profile fitted to a model from the metrics of its own generations (docs/calibration.md).
//
// Entropix's bounds (0.1 / 3 / 5 bits) and coefficients were tuned for one large-vocabulary model; a model
// with another vocabulary or tokenizer puts its entropy and varentropy elsewhere. `Calibrate` keeps the shape of
// a built-in adaptive profile (which regimes, which metrics, which comparison) and moves every bound to a stated
// quantile of what the model actually produced, then scales the temperature coefficients into a stated range.
//
// The method, deterministic for a given input (the order of the steps does not matter):
//  1. Steps: those that carry metrics (logits entropy and varentropy set); the attention metrics of a step count only
//  where
//     the step carries them.
//  2. Bounds: for each metric the base profile bounds, its distinct bound values in increasing order v_0 < ... <
//     v_{k-1} go to the quantiles q_i = low + i (high - low) / (k - 1) of that metric over the steps (k = 1:
//     (low + high) / 2). So the order of the thresholds is kept: entropix's logits entropy bounds 0.1 / 3 / 5
//     become the low / middle / high quantiles, its varentropy bounds 0.1 / 5 the low / high ones. Quantiles
//     interpolate linearly between order statistics (Hyndman and Fan type 7, numpy's default): with n sorted
//     values x_0..x_{n-1}, h = (n - 1) q, Q(q) = x_j + (h - j)(x_{j+1} - x_j) for j = floor(h).
//  3. Temperature, for every step of the record: ADAPTIVE's five temperature coefficients are multiplied by one
//     factor s so that T (1 + s X) reaches `temperature_max` at the largest X of the steps (X = the base
//     coefficients' weighted sum of the metrics, as the formula uses them; s = 1 when no X is positive);
//     CLARIFY's and EXPLORE's temperature caps become min(base cap, temperature_max); RESAMPLE samples at
//     temperature_max (offset temperature_max / T, no attention term, floor temperature_max). T, top-k, top-p,
//     min-p and their formulas stay the base profile's.
//
//   CalibrationOptions options;                       // base entropix, quantiles 0.5 / 0.9, temperature <= 1
//   absl::StatusOr<Calibration> c = Calibrate(metrics_of_every_step, options);
//   // c->profile_set: JSON via MessageToJsonString, loadable by `samplerd --config` as it is.
#ifndef SAMPLERD_CORE_CALIBRATION_H_
#define SAMPLERD_CORE_CALIBRATION_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "samplerd/v1/profile.pb.h"

namespace samplerd {

// The metrics of one generated step, as `StepResult.metrics` reports them (absent = not reported).
struct StepMetrics {
  std::optional<double> logits_entropy;
  std::optional<double> logits_varentropy;
  std::optional<double> attn_entropy;
  std::optional<double> attn_varentropy;
  std::optional<double> agreement;
  std::optional<double> interaction_strength;
};

struct CalibrationOptions {
  std::string base = "entropix";  // a built-in adaptive profile: entropix or entropix-frog
  std::string name = "calibrated";
  double quantile_low = 0.5;  // in (0, 1), below quantile_high
  double quantile_high = 0.9;
  double temperature_max = 1.0;  // >= the base temperature
};

// One bound as calibrated: the base value and where it went.
struct CalibratedBound {
  v1::Regime regime;
  v1::Metric metric;
  v1::Op op;
  double base_value;
  double quantile;
  double value;
};

struct Calibration {
  v1::ProfileSet profile_set;  // one profile, every coefficient spelled out; default_profile left empty
  int64_t steps = 0;           // steps with metrics
  int64_t steps_without_metrics = 0;
  int64_t attention_steps = 0;  // of those, steps with attention metrics
  std::vector<CalibratedBound> bounds;
  double temperature_scale = 1;         // s of the method
  double adaptive_temperature_min = 0;  // T (1 + s X) over the steps: smallest and largest
  double adaptive_temperature_max = 0;
};

// Linear-interpolation quantile (type 7) of `values`, q in [0, 1]; `values` must not be empty.
double Quantile(std::vector<double> values, double q);

// The calibrated profile. INVALID_ARGUMENT naming the problem: no steps (an empty record), no step with metrics,
// a quantile outside (0, 1) or low >= high, temperature_max below the base temperature or not finite, an unknown
// or non-adaptive base, a base that bounds attention metrics when no step carries them.
absl::StatusOr<Calibration> Calibrate(absl::Span<const StepMetrics> steps, const CalibrationOptions& options);

}  // namespace samplerd

#endif  // SAMPLERD_CORE_CALIBRATION_H_
