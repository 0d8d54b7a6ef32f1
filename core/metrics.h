// The six uncertainty metrics of Entropix (docs/contract.md section 3).
//
// `SummarizeLogits` makes the passes over the vocabulary that everything downstream needs (max, argmax,
// log-normaliser, entropy, varentropy); `ComputeAttentionMetrics` does the same for the attention rows.
//
// Numerics (tests/golden/README.md, "Tolerances"): elementwise math is float32, but every reduction accumulates
// float32 lanes over short blocks (16 elements per lane, core/reduce_kernels.h) and adds the block sums in double. A
// float32 accumulator running over the whole vocabulary misses the tolerances by 100x; blocks keep each float partial
// sum short. Varentropy is taken from deviations to block means merged pairwise (Chan et al.), never E[x^2] - E[x]^2,
// which cancels at high entropy.
//
//   MetricsScratch scratch;
//   absl::StatusOr<LogitsSummary> s = SummarizeLogits(logits_view, &scratch);
//   absl::StatusOr<std::optional<AttentionMetrics>> a = ComputeAttentionMetrics(attn_view, &scratch);
#ifndef SAMPLERD_CORE_METRICS_H_
#define SAMPLERD_CORE_METRICS_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "core/aligned_vector.h"
#include "core/fork_join.h"
#include "core/tensor_view.h"
#include "samplerd/v1/profile.pb.h"

namespace samplerd {

// What the attention pass finds in one row (kept per row so that rows can be scanned in any order, on any
// thread, and still be combined in row order).
struct AttentionRowStats {
  int64_t first_bad = -1;  // position of the first NaN / +inf, -1 when none
  bool used = false;       // false when every position is -inf: the row is left out of every metric
  double abs_sum = 0;      // sum |S| over the finite entries
  int64_t finite = 0;
  double entropy = 0;    // bits
  float inv = 0;         // 1 / sum of the row's exponentials
  float max = 0;         // the row's largest score, which the exponentials are taken from
  double deviation = 0;  // sum over columns of |a - column mean of a|, for the agreement
};

// Reusable buffers of the metric kernels (grown once, then reused).
struct MetricsScratch {
  std::vector<float> block_moments;    // per block of the logits: (W_b, M_b, Q_b), and LogitsPass's shift
  std::vector<float> logit_block_max;  // the logits' block maxima (kernels::LogitsPass), for the sampler chain
  AlignedVector<float> attn_exp;       // exp(S - row max), [rows, kv_len]
  std::vector<AttentionRowStats> row_stats;
  std::vector<float> group_sums;    // per 8-row group, the column sums of its probabilities, [groups, kv_len]
  std::vector<float> column_means;  // the column means of the probabilities over the used rows, [kv_len]
  // For rows shorter than kExactAgreementCols: the probabilities in double [rows, kv_len], their column means.
  std::vector<double> exact_probs;
  std::vector<double> exact_column_means;
};

// Rows shorter than this have their agreement taken in double: probabilities from a double exp, column means and
// deviations in double. A float32 probability is off by up to about an ulp (its exp's error and rounding), which
// moves the agreement by ~6e-8 / kv_len: above the contract's 1e-9 absolute tolerance for short rows whose
// agreement is near 0 (identical rows read as 1e-9 to 4e-8, rows 1e-6 apart miss their value by as much). From
// this length on, the float32 path is within a few 1e-10. The double path costs ~1 ns per entry, on short rows only.
inline constexpr int64_t kExactAgreementCols = 256;

// What one pass over the logits yields.
struct LogitsSummary {
  float max_logit = 0;        // largest finite logit
  int32_t argmax = 0;         // its lowest index
  double log_normalizer = 0;  // ln sum_i exp(z_i - max_logit), in nats
  double entropy = 0;         // bits
  double varentropy = 0;      // bits^2

  // Natural-log probability of token `id` under the unmodified logits.
  double LogProb(float z) const { return static_cast<double>(z) - max_logit - log_normalizer; }
};

// Entropy, varentropy (bits, bits^2), max and argmax of softmax(logits), converting a deferred bf16 tensor in
// its first pass (FloatView). Rejects (INVALID_ARGUMENT, field "logits") NaN or +inf anywhere, and all entries
// -inf.
absl::StatusOr<LogitsSummary> SummarizeLogits(const FloatView& logits, MetricsScratch* scratch);

// The attention metrics over the rows that are not entirely -inf.
struct AttentionMetrics {
  double entropy = 0;               // mean over rows of the row entropy (bits)
  double varentropy = 0;            // population variance over rows of the row entropy
  double agreement = 0;             // mean |A - mean over rows of A|
  double interaction_strength = 0;  // mean |S| over finite entries
  int64_t rows_used = 0;
};

// Attention metrics of `attention` ([rows, kv_len]); nullopt when every row is entirely -inf. Rejects
// (INVALID_ARGUMENT, field "attention.data") NaN or +inf entries.
absl::StatusOr<std::optional<AttentionMetrics>> ComputeAttentionMetrics(const FloatView& attention,
                                                                        MetricsScratch* scratch);

// Below this many attention elements (1 MiB of float32) ComputeStepMetrics keeps the step on one thread: the
// other thread must first be woken (10-40 us on a VM) and the rows' column sums cross between caches, which
// a smaller step does not earn back (the threshold's measurements: docs/benchmarks.md).
inline constexpr int64_t kMinSharedAttention = int64_t{1} << 18;

// SummarizeLogits and, when `attention` is set, ComputeAttentionMetrics of one step, with the passes shared
// between this thread and `fork_join`'s other one (core/unit_schedule.h): the logits here while the other thread
// takes groups of 8 attention rows (exponentials, entropies, column sums), then this one takes groups too; then
// each takes the agreement deviations of its own rows. The results are bit-identical to the two functions' (whatever
// ran where: rows, groups and deviations are combined in row order), and so are the errors: the logits' first.
absl::Status ComputeStepMetrics(const FloatView& logits, const FloatView* attention, MetricsScratch* scratch,
                                ForkJoin* fork_join, LogitsSummary* summary,
                                std::optional<AttentionMetrics>* attention_metrics);

// All metrics of a step, as the strategy reads them.
struct MetricValues {
  double logits_entropy = 0;
  double logits_varentropy = 0;
  std::optional<AttentionMetrics> attention;

  // The value a bound or formula uses: absent attention metrics read as 0 (docs/contract.md section 4).
  double Get(v1::Metric metric) const;
};

}  // namespace samplerd

#endif  // SAMPLERD_CORE_METRICS_H_
