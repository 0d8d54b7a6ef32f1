// Hot reductions over float32 arrays, written with xsimd (xtensor 0.24's reducers run scalar).
//
// The instruction set is chosen once at run time (AVX-512, AVX2+FMA or SSE2, the best the CPU has), so
// portable binaries run the widest kernels; SAMPLERD_SIMD=sse2|avx2|avx512 in the environment pins it (for
// example to get bit-identical results across a fleet of mixed CPUs: sums and exp round differently per
// instruction set).
//
// Accumulation contract (pinned by tests/core/reduce_kernels_test.cc): each float32 lane sums at most 16
// elements, then the block's total is added into a double. Results are deterministic for a given
// build (the order of operations does not depend on threads or alignment).
#ifndef SAMPLERD_CORE_REDUCE_KERNELS_H_
#define SAMPLERD_CORE_REDUCE_KERNELS_H_

#include <cstdint>
#include <vector>

namespace samplerd::kernels {

struct ScanResult {
  float max = 0;            // largest non-NaN value (-inf when all are -inf)
  float min = 0;            // smallest value (-inf when any is -inf; unspecified when any is NaN)
  int64_t argmax = 0;       // lowest index holding it (0 when all are -inf; unspecified with NaN)
  int64_t first_bad = -1;   // index of the first NaN or +inf, -1 when none
};

// Block maxima: the max of each kMaxBlock consecutive entries, MaxBlocks(n) of them (the last block may be
// short). The scan that finds the max has them for free; the top-k selection then skips every block whose
// max cannot enter, and the argmax is looked for only in the first block that holds the max.
inline constexpr int64_t kMaxBlock = 256;
inline int64_t MaxBlocks(int64_t n) { return (n + kMaxBlock - 1) / kMaxBlock; }

// Max and argmax over x[0, n) and the first NaN / +inf; the block maxima into block_max when not null.
ScanResult ScanMax(const float* x, int64_t n, float* block_max = nullptr);

// One pass over an attention row: ScanMax plus sum |x| and count over the finite entries.
struct RowScan {
  float max = 0;
  float min_finite = 0;  // smallest entry that is not -inf (+inf when none)
  int64_t first_bad = -1;
  double abs_sum = 0;
  int64_t finite_count = 0;
};
RowScan ScanRow(const float* x, int64_t n);

// ScanMax and ScanRow over n bfloat16 values at src (little-endian), converting them into out[0, n) on the
// way: the first pass over a bf16 tensor is also its conversion, so the received bytes are read once.
ScanResult ScanMaxBf16(const char* src, int64_t n, float* out, float* block_max = nullptr);
RowScan ScanRowBf16(const char* src, int64_t n, float* out);

// Index of the first element equal to `value` (n when none).
int64_t FindFirst(const float* x, int64_t n, float value);

// Index of the first element in [from, n) greater than `threshold` (n when none).
int64_t FindFirstGreater(const float* x, int64_t from, int64_t n, float threshold);

// Shifted values are clamped here so that -inf and huge negative inputs give e = 0 and e * d = 0 (never
// 0 * -inf = NaN). exp(-88) is a float32 denormal (the smallest normal is exp(-87.34)); the kernels' exp
// flushes such values to exactly 0, which changes no sum of at least exp(0) = 1.
inline constexpr float kMinShifted = -88.0f;

// e[i] = exp(max(x[i] - shift, kMinShifted)) (float32), and in double: sum e, sum e * d with
// d = max(x[i] - shift, kMinShifted). While it computes, it prefetches the `next_bytes` (at most 4 n) bytes
// at `next` towards the cache: the next attention row, which the row scan would otherwise wait for (the
// exp is bound by arithmetic, the scan by memory, so the two overlap).
// `clamp` false: the caller knows every x[i] - shift >= kMinShifted (no -inf; ScanRow's min_finite and count,
// or ScanMax's min, tell), and the kernel skips the clamp; the results are the same bits.
void ExpShifted(const float* x, int64_t n, float shift, float* e, double* sum_e, double* sum_ed,
                const void* next = nullptr, int64_t next_bytes = 0, bool clamp = true);

// With d and e as above, in one pass: W = sum e, the e-weighted mean of d and M2 = sum e * (d - mean)^2,
// from per-block moments so that the variance never cancels. `blocks` holds 3 * MomentBlocks(n) floats.
void ExpMoments(const float* x, int64_t n, float shift, float* blocks, double* sum_e, double* mean_d, double* m2,
                bool clamp = true);
inline int64_t MomentBlocks(int64_t n) { return n / 64 + 1; }

// For one attention row with e from ExpShifted, a = e * inv_sum and ln a = d - log_sum: the part of the
// unclipped entropy -sum a ln a that the clip of ln a at ln_floor removes, sum_{ln a < ln_floor} a (ln_floor - ln a).
double ClipCorrection(const float* x, const float* e, int64_t n, float shift, float inv_sum, float log_sum,
                      float ln_floor);

// The agreement, mean over rows r and columns k of |a[r,k] - mean_r a[r,k]| with a = e * inv[r], in three
// kernels that never read another group's rows: the column sums of each group of kAgreementGroup rows
// (GroupColumnSums: out[k] = sum_j rows[j][k] * inv[j], n <= kAgreementGroup rows, fused multiply-adds in j
// order), taken right after the group's exponentials are written; the column means (GroupMeans: the groups'
// sums Kahan-compensated in group order, times `scale`); and each row's deviations from them (RowDeviation).
inline constexpr int64_t kAgreementGroup = 8;
void GroupColumnSums(const float* const* rows, const float* inv, int64_t n, int64_t cols, float* out);
void GroupMeans(const float* sums, int64_t groups, int64_t stride, int64_t cols, float scale, float* means);
double RowDeviation(const float* e, float inv, const float* means, int64_t cols);

// out[i] = exp(double(x[i]) - shift) in double, exactly 0 for x[i] = -inf; returns sum out[i]. For the agreement of
// short rows, where float32 probabilities are too coarse (core/metrics.h, kExactAgreementCols).
double ExpDouble(const float* x, int64_t n, float shift, double* out);
// p[k] *= scale, then sums[k] += p[k] (double).
void ScaleAccumulate(double* p, int64_t n, double scale, double* sums);
// sum_k |p[k] - means[k]| (double).
double AbsDeviationDouble(const double* p, const double* means, int64_t n);

// out[i] = the bfloat16 at src + 2 i (little-endian), exactly.
void ConvertBf16(const char* src, int64_t n, float* out);

// The kernels of one instruction set (see reduce_kernels_impl.h).
struct KernelTable {
  const char* name;
  ScanResult (*scan_max)(const float*, int64_t, float*);
  RowScan (*scan_row)(const float*, int64_t);
  ScanResult (*scan_max_bf16)(const char*, int64_t, float*, float*);
  RowScan (*scan_row_bf16)(const char*, int64_t, float*);
  int64_t (*find_first)(const float*, int64_t, float);
  int64_t (*find_first_greater)(const float*, int64_t, int64_t, float);
  void (*exp_shifted)(const float*, int64_t, float, float*, double*, double*, const void*, int64_t, bool);
  void (*exp_moments)(const float*, int64_t, float, float*, double*, double*, double*, bool);
  double (*clip_correction)(const float*, const float*, int64_t, float, float, float, float);
  void (*group_column_sums)(const float* const*, const float*, int64_t, int64_t, float*);
  void (*group_means)(const float*, int64_t, int64_t, int64_t, float, float*);
  double (*row_deviation)(const float*, float, const float*, int64_t);
  double (*exp_double)(const float*, int64_t, float, double*);
  void (*scale_accumulate)(double*, int64_t, double, double*);
  double (*abs_deviation_double)(const double*, const double*, int64_t);
  void (*convert_bf16)(const char*, int64_t, float*);
};

// The table in use ("sse2", "avx2" or "avx512" in its name).
const KernelTable& ActiveKernels();

// Every table this CPU can run, narrowest first (for tests that compare instruction sets).
std::vector<const KernelTable*> AvailableKernels();

}  // namespace samplerd::kernels

#endif  // SAMPLERD_CORE_REDUCE_KERNELS_H_
