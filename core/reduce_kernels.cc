#include "core/reduce_kernels.h"

#include <cstdlib>
#include <cstring>

#include "xsimd/xsimd.hpp"

namespace samplerd::kernels {
namespace detail {
const KernelTable& Sse2Table();
const KernelTable& Avx2Table();
const KernelTable& Avx512Table();
}  // namespace detail

std::vector<const KernelTable*> AvailableKernels() {
  const auto cpu = xsimd::available_architectures();
  std::vector<const KernelTable*> tables = {&detail::Sse2Table()};
  if (cpu.fma3_avx2) tables.push_back(&detail::Avx2Table());
  if (cpu.avx512bw && cpu.avx512dq) tables.push_back(&detail::Avx512Table());
  return tables;
}

const KernelTable& ActiveKernels() {
  static const KernelTable* const kActive = [] {
    const std::vector<const KernelTable*> tables = AvailableKernels();
    if (const char* pinned = std::getenv("SAMPLERD_SIMD"); pinned != nullptr) {
      for (const KernelTable* t : tables) {
        if (std::strcmp(t->name, pinned) == 0) return t;
      }
    }
    return tables.back();
  }();
  return *kActive;
}

ScanResult ScanMax(const float* x, int64_t n, float* block_max) { return ActiveKernels().scan_max(x, n, block_max); }

int64_t FindFirst(const float* x, int64_t n, float value) { return ActiveKernels().find_first(x, n, value); }

int64_t FindFirstGreater(const float* x, int64_t from, int64_t n, float threshold) {
  return ActiveKernels().find_first_greater(x, from, n, threshold);
}

void ExpShifted(const float* x, int64_t n, float shift, float* e, double* sum_e, double* sum_ed, const void* next,
                int64_t next_bytes, bool clamp) {
  ActiveKernels().exp_shifted(x, n, shift, e, sum_e, sum_ed, next, next_bytes, clamp);
}

RowScan ScanRow(const float* x, int64_t n) { return ActiveKernels().scan_row(x, n); }

ScanResult ScanMaxBf16(const char* src, int64_t n, float* out, float* block_max) {
  return ActiveKernels().scan_max_bf16(src, n, out, block_max);
}

RowScan ScanRowBf16(const char* src, int64_t n, float* out) { return ActiveKernels().scan_row_bf16(src, n, out); }

void ExpMoments(const float* x, int64_t n, float shift, float* blocks, double* sum_e, double* mean_d,
                double* m2, bool clamp) {
  ActiveKernels().exp_moments(x, n, shift, blocks, sum_e, mean_d, m2, clamp);
}

double ClipCorrection(const float* x, const float* e, int64_t n, float shift, float inv_sum, float log_sum,
                      float ln_floor) {
  return ActiveKernels().clip_correction(x, e, n, shift, inv_sum, log_sum, ln_floor);
}

void GroupColumnSums(const float* const* rows, const float* inv, int64_t n, int64_t cols, float* out) {
  ActiveKernels().group_column_sums(rows, inv, n, cols, out);
}

void GroupMeans(const float* sums, int64_t groups, int64_t stride, int64_t cols, float scale, float* means) {
  ActiveKernels().group_means(sums, groups, stride, cols, scale, means);
}

double RowDeviation(const float* e, float inv, const float* means, int64_t cols) {
  return ActiveKernels().row_deviation(e, inv, means, cols);
}

double ExpDouble(const float* x, int64_t n, float shift, double* out) {
  return ActiveKernels().exp_double(x, n, shift, out);
}

void ScaleAccumulate(double* p, int64_t n, double scale, double* sums) {
  ActiveKernels().scale_accumulate(p, n, scale, sums);
}

double AbsDeviationDouble(const double* p, const double* means, int64_t n) {
  return ActiveKernels().abs_deviation_double(p, means, n);
}

}  // namespace samplerd::kernels

namespace samplerd::kernels {
void ConvertBf16(const char* src, int64_t n, float* out) { ActiveKernels().convert_bf16(src, n, out); }
}  // namespace samplerd::kernels
