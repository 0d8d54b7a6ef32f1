// Implementation of core/reduce_kernels.h for one instruction set, instantiated by
// reduce_kernels_{sse2,avx2,avx512}.cc, each compiled with its own -m flags. Include nowhere else.
//
// Only xsimd operations templated on Arch and plain C expressions appear here: an inline non-template helper
// (std::max, say) compiled with -mavx512f could be picked by the linker for the SSE2 build too and crash
// older CPUs.
#ifndef SAMPLERD_CORE_REDUCE_KERNELS_IMPL_H_
#define SAMPLERD_CORE_REDUCE_KERNELS_IMPL_H_

#include <math.h>

#include <cstdint>

#include "core/reduce_kernels.h"
#include "xsimd/xsimd.hpp"

namespace samplerd::kernels::detail {

template <class Arch>
struct Impl {
  using Batch = xsimd::batch<float, Arch>;
  static constexpr int64_t kLanes = static_cast<int64_t>(Batch::size);
  // Elements per float partial sum (core/metrics.h): a multiple of every lane count.
  static constexpr int64_t kBlock = 64;
  static_assert(kBlock % kLanes == 0, "a block must hold whole batches");

  static float HorizontalMax(const Batch& b) {
    alignas(64) float lanes[kLanes];
    b.store_aligned(lanes);
    float m = lanes[0];
    for (int64_t i = 1; i < kLanes; ++i) m = lanes[i] > m ? lanes[i] : m;
    return m;
  }
  static float Clamp(float d) { return d < kMinShifted ? kMinShifted : d; }
  static bool Bad(float v) { return v != v || v == INFINITY; }

  static ScanResult ScanMax(const float* x, int64_t n) {
    ScanResult result;
    Batch vmax(-INFINITY);
    auto bad = Batch(0.0f) != Batch(0.0f);
    const Batch inf(INFINITY);
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
      Batch v = Batch::load_unaligned(x + i);
      bad = bad | xsimd::isnan(v) | (v == inf);  // not v != v: AVX compares ordered
      vmax = xsimd::max(vmax, v);
    }
    float m = HorizontalMax(vmax);
    bool any_bad = xsimd::any(bad);
    for (; i < n; ++i) {
      any_bad = any_bad || Bad(x[i]);
      if (x[i] > m) m = x[i];
    }
    if (any_bad) {
      for (int64_t j = 0; j < n; ++j) {
        if (Bad(x[j])) {
          result.first_bad = j;
          break;
        }
      }
    }
    result.max = m;
    return result;
  }

  static int64_t FindFirst(const float* x, int64_t n, float value) {
    int64_t i = 0;
    const Batch target(value);
    for (; i + kLanes <= n; i += kLanes) {
      if (xsimd::any(Batch::load_unaligned(x + i) == target)) break;
    }
    for (; i < n; ++i) {
      if (x[i] == value) return i;
    }
    return n;
  }

  static int64_t FindFirstGreater(const float* x, int64_t from, int64_t n, float threshold) {
    int64_t i = from;
    const Batch t(threshold);
    for (; i + kLanes <= n; i += kLanes) {
      if (xsimd::any(Batch::load_unaligned(x + i) > t)) break;
    }
    for (; i < n; ++i) {
      if (x[i] > threshold) return i;
    }
    return n;
  }

  static void ExpShifted(const float* x, int64_t n, float shift, float* e, double* sum_e, double* sum_ed) {
    const Batch vshift(shift), vmin(kMinShifted);
    double total_e = 0, total_ed = 0;
    int64_t i = 0;
    for (; i + kBlock <= n; i += kBlock) {
      Batch acc_e(0.0f), acc_ed(0.0f);
      for (int64_t j = i; j < i + kBlock; j += kLanes) {
        Batch d = xsimd::max(Batch::load_unaligned(x + j) - vshift, vmin);
        Batch ev = xsimd::exp(d);
        if (e != nullptr) ev.store_unaligned(e + j);
        acc_e += ev;
        acc_ed += ev * d;
      }
      total_e += xsimd::hadd(acc_e);
      total_ed += xsimd::hadd(acc_ed);
    }
    for (; i < n; ++i) {
      const float d = Clamp(x[i] - shift);
      const float ev = expf(d);
      if (e != nullptr) e[i] = ev;
      total_e += ev;
      total_ed += static_cast<double>(ev * d);
    }
    *sum_e = total_e;
    *sum_ed = total_ed;
  }

  static double WeightedSquaredDeviation(const float* x, const float* e, int64_t n, float shift, float mean) {
    const Batch vshift(shift), vmin(kMinShifted), vmean(mean);
    double total = 0;
    int64_t i = 0;
    for (; i + kBlock <= n; i += kBlock) {
      Batch acc(0.0f);
      for (int64_t j = i; j < i + kBlock; j += kLanes) {
        Batch dev = xsimd::max(Batch::load_unaligned(x + j) - vshift, vmin) - vmean;
        acc += Batch::load_unaligned(e + j) * dev * dev;
      }
      total += xsimd::hadd(acc);
    }
    for (; i < n; ++i) {
      const float dev = Clamp(x[i] - shift) - mean;
      total += static_cast<double>(e[i] * dev * dev);
    }
    return total;
  }

  static void AbsSumFinite(const float* x, int64_t n, double* abs_sum, int64_t* finite_count) {
    const Batch vneg_inf(-INFINITY), zero(0.0f), one(1.0f);
    double total = 0;
    int64_t count = 0;
    int64_t i = 0;
    for (; i + kBlock <= n; i += kBlock) {
      Batch acc(0.0f), cnt(0.0f);
      for (int64_t j = i; j < i + kBlock; j += kLanes) {
        Batch v = Batch::load_unaligned(x + j);
        auto finite = v != vneg_inf;
        acc += xsimd::select(finite, xsimd::abs(v), zero);
        cnt += xsimd::select(finite, one, zero);
      }
      total += xsimd::hadd(acc);
      count += static_cast<int64_t>(xsimd::hadd(cnt));  // <= kBlock: exact in float
    }
    for (; i < n; ++i) {
      if (x[i] != -INFINITY) {
        total += fabsf(x[i]);
        ++count;
      }
    }
    *abs_sum = total;
    *finite_count = count;
  }

  static double NormalizeAndEntropy(const float* x, float* e, int64_t n, float shift, float inv_sum,
                                    float log_sum, float ln_floor) {
    const Batch vshift(shift), vmin(kMinShifted), vinv(inv_sum), vlog(log_sum), vfloor(ln_floor);
    double total = 0;
    int64_t i = 0;
    for (; i + kBlock <= n; i += kBlock) {
      Batch acc(0.0f);
      for (int64_t j = i; j < i + kBlock; j += kLanes) {
        Batch a = Batch::load_unaligned(e + j) * vinv;
        a.store_unaligned(e + j);
        Batch ln_a = xsimd::max(xsimd::max(Batch::load_unaligned(x + j) - vshift, vmin) - vlog, vfloor);
        acc += a * ln_a;
      }
      total -= xsimd::hadd(acc);
    }
    for (; i < n; ++i) {
      const float a = e[i] * inv_sum;
      e[i] = a;
      const float ln_a = Clamp(x[i] - shift) - log_sum;
      total -= static_cast<double>(a * (ln_a > ln_floor ? ln_a : ln_floor));
    }
    return total;
  }

  static void KahanAccumulate(const float* a, float* sum, float* comp, int64_t n) {
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
      Batch s = Batch::load_unaligned(sum + i);
      Batch y = Batch::load_unaligned(a + i) - Batch::load_unaligned(comp + i);
      Batch t = s + y;
      ((t - s) - y).store_unaligned(comp + i);
      t.store_unaligned(sum + i);
    }
    for (; i < n; ++i) {
      const float y = a[i] - comp[i];
      const float t = sum[i] + y;
      comp[i] = (t - sum[i]) - y;
      sum[i] = t;
    }
  }

  static double AbsDeviationSum(const float* a, const float* mean, int64_t n) {
    double total = 0;
    int64_t i = 0;
    for (; i + kBlock <= n; i += kBlock) {
      Batch acc(0.0f);
      for (int64_t j = i; j < i + kBlock; j += kLanes) {
        acc += xsimd::abs(Batch::load_unaligned(a + j) - Batch::load_unaligned(mean + j));
      }
      total += xsimd::hadd(acc);
    }
    for (; i < n; ++i) total += fabsf(a[i] - mean[i]);
    return total;
  }
};

template <class Arch>
KernelTable MakeTable(const char* name) {
  using I = Impl<Arch>;
  return KernelTable{name,
                     &I::ScanMax,
                     &I::FindFirst,
                     &I::FindFirstGreater,
                     &I::ExpShifted,
                     &I::WeightedSquaredDeviation,
                     &I::AbsSumFinite,
                     &I::NormalizeAndEntropy,
                     &I::KahanAccumulate,
                     &I::AbsDeviationSum};
}

}  // namespace samplerd::kernels::detail

#endif  // SAMPLERD_CORE_REDUCE_KERNELS_IMPL_H_
