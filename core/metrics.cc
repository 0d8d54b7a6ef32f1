#include "core/metrics.h"

#include <algorithm>
#include <atomic>
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

namespace {

// Rows [r0, r1) of the attention: the scan (and bf16 conversion), the exponentials into row r of
// scratch->attn_exp, the row's entropy. Touches only those rows' slots, so two threads may run disjoint ranges.
void AttentionRows(const FloatView& attention, int64_t r0, int64_t r1, MetricsScratch* scratch) {
  const int64_t cols = attention.cols;
  for (int64_t r = r0; r < r1; ++r) {
    const float* row = attention.data + r * cols;
    const kernels::RowScan scan =
        attention.deferred_bf16 != nullptr
            ? kernels::ScanRowBf16(attention.deferred_bf16 + 2 * r * cols, cols, attention.fill + r * cols)
            : kernels::ScanRow(row, cols);
    AttentionRowStats& stats = scratch->row_stats[static_cast<size_t>(r)];
    stats = AttentionRowStats();
    stats.first_bad = scan.first_bad;
    // A row with every position masked says nothing about this head: left out of every metric.
    if (scan.first_bad >= 0 || scan.max == -std::numeric_limits<float>::infinity()) continue;
    stats.used = true;
    stats.abs_sum = scan.abs_sum;
    stats.finite = scan.finite_count;

    float* e = scratch->attn_exp.data() + r * cols;
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
    stats.entropy = h_nats / kLn2;
    stats.inv = inv_z;
  }
}

// Everything after the rows: the first bad row's error, the used rows packed to the front of attn_exp, the
// entropy moments and the interaction strength, all in row order. Sets m->rows_used (0: no metrics).
absl::Status MergeRows(const FloatView& attention, MetricsScratch* scratch, AttentionMetrics* m) {
  const int64_t cols = attention.cols;
  scratch->row_inv.clear();
  double abs_sum = 0, sum_h = 0;
  int64_t finite = 0;
  for (int64_t r = 0; r < attention.rows; ++r) {
    const AttentionRowStats& stats = scratch->row_stats[static_cast<size_t>(r)];
    if (stats.first_bad >= 0) {
      return InvalidFieldError(
          "attention.data", absl::StrCat("must be finite or -inf, got ",
                                         DescribeBad(attention.data[r * cols + stats.first_bad]), " at row ", r,
                                         ", position ", stats.first_bad));
    }
    if (!stats.used) continue;
    const int64_t u = static_cast<int64_t>(scratch->row_inv.size());
    // Only when a row before was masked: rare, and a copy of the rows after it.
    if (u != r) {
      std::copy_n(scratch->attn_exp.data() + r * cols, cols, scratch->attn_exp.data() + u * cols);
    }
    scratch->row_inv.push_back(stats.inv);
    abs_sum += stats.abs_sum;
    finite += stats.finite;
    sum_h += stats.entropy;
  }
  const int64_t used = static_cast<int64_t>(scratch->row_inv.size());
  m->rows_used = used;
  if (used == 0) return absl::OkStatus();
  const double mean_h = sum_h / static_cast<double>(used);
  double var_h = 0;
  for (const AttentionRowStats& stats : scratch->row_stats) {
    if (stats.used) var_h += (stats.entropy - mean_h) * (stats.entropy - mean_h);
  }
  m->entropy = mean_h;
  m->varentropy = var_h / static_cast<double>(used);
  m->interaction_strength = abs_sum / static_cast<double>(finite);
  return absl::OkStatus();
}

int64_t AgreementParts(int64_t cols) { return (cols + kAgreementColumns - 1) / kAgreementColumns; }

// The agreement sums of column parts [p0, p1) into scratch->agreement_parts.
void AgreementColumns(int64_t cols, int64_t used, int64_t p0, int64_t p1, MetricsScratch* scratch) {
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t c0 = p * kAgreementColumns;
    const int64_t width = std::min(kAgreementColumns, cols - c0);
    scratch->agreement_parts[static_cast<size_t>(p)] =
        kernels::AgreementSum(scratch->attn_exp.data() + c0, scratch->row_inv.data(), used, width, cols);
  }
}

double AgreementTotal(const MetricsScratch& scratch) {
  double total = 0;
  for (double part : scratch.agreement_parts) total += part;
  return total;
}

// Indices [0, n) handed out from both ends: this thread takes from the front (so that alone it goes in order),
// the other from the back, until they meet. Each side's share adapts to how late the other starts, and in steady streaming each index tends to
// stay with the same thread from step to step (so do the cache lines its pass writes).
class TwoEndedRange {
 public:
  explicit TwoEndedRange(int64_t n) : ends_(static_cast<uint64_t>(n)) {}
  // The next index from the front (the low 32 bits count the front, the high ones the back), or -1.
  int64_t TakeFront() {
    uint64_t ends = ends_.load(std::memory_order_relaxed);
    for (;;) {
      const uint64_t front = ends >> 32, back = ends & 0xffffffffu;
      if (front >= back) return -1;
      if (ends_.compare_exchange_weak(ends, ((front + 1) << 32) | back, std::memory_order_relaxed)) {
        return static_cast<int64_t>(front);
      }
    }
  }
  int64_t TakeBack() {
    uint64_t ends = ends_.load(std::memory_order_relaxed);
    for (;;) {
      const uint64_t front = ends >> 32, back = ends & 0xffffffffu;
      if (front >= back) return -1;
      if (ends_.compare_exchange_weak(ends, (front << 32) | (back - 1), std::memory_order_relaxed)) {
        return static_cast<int64_t>(back - 1);
      }
    }
  }

 private:
  std::atomic<uint64_t> ends_;  // front << 32 | back
};

void PrepareAttention(const FloatView& attention, MetricsScratch* scratch) {
  scratch->attn_exp.resize(static_cast<size_t>(attention.size()));
  scratch->row_stats.resize(static_cast<size_t>(attention.rows));
  scratch->row_inv.reserve(static_cast<size_t>(attention.rows));
  scratch->agreement_parts.resize(static_cast<size_t>(AgreementParts(attention.cols)));
}

}  // namespace

absl::StatusOr<std::optional<AttentionMetrics>> ComputeAttentionMetrics(const FloatView& attention,
                                                                        MetricsScratch* scratch) {
  PrepareAttention(attention, scratch);
  AttentionRows(attention, 0, attention.rows, scratch);
  AttentionMetrics m;
  if (absl::Status s = MergeRows(attention, scratch, &m); !s.ok()) return s;
  if (m.rows_used == 0) return std::optional<AttentionMetrics>();
  AgreementColumns(attention.cols, m.rows_used, 0, AgreementParts(attention.cols), scratch);
  m.agreement = AgreementTotal(*scratch) / (static_cast<double>(m.rows_used) * static_cast<double>(attention.cols));
  return std::optional<AttentionMetrics>(m);
}

absl::Status ComputeStepMetrics(const FloatView& logits, const FloatView* attention, MetricsScratch* scratch,
                                ForkJoin* fork_join, LogitsSummary* summary,
                                std::optional<AttentionMetrics>* attention_metrics) {
  attention_metrics->reset();
  if (attention == nullptr) {
    absl::StatusOr<LogitsSummary> s = SummarizeLogits(logits, scratch);
    if (!s.ok()) return s.status();
    *summary = *s;
    return absl::OkStatus();
  }
  PrepareAttention(*attention, scratch);
  // A small step is done before a second thread would have started (S: 0.94x shared in core_benchmark).
  SerialForkJoin serial;
  if (attention->size() < kMinSharedAttention) fork_join = &serial;
  // Rows, then agreement column parts, are handed out one at a time from both ends of a range (TwoEndedRange),
  // so the two threads balance themselves however late the other one starts (or if it never does). This thread
  // starts with the logits, the other with the last rows.
  TwoEndedRange rows(attention->rows);
  absl::StatusOr<LogitsSummary> s;
  fork_join->Run(
      [&] {
        s = SummarizeLogits(logits, scratch);
        for (int64_t r; (r = rows.TakeFront()) >= 0;) AttentionRows(*attention, r, r + 1, scratch);
      },
      [&] {
        for (int64_t r; (r = rows.TakeBack()) >= 0;) AttentionRows(*attention, r, r + 1, scratch);
      });
  if (!s.ok()) return s.status();
  *summary = *s;

  AttentionMetrics m;
  if (absl::Status merged = MergeRows(*attention, scratch, &m); !merged.ok()) return merged;
  if (m.rows_used == 0) return absl::OkStatus();
  const int64_t cols = attention->cols, used = m.rows_used;
  TwoEndedRange parts(AgreementParts(cols));
  if (AgreementParts(cols) == 1) {
    AgreementColumns(cols, used, 0, 1, scratch);
  } else {
    fork_join->Run(
        [&] {
          for (int64_t p; (p = parts.TakeFront()) >= 0;) AgreementColumns(cols, used, p, p + 1, scratch);
        },
        [&] {
          for (int64_t p; (p = parts.TakeBack()) >= 0;) AgreementColumns(cols, used, p, p + 1, scratch);
        });
  }
  m.agreement = AgreementTotal(*scratch) / (static_cast<double>(used) * static_cast<double>(cols));
  *attention_metrics = m;
  return absl::OkStatus();
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
