#include "core/metrics.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/field_error.h"
#include "core/reduce_kernels.h"

namespace samplerd {
namespace {

constexpr double kLn2 = 0.69314718055994530942;
// ln(1e-10): DESIGN.md section 3 clips attention probabilities to [1e-10, 1] inside the log.
constexpr float kLnAttentionFloor = -23.025850929940457f;

std::string DescribeBad(float v) { return std::isnan(v) ? "NaN" : "+inf"; }

}  // namespace

absl::StatusOr<LogitsSummary> SummarizeLogits(const FlatFloats& z, MetricsScratch* scratch) {
  return SummarizeLogits(FloatView{z.data(), 1, static_cast<int64_t>(z.size())}, scratch);
}

absl::StatusOr<LogitsSummary> SummarizeLogits(const FloatView& logits, MetricsScratch* scratch) {
  const float* x = logits.data;
  const int64_t n = logits.size();
  if (n == 0) return InvalidFieldError("logits.shape", "vocab must be >= 1, got an empty tensor");

  const kernels::ScanResult scan = logits.deferred_bf16 != nullptr
                                       ? kernels::ScanMaxBf16(logits.deferred_bf16, n, logits.fill)
                                       : kernels::ScanMax(x, n);
  if (scan.first_bad >= 0) {
    return InvalidFieldError("logits.data", absl::StrCat("must be finite or -inf, got ", DescribeBad(x[scan.first_bad]),
                                                         " at index ", scan.first_bad));
  }
  if (scan.max == -std::numeric_limits<float>::infinity()) {
    return InvalidFieldError("logits.data", absl::StrCat("all ", n, " logits are -inf: no token can be drawn"));
  }

  LogitsSummary s;
  s.max_logit = scan.max;
  s.argmax = static_cast<int32_t>(kernels::FindFirst(x, n, scan.max));

  // With d = z - max: ln p = d - ln Z, so H = ln Z - E_p[d] (both terms >= 0: nothing cancels) and
  // varentropy = Var_p[d], taken from deviations to block means (never E[d^2] - E[d]^2).
  double sum_e = 0, mean_d = 0, m2 = 0;
  scratch->block_moments.resize(static_cast<size_t>(3 * kernels::MomentBlocks(n)));
  kernels::ExpMoments(x, n, scan.max, scratch->block_moments.data(), &sum_e, &mean_d, &m2);
  // sum_e >= 1: the max contributes exp(0) = 1 exactly.
  s.log_normalizer = std::log(sum_e);
  const double entropy_nats = s.log_normalizer - mean_d;
  const double var_nats = m2 / sum_e;
  s.entropy = entropy_nats / kLn2;
  s.varentropy = var_nats / (kLn2 * kLn2);
  return s;
}

absl::StatusOr<std::optional<AttentionMetrics>> ComputeAttentionMetrics(const MatrixFloats& attention,
                                                                        MetricsScratch* scratch) {
  return ComputeAttentionMetrics(FloatView{attention.data(), static_cast<int64_t>(attention.shape()[0]),
                                           static_cast<int64_t>(attention.shape()[1])},
                                 scratch);
}

absl::StatusOr<std::optional<AttentionMetrics>> ComputeAttentionMetrics(const FloatView& attention,
                                                                        MetricsScratch* scratch) {
  const int64_t rows = attention.rows;
  const int64_t cols = attention.cols;
  const float* s = attention.data;

  // exp(S - row max) of the used rows, packed; a row's probabilities are its entries times row_inv[u].
  scratch->attn_exp.resize(static_cast<size_t>(rows * cols));
  scratch->row_inv.clear();
  scratch->row_entropy.clear();

  double abs_sum = 0;
  int64_t finite = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = s + r * cols;
    const kernels::RowScan scan =
        attention.deferred_bf16 != nullptr
            ? kernels::ScanRowBf16(attention.deferred_bf16 + 2 * r * cols, cols, attention.fill + r * cols)
            : kernels::ScanRow(row, cols);
    if (scan.first_bad >= 0) {
      return InvalidFieldError(
          "attention.data", absl::StrCat("must be finite or -inf, got ", DescribeBad(row[scan.first_bad]),
                                         " at row ", r, ", position ", scan.first_bad));
    }
    // A row with every position masked says nothing about this head: left out of every metric.
    if (scan.max == -std::numeric_limits<float>::infinity()) continue;
    abs_sum += scan.abs_sum;
    finite += scan.finite_count;

    float* e = scratch->attn_exp.data() + static_cast<int64_t>(scratch->row_inv.size()) * cols;
    double sum_e = 0, sum_ed = 0;
    kernels::ExpShifted(row, cols, scan.max, e, &sum_e, &sum_ed);
    // As for the logits: h = ln Z - E_a[d] with d = S - max, both terms >= 0. The clip of a at 1e-10 only
    // matters when some finite entry has ln a = d - ln Z below ln 1e-10; then the correction pass runs.
    const double log_z = std::log(sum_e);
    const float inv_z = static_cast<float>(1.0 / sum_e);
    double h_nats = log_z - sum_ed / sum_e;
    if (static_cast<double>(scan.min_finite) - scan.max - log_z < kLnAttentionFloor) {
      h_nats -= kernels::ClipCorrection(row, e, cols, scan.max, inv_z, static_cast<float>(log_z), kLnAttentionFloor);
    }
    scratch->row_entropy.push_back(h_nats / kLn2);
    scratch->row_inv.push_back(inv_z);
  }

  const int64_t used = static_cast<int64_t>(scratch->row_entropy.size());
  if (used == 0) return std::optional<AttentionMetrics>();

  AttentionMetrics m;
  m.rows_used = used;
  double mean_h = 0;
  for (double h : scratch->row_entropy) mean_h += h;
  mean_h /= static_cast<double>(used);
  double var_h = 0;
  for (double h : scratch->row_entropy) var_h += (h - mean_h) * (h - mean_h);
  m.entropy = mean_h;
  m.varentropy = var_h / static_cast<double>(used);
  m.interaction_strength = abs_sum / static_cast<double>(finite);
  m.agreement = kernels::AgreementSum(scratch->attn_exp.data(), scratch->row_inv.data(), used, cols) /
                (static_cast<double>(used) * static_cast<double>(cols));
  return std::optional<AttentionMetrics>(m);
}

double MetricValues::Get(v1::Metric metric) const {
  switch (metric) {
    case v1::METRIC_LOGITS_ENTROPY:
      return logits_entropy;
    case v1::METRIC_LOGITS_VARENTROPY:
      return logits_varentropy;
    case v1::METRIC_ATTN_ENTROPY:
      return attention ? attention->entropy : 0.0;
    case v1::METRIC_ATTN_VARENTROPY:
      return attention ? attention->varentropy : 0.0;
    case v1::METRIC_AGREEMENT:
      return attention ? attention->agreement : 0.0;
    case v1::METRIC_INTERACTION_STRENGTH:
      return attention ? attention->interaction_strength : 0.0;
    default:
      return 0.0;
  }
}

}  // namespace samplerd
