#include "core/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "core/field_error.h"
#include "core/reduce_kernels.h"
#include "core/unit_schedule.h"

namespace samplerd {
namespace {

constexpr double kLn2 = 0.69314718055994530942;
// ln(1e-10): docs/contract.md section 3 clips attention probabilities to [1e-10, 1] inside the log.
constexpr float kLnAttentionFloor = -23.025850929940457f;
// How many rows ahead of its exponentials a thread fetches the attention it will scan.
constexpr int64_t kPrefetchRowsAhead = 2;
// The longest row whose successor is scanned inside its exponentials: the row, its exponentials and the next
// row (3 x 16 KB) then share L1; longer rows measured slower that way (docs/benchmarks.md).
constexpr int64_t kMaxColsScannedInside = 4096;
// Where column ranges split: a whole cache line of floats, and every instruction set's lane count, so neither
// thread writes the other's line and each half's columns take the same vector path as in one range.
constexpr int64_t kColumnAlign = 16;

std::string DescribeBad(float v) { return std::isnan(v) ? "NaN" : "+inf"; }

}  // namespace

absl::StatusOr<LogitsSummary> SummarizeLogits(const FloatView& logits, MetricsScratch* scratch) {
  const float* x = logits.data;
  const int64_t n = logits.size();
  if (n == 0) return InvalidFieldError("logits.shape", "vocab must be >= 1, got an empty tensor");

  scratch->logit_block_max.resize(static_cast<size_t>(kernels::MaxBlocks(n)));
  float* block_max = scratch->logit_block_max.data();
  // One read of the logits: max, argmax, block maxima and the moments of d = z - max.
  scratch->block_moments.resize(static_cast<size_t>(kernels::LogitsPassBlockFloats(n)));
  const kernels::LogitsMoments pass =
      logits.deferred_bf16 != nullptr
          ? kernels::LogitsPassBf16(logits.deferred_bf16, n, logits.fill, block_max, scratch->block_moments.data())
          : kernels::LogitsPass(x, n, block_max, scratch->block_moments.data());
  if (pass.first_bad >= 0) {
    return InvalidFieldError("logits.data", absl::StrCat("must be finite or -inf, got ", DescribeBad(x[pass.first_bad]),
                                                         " at index ", pass.first_bad));
  }
  if (pass.max == -std::numeric_limits<float>::infinity()) {
    return InvalidFieldError("logits.data", absl::StrCat("all ", n, " logits are -inf: no token can be drawn"));
  }

  LogitsSummary s;
  s.max_logit = pass.max;
  s.argmax = static_cast<int32_t>(pass.argmax);

  // With d = z - max: ln p = d - ln Z, so H = ln Z - E_p[d] (both terms >= 0: nothing cancels) and
  // varentropy = Var_p[d], taken from deviations to block means (never E[d^2] - E[d]^2).
  const double sum_e = pass.sum_e, mean_d = pass.mean_d, m2 = pass.m2;
  // sum_e >= 1: the max contributes exp(0) = 1 exactly.
  s.log_normalizer = std::log(sum_e);
  const double entropy_nats = s.log_normalizer - mean_d;
  const double var_nats = m2 / sum_e;
  s.entropy = entropy_nats / kLn2;
  s.varentropy = var_nats / (kLn2 * kLn2);
  return s;
}

namespace {

// Rows [r0, r1) of the attention: the scan (and bf16 conversion), the exponentials into row r of
// scratch->attn_exp, the row's entropy. Touches only those rows' slots, so two threads may run disjoint ranges.
// `then` is the first row this thread is expected to take after r1 (-1: none), whose inputs are fetched early.
void AttentionRows(const FloatView& attention, int64_t r0, int64_t r1, int64_t then, MetricsScratch* scratch) {
  const int64_t cols = attention.cols;
  const auto scan_row = [&](int64_t r) {
    return attention.deferred_bf16 != nullptr
               ? kernels::ScanRowBf16(attention.deferred_bf16 + 2 * r * cols, cols, attention.fill + r * cols)
               : kernels::ScanRow(attention.data + r * cols, cols);
  };
  kernels::RowScan next_scan = r0 < r1 ? scan_row(r0) : kernels::RowScan();
  for (int64_t r = r0; r < r1; ++r) {
    const float* row = attention.data + r * cols;
    const kernels::RowScan scan = next_scan;
    AttentionRowStats& stats = scratch->row_stats[static_cast<size_t>(r)];
    stats = AttentionRowStats();
    stats.first_bad = scan.first_bad;
    // A row with every position masked says nothing about this head: left out of every metric.
    if (scan.first_bad >= 0 || scan.max == -std::numeric_limits<float>::infinity()) {
      if (r + 1 < r1) next_scan = scan_row(r + 1);
      continue;
    }
    stats.used = true;
    stats.abs_sum = scan.abs_sum;
    stats.finite = scan.finite_count;

    float* e = scratch->attn_exp.data() + r * cols;
    double sum_e = 0, sum_ed = 0;
    // The row this thread scans two rows from now is fetched while this one's exponentials are computed (one
    // row ahead is too late for the next scan once the exponentials are fast): in this range, or the next one's.
    const int64_t ahead = r + kPrefetchRowsAhead < r1 ? r + kPrefetchRowsAhead
                          : then >= 0                 ? then + (r + kPrefetchRowsAhead - r1)
                                                      : -1;
    const void* next = ahead < 0 || ahead >= attention.rows ? nullptr
                       : attention.deferred_bf16 != nullptr
                           ? static_cast<const void*>(attention.deferred_bf16 + 2 * ahead * cols)
                           : static_cast<const void*>(attention.data + ahead * cols);
    const bool clamp = !(scan.finite_count == cols && scan.min_finite - scan.max >= kernels::kMinShifted);
    // Row r + 1's scan runs inside these exponentials, its reads beside their arithmetic (float32 rows: a bf16
    // row's scan is its conversion, which the exponentials would wait for).
    const bool scan_inside = r + 1 < r1 && attention.deferred_bf16 == nullptr && cols <= kMaxColsScannedInside;
    kernels::ExpShifted(row, cols, scan.max, e, &sum_e, &sum_ed, next,
                        (attention.deferred_bf16 != nullptr ? 2 : 4) * cols, clamp, scan_inside ? row + cols : nullptr,
                        &next_scan);
    if (!scan_inside && r + 1 < r1) next_scan = scan_row(r + 1);
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
    stats.max = scan.max;
  }
}

int64_t AttentionGroups(const FloatView& attention) {
  return (attention.rows + kernels::kAgreementGroup - 1) / kernels::kAgreementGroup;
}

// Agreement group g (rows [8g, 8g + 8)): its rows (AttentionRows), then the column sums of its used rows'
// probabilities into scratch->group_sums while they are still in cache. The unit rows are shared out in;
// `next` is the group this thread expects to take next (-1: none).
void AttentionGroup(const FloatView& attention, int64_t g, int64_t next, MetricsScratch* scratch) {
  const int64_t r0 = g * kernels::kAgreementGroup;
  const int64_t r1 = std::min(r0 + kernels::kAgreementGroup, attention.rows);
  AttentionRows(attention, r0, r1, next < 0 ? -1 : next * kernels::kAgreementGroup, scratch);
  const float* rows[kernels::kAgreementGroup];
  float inv[kernels::kAgreementGroup];
  int64_t n = 0;
  for (int64_t r = r0; r < r1; ++r) {
    const AttentionRowStats& stats = scratch->row_stats[static_cast<size_t>(r)];
    if (!stats.used) continue;
    rows[n] = scratch->attn_exp.data() + r * attention.cols;
    inv[n] = stats.inv;
    ++n;
  }
  kernels::GroupColumnSums(rows, inv, n, attention.cols, scratch->group_sums.data() + g * attention.cols);
}

// Short rows (kExactAgreementCols): the agreement's probabilities, column means and deviations in double, all rows
// on this thread (such a step is small).
void ExactAgreementDeviations(const FloatView& attention, int64_t used, MetricsScratch* scratch) {
  const int64_t cols = attention.cols;
  std::vector<double>& means = scratch->exact_column_means;
  std::fill(means.begin(), means.end(), 0.0);
  for (int64_t r = 0; r < attention.rows; ++r) {
    const AttentionRowStats& stats = scratch->row_stats[static_cast<size_t>(r)];
    if (!stats.used) continue;
    double* p = scratch->exact_probs.data() + r * cols;
    const double inv_z = 1.0 / kernels::ExpDouble(attention.data + r * cols, cols, stats.max, p);
    kernels::ScaleAccumulate(p, cols, inv_z, means.data());
  }
  const double inv_used = 1.0 / static_cast<double>(used);
  for (double& m : means) m *= inv_used;
  for (int64_t r = 0; r < attention.rows; ++r) {
    AttentionRowStats& stats = scratch->row_stats[static_cast<size_t>(r)];
    if (!stats.used) continue;
    stats.deviation = kernels::AbsDeviationDouble(scratch->exact_probs.data() + r * cols, means.data(), cols);
  }
}

// The column means of the used rows' probabilities, columns [c0, c1): each column on its own, so any split of the
// columns gives the same bits.
void ColumnMeans(const FloatView& attention, int64_t used, int64_t c0, int64_t c1, MetricsScratch* scratch) {
  kernels::GroupMeans(scratch->group_sums.data() + c0, AttentionGroups(attention), attention.cols, c1 - c0,
                      1.0f / static_cast<float>(used), scratch->column_means.data() + c0);
}

// Each used row's deviations from the column means, for the rows of group g.
void AttentionDeviations(const FloatView& attention, int64_t g, MetricsScratch* scratch) {
  const int64_t r1 = std::min((g + 1) * kernels::kAgreementGroup, attention.rows);
  for (int64_t r = g * kernels::kAgreementGroup; r < r1; ++r) {
    AttentionRowStats& stats = scratch->row_stats[static_cast<size_t>(r)];
    if (!stats.used) continue;
    stats.deviation = kernels::RowDeviation(scratch->attn_exp.data() + r * attention.cols, stats.inv,
                                            scratch->column_means.data(), attention.cols);
  }
}

// Everything after the rows that needs them all: the first bad row's error, the entropy moments and the
// interaction strength (in row order). Sets m->rows_used (0: no metrics).
absl::Status MergeRows(const FloatView& attention, MetricsScratch* scratch, AttentionMetrics* m) {
  const int64_t cols = attention.cols;
  double abs_sum = 0, sum_h = 0;
  int64_t finite = 0, used = 0;
  for (int64_t r = 0; r < attention.rows; ++r) {
    const AttentionRowStats& stats = scratch->row_stats[static_cast<size_t>(r)];
    if (stats.first_bad >= 0) {
      return InvalidFieldError("attention.data", absl::StrCat("must be finite or -inf, got ",
                                                              DescribeBad(attention.data[r * cols + stats.first_bad]),
                                                              " at row ", r, ", position ", stats.first_bad));
    }
    if (!stats.used) continue;
    ++used;
    abs_sum += stats.abs_sum;
    finite += stats.finite;
    sum_h += stats.entropy;
  }
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

// The agreement from the rows' deviations, added in row order. One row agrees with itself: 0, exactly.
double Agreement(const FloatView& attention, const MetricsScratch& scratch, int64_t used) {
  if (used == 1) return 0.0;
  double total = 0;
  for (const AttentionRowStats& stats : scratch.row_stats) {
    if (stats.used) total += stats.deviation;
  }
  return total / (static_cast<double>(used) * static_cast<double>(attention.cols));
}

void PrepareAttention(const FloatView& attention, MetricsScratch* scratch) {
  scratch->attn_exp.resize(static_cast<size_t>(attention.size()));
  scratch->row_stats.resize(static_cast<size_t>(attention.rows));
  scratch->group_sums.resize(static_cast<size_t>(AttentionGroups(attention) * attention.cols));
  scratch->column_means.resize(static_cast<size_t>(attention.cols));
  if (attention.cols < kExactAgreementCols) {
    scratch->exact_probs.resize(static_cast<size_t>(attention.size()));
    scratch->exact_column_means.resize(static_cast<size_t>(attention.cols));
  }
}

// The attention's passes, shared out by UnitSchedule (serial without a fork_join): `head` and then row groups
// on this thread, row groups from the back on the other one; the merge; the agreement's deviations, each on the
// thread that produced its rows, latest first. `head`'s error is returned first (a step reports its logits' error
// first).
absl::Status AttentionPasses(const FloatView& attention, absl::FunctionRef<absl::Status()> head, ForkJoin* fork_join,
                             MetricsScratch* scratch, std::optional<AttentionMetrics>* out) {
  out->reset();
  PrepareAttention(attention, scratch);
  UnitSchedule schedule(AttentionGroups(attention), fork_join);
  absl::Status head_status;
  schedule.Run([&] { head_status = head(); },
               [&](int64_t g, int64_t next) { AttentionGroup(attention, g, next, scratch); });
  if (!head_status.ok()) return head_status;

  AttentionMetrics m;
  if (absl::Status merged = MergeRows(attention, scratch, &m); !merged.ok()) return merged;
  if (m.rows_used == 0) return absl::OkStatus();
  if (m.rows_used == 1) {
    // Agreement() needs no deviations.
  } else if (attention.cols < kExactAgreementCols) {
    ExactAgreementDeviations(attention, m.rows_used, scratch);
  } else {
    // Half the columns each: the group sums are read once, half of them from the other core's cache.
    schedule.RunHalves(attention.cols, kColumnAlign,
                       [&](int64_t c0, int64_t c1) { ColumnMeans(attention, m.rows_used, c0, c1, scratch); });
    schedule.RunAsPlaced([&](int64_t g) { AttentionDeviations(attention, g, scratch); });
  }
  m.agreement = Agreement(attention, *scratch, m.rows_used);
  *out = m;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::optional<AttentionMetrics>> ComputeAttentionMetrics(const FloatView& attention,
                                                                        MetricsScratch* scratch) {
  std::optional<AttentionMetrics> m;
  if (absl::Status s = AttentionPasses(
          attention, [] { return absl::OkStatus(); }, nullptr, scratch, &m);
      !s.ok()) {
    return s;
  }
  return m;
}

absl::Status ComputeStepMetrics(const FloatView& logits, const FloatView* attention, MetricsScratch* scratch,
                                ForkJoin* fork_join, LogitsSummary* summary,
                                std::optional<AttentionMetrics>* attention_metrics) {
  const auto logits_pass = [&]() -> absl::Status {
    absl::StatusOr<LogitsSummary> s = SummarizeLogits(logits, scratch);
    if (!s.ok()) return s.status();
    *summary = *s;
    return absl::OkStatus();
  };
  if (attention == nullptr) {
    attention_metrics->reset();
    return logits_pass();
  }
  // A small step is done before a second thread would have started and earned its wake-up (kMinSharedAttention).
  return AttentionPasses(*attention, logits_pass, attention->size() < kMinSharedAttention ? nullptr : fork_join,
                         scratch, attention_metrics);
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
