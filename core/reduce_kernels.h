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
//
// The kernels themselves are listed, with their contracts, in core/kernel_list.inc.
//
//   const ScanResult s = ScanMax(x, n, /*block_max=*/nullptr);
//   double sum_e = 0, sum_ed = 0;
//   ExpShifted(x, n, s.max, /*e=*/nullptr, &sum_e, &sum_ed, nullptr, 0, /*clamp=*/true, nullptr, nullptr);
#ifndef SAMPLERD_CORE_REDUCE_KERNELS_H_
#define SAMPLERD_CORE_REDUCE_KERNELS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace samplerd::kernels {

struct ScanResult {
  float max = 0;           // largest non-NaN value (-inf when all are -inf)
  float min = 0;           // smallest value (-inf when any is -inf; unspecified when any is NaN)
  int64_t argmax = 0;      // lowest index holding it (0 when all are -inf; unspecified with NaN)
  int64_t first_bad = -1;  // index of the first NaN or +inf, -1 when none
};

// Block maxima: the max of each kMaxBlock consecutive entries, MaxBlocks(n) of them (the last block may be
// short). The scan that finds the max has them for free; the top-k selection then skips every block whose
// max cannot enter, and the argmax is looked for only in the first block that holds the max.
inline constexpr int64_t kMaxBlock = 256;
inline int64_t MaxBlocks(int64_t n) { return (n + kMaxBlock - 1) / kMaxBlock; }

// What ScanRow finds in an attention row.
struct RowScan {
  float max = 0;
  float min_finite = 0;  // smallest entry that is not -inf (+inf when none)
  int64_t first_bad = -1;
  double abs_sum = 0;
  int64_t finite_count = 0;
};

// Shifted values are clamped here so that -inf and huge negative inputs give e = 0 and e * d = 0 (never
// 0 * -inf = NaN). exp(-88) is a float32 denormal (the smallest normal is exp(-87.34)); the kernels' exp gives
// exactly 0 at this value (core/simd_exp.h), which changes no sum of at least exp(0) = 1.
inline constexpr float kMinShifted = -88.03125f;

// Blocks of ExpMoments' `blocks` (3 floats each).
inline int64_t MomentBlocks(int64_t n) { return n / 64 + 1; }

// What LogitsPass finds: ScanMax's max, argmax and first bad index (the others are unspecified when
// first_bad >= 0), and ExpMoments' W = sum e, the e-weighted mean of d and M2, with d = x - max.
struct LogitsMoments {
  float max = 0;
  int64_t argmax = 0;
  int64_t first_bad = -1;
  double sum_e = 0;
  double mean_d = 0;
  double m2 = 0;
};

// Floats of LogitsPass's `blocks`: per block, its weight, mean, squared deviation and the shift they were taken at.
inline int64_t LogitsPassBlockFloats(int64_t n) { return 4 * MomentBlocks(n); }

// Ints of KthLargest's `keys` for n values: n rounded up to a whole number of 64-byte vectors.
inline int64_t KthLargestKeys(int64_t n) { return (n + 15) / 16 * 16; }

// Rows per agreement group (GroupColumnSums).
inline constexpr int64_t kAgreementGroup = 8;

// The kernels (documented in the list): each forwards to the active table.
#define SAMPLERD_KERNEL(Result, Name, Params, Args) Result Name Params;
#include "core/kernel_list.inc"
#undef SAMPLERD_KERNEL

// The kernels of one instruction set (MakeTable in core/reduce_kernels_impl.h), one field per kernel.
struct KernelTable {
  const char* name;
#define SAMPLERD_KERNEL(Result, Name, Params, Args) Result(*Name) Params;
#include "core/kernel_list.inc"
#undef SAMPLERD_KERNEL
};

// The table in use ("sse2", "avx2" or "avx512" in its name): SAMPLERD_SIMD's when it names one this CPU runs, else
// the widest.
const KernelTable& ActiveKernels();

// OK when SAMPLERD_SIMD is unset or names a table this CPU runs; otherwise INVALID_ARGUMENT naming the value and the
// tables it could name. A pin is there to make replicas bit-identical, so a server checks it at start and stops
// rather than run other kernels than the ones pinned.
absl::Status CheckKernelPin();

// Every table this CPU can run, narrowest first (for tests that compare instruction sets).
std::vector<const KernelTable*> AvailableKernels();

}  // namespace samplerd::kernels

#endif  // SAMPLERD_CORE_REDUCE_KERNELS_H_
