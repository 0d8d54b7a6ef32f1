#include "core/calibration.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/profile.h"

namespace samplerd {
namespace {

// The value of `metric` in a step; absent attention metrics are nullopt.
std::optional<double> MetricOf(const StepMetrics& m, v1::Metric metric) {
  switch (metric) {
    case v1::METRIC_LOGITS_ENTROPY:
      return m.logits_entropy;
    case v1::METRIC_LOGITS_VARENTROPY:
      return m.logits_varentropy;
    case v1::METRIC_ATTN_ENTROPY:
      return m.attn_entropy;
    case v1::METRIC_ATTN_VARENTROPY:
      return m.attn_varentropy;
    case v1::METRIC_AGREEMENT:
      return m.agreement;
    case v1::METRIC_INTERACTION_STRENGTH:
      return m.interaction_strength;
    default:
      return std::nullopt;
  }
}

bool HasMetrics(const StepMetrics& m) { return m.logits_entropy.has_value() && m.logits_varentropy.has_value(); }

absl::Status CheckQuantile(const char* name, double q) {
  if (!(q > 0 && q < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": the quantile must be in (0, 1), got ", q));
  }
  return absl::OkStatus();
}

}  // namespace

double Quantile(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  const double h = static_cast<double>(values.size() - 1) * q;
  const size_t j = static_cast<size_t>(std::floor(h));
  if (j + 1 >= values.size()) return values.back();
  return values[j] + (h - static_cast<double>(j)) * (values[j + 1] - values[j]);
}

absl::StatusOr<Calibration> Calibrate(absl::Span<const StepMetrics> steps, const CalibrationOptions& options) {
  if (absl::Status s = CheckQuantile("quantile_low", options.quantile_low); !s.ok()) return s;
  if (absl::Status s = CheckQuantile("quantile_high", options.quantile_high); !s.ok()) return s;
  if (!(options.quantile_low < options.quantile_high)) {
    return absl::InvalidArgumentError(absl::StrCat("quantile_low (", options.quantile_low,
                                                   ") must be below quantile_high (", options.quantile_high, ")"));
  }
  if (options.name.empty()) return absl::InvalidArgumentError("name: the profile name must not be empty");
  const Profile* base = ProfileRegistry::BuiltIn()->Find(options.base);
  if (options.base.empty() || base == nullptr || base->default_regime() != v1::REGIME_ADAPTIVE) {
    return absl::InvalidArgumentError(
        absl::StrCat("base: \"", options.base, "\" is not a built-in adaptive profile (entropix or entropix-frog)"));
  }
  const double t = base->base().temperature;
  if (!std::isfinite(options.temperature_max) || options.temperature_max < t) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature_max: must be finite and at least the base "
                     "temperature ",
                     t, ", got ", options.temperature_max));
  }
  if (steps.empty()) return absl::InvalidArgumentError("no steps: the record is empty");

  Calibration out;
  std::vector<const StepMetrics*> usable;
  for (const StepMetrics& m : steps) {
    if (HasMetrics(m)) {
      usable.push_back(&m);
      if (m.attn_entropy.has_value()) ++out.attention_steps;
    } else {
      ++out.steps_without_metrics;
    }
  }
  out.steps = static_cast<int64_t>(usable.size());
  if (usable.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("none of the ", steps.size(), " steps carries metrics (logits entropy and varentropy)"));
  }

  // Step 2: each metric's distinct base bound values, in increasing order, to evenly spaced quantiles.
  std::map<v1::Metric, std::map<double, double>> quantile_of;  // metric -> base value -> quantile
  for (const RegimeRule& rule : base->rules()) {
    for (const Bound& b : rule.bounds) quantile_of[b.metric][b.value] = 0;
  }
  std::map<v1::Metric, std::map<double, double>> value_of;  // metric -> base value -> calibrated value
  for (auto& [metric, values] : quantile_of) {
    std::vector<double> observed;
    for (const StepMetrics* m : usable) {
      if (std::optional<double> v = MetricOf(*m, metric)) observed.push_back(*v);
    }
    if (observed.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("base profile ", options.base, " bounds ", v1::Metric_Name(metric), ", but none of the ",
                       out.steps, " steps carries attention metrics (record with attention, or use base entropix)"));
    }
    const size_t k = values.size();
    size_t i = 0;
    for (auto& [base_value, q] : values) {
      q = k == 1 ? (options.quantile_low + options.quantile_high) / 2
                 : options.quantile_low + static_cast<double>(i) * (options.quantile_high - options.quantile_low) /
                                              static_cast<double>(k - 1);
      value_of[metric][base_value] = Quantile(observed, q);
      ++i;
    }
  }

  v1::Profile profile = base->proto();
  profile.set_name(options.name);
  for (v1::RegimeRule& rule : *profile.mutable_regimes()) {
    for (v1::Bound& b : *rule.mutable_bounds()) {
      const double base_value = b.value();
      b.set_value(value_of[b.metric()][base_value]);
      out.bounds.push_back(
          {rule.regime(), b.metric(), b.op(), base_value, quantile_of[b.metric()][base_value], b.value()});
    }
  }

  // Step 3: temperatures within [.., temperature_max].
  const v1::Coefficients& c = base->coefficients();
  auto x_of = [&c](const StepMetrics& m) {
    return c.adaptive_temperature_logits_entropy() * *m.logits_entropy +
           c.adaptive_temperature_logits_varentropy() * *m.logits_varentropy +
           c.adaptive_temperature_attn_entropy() * m.attn_entropy.value_or(0) +
           c.adaptive_temperature_attn_varentropy() * m.attn_varentropy.value_or(0) -
           c.adaptive_temperature_agreement() * m.agreement.value_or(0);
  };
  double x_min = x_of(*usable.front()), x_max = x_min;
  for (const StepMetrics* m : usable) {
    x_min = std::min(x_min, x_of(*m));
    x_max = std::max(x_max, x_of(*m));
  }
  const double s = x_max > 0 ? (options.temperature_max / t - 1) / x_max : 1.0;
  out.temperature_scale = s;
  out.adaptive_temperature_min = t * (1 + s * x_min);
  out.adaptive_temperature_max = t * (1 + s * x_max);
  v1::Coefficients* pc = profile.mutable_coefficients();
  pc->set_adaptive_temperature_logits_entropy(s * c.adaptive_temperature_logits_entropy());
  pc->set_adaptive_temperature_logits_varentropy(s * c.adaptive_temperature_logits_varentropy());
  pc->set_adaptive_temperature_attn_entropy(s * c.adaptive_temperature_attn_entropy());
  pc->set_adaptive_temperature_attn_varentropy(s * c.adaptive_temperature_attn_varentropy());
  pc->set_adaptive_temperature_agreement(s * c.adaptive_temperature_agreement());
  pc->set_clarify_temperature_max(std::min(c.clarify_temperature_max(), options.temperature_max));
  pc->set_explore_temperature_max(std::min(c.explore_temperature_max(), options.temperature_max));
  pc->set_resample_temperature_offset(options.temperature_max / t);
  pc->set_resample_temperature_attn_varentropy(0);
  pc->set_resample_temperature_min(options.temperature_max);

  profile.set_description(absl::StrFormat(
      "calibrated from %d steps (%d with attention) over %s: bounds at quantiles %g..%g of the observed metrics, "
      "temperatures at most %g",
      out.steps, out.attention_steps, options.base, options.quantile_low, options.quantile_high,
      options.temperature_max));
  *out.profile_set.add_profiles() = std::move(profile);
  return out;
}

}  // namespace samplerd
