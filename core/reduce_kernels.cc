#include "core/reduce_kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "xsimd/xsimd.hpp"

namespace samplerd::kernels {
namespace {

using Batch = xsimd::batch<float>;
constexpr int64_t kLanes = static_cast<int64_t>(Batch::size);
// Elements per float partial sum (see core/metrics.h): a multiple of every lane count.
constexpr int64_t kBlock = 64;
static_assert(kBlock % kLanes == 0, "block must hold whole batches");

// xsimd 8.1 has hadd but no horizontal max.
inline float HorizontalMax(const Batch& b) {
  alignas(64) float lanes[kLanes];
  b.store_aligned(lanes);
  float m = lanes[0];
  for (int64_t i = 1; i < kLanes; ++i) m = lanes[i] > m ? lanes[i] : m;
  return m;
}

inline float Clamp(float d) { return d < kMinShifted ? kMinShifted : d; }

}  // namespace

ScanResult ScanMax(const float* x, int64_t n) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  ScanResult result;
  Batch vmax(-kInf);
  auto bad = Batch(0.0f) != Batch(0.0f);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    Batch v = xsimd::load_unaligned(x + i);
    bad = bad | (v != v) | (v == Batch(kInf));
    vmax = xsimd::max(vmax, v);
  }
  float m = HorizontalMax(vmax);
  bool any_bad = xsimd::any(bad);
  for (; i < n; ++i) {
    if (std::isnan(x[i]) || x[i] == kInf) any_bad = true;
    if (x[i] > m) m = x[i];
  }
  if (any_bad) {
    for (int64_t j = 0; j < n; ++j) {
      if (std::isnan(x[j]) || x[j] == kInf) {
        result.first_bad = j;
        break;
      }
    }
  }
  result.max = m;
  return result;
}

int64_t FindFirst(const float* x, int64_t n, float value) {
  int64_t i = 0;
  const Batch target(value);
  for (; i + kLanes <= n; i += kLanes) {
    if (xsimd::any(xsimd::load_unaligned(x + i) == target)) break;
  }
  for (; i < n; ++i) {
    if (x[i] == value) return i;
  }
  return n;
}

int64_t FindFirstGreater(const float* x, int64_t from, int64_t n, float threshold) {
  int64_t i = from;
  const Batch t(threshold);
  for (; i + kLanes <= n; i += kLanes) {
    if (xsimd::any(xsimd::load_unaligned(x + i) > t)) break;
  }
  for (; i < n; ++i) {
    if (x[i] > threshold) return i;
  }
  return n;
}

void ExpShifted(const float* x, int64_t n, float shift, float* e, double* sum_e, double* sum_ed) {
  const Batch vshift(shift), vmin(kMinShifted);
  double total_e = 0, total_ed = 0;
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    Batch acc_e(0.0f), acc_ed(0.0f);
    for (int64_t j = i; j < i + kBlock; j += kLanes) {
      Batch d = xsimd::max(xsimd::load_unaligned(x + j) - vshift, vmin);
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
    const float ev = std::exp(d);
    if (e != nullptr) e[i] = ev;
    total_e += ev;
    total_ed += static_cast<double>(ev * d);
  }
  *sum_e = total_e;
  *sum_ed = total_ed;
}

double WeightedSquaredDeviation(const float* x, const float* e, int64_t n, float shift, float mean) {
  const Batch vshift(shift), vmin(kMinShifted), vmean(mean);
  double total = 0;
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    Batch acc(0.0f);
    for (int64_t j = i; j < i + kBlock; j += kLanes) {
      Batch dev = xsimd::max(xsimd::load_unaligned(x + j) - vshift, vmin) - vmean;
      acc += xsimd::load_unaligned(e + j) * dev * dev;
    }
    total += xsimd::hadd(acc);
  }
  for (; i < n; ++i) {
    const float dev = Clamp(x[i] - shift) - mean;
    total += static_cast<double>(e[i] * dev * dev);
  }
  return total;
}

void AbsSumFinite(const float* x, int64_t n, double* abs_sum, int64_t* finite_count) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  const Batch vneg_inf(-kInf), zero(0.0f), one(1.0f);
  double total = 0;
  int64_t count = 0;
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    Batch acc(0.0f), cnt(0.0f);
    for (int64_t j = i; j < i + kBlock; j += kLanes) {
      Batch v = xsimd::load_unaligned(x + j);
      auto finite = v != vneg_inf;
      acc += xsimd::select(finite, xsimd::abs(v), zero);
      cnt += xsimd::select(finite, one, zero);
    }
    total += xsimd::hadd(acc);
    count += static_cast<int64_t>(xsimd::hadd(cnt));  // <= kBlock: exact in float
  }
  for (; i < n; ++i) {
    if (x[i] != -kInf) {
      total += std::fabs(x[i]);
      ++count;
    }
  }
  *abs_sum = total;
  *finite_count = count;
}

double NormalizeAndEntropy(const float* x, float* e, int64_t n, float shift, float inv_sum, float log_sum,
                           float ln_floor) {
  const Batch vshift(shift), vmin(kMinShifted), vinv(inv_sum), vlog(log_sum), vfloor(ln_floor);
  double total = 0;
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    Batch acc(0.0f);
    for (int64_t j = i; j < i + kBlock; j += kLanes) {
      Batch a = xsimd::load_unaligned(e + j) * vinv;
      a.store_unaligned(e + j);
      Batch ln_a = xsimd::max(xsimd::max(xsimd::load_unaligned(x + j) - vshift, vmin) - vlog, vfloor);
      acc += a * ln_a;
    }
    total -= xsimd::hadd(acc);
  }
  for (; i < n; ++i) {
    const float a = e[i] * inv_sum;
    e[i] = a;
    total -= static_cast<double>(a * std::max(Clamp(x[i] - shift) - log_sum, ln_floor));
  }
  return total;
}

void KahanAccumulate(const float* a, float* sum, float* comp, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    Batch s = xsimd::load_unaligned(sum + i);
    Batch y = xsimd::load_unaligned(a + i) - xsimd::load_unaligned(comp + i);
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

double AbsDeviationSum(const float* a, const float* mean, int64_t n) {
  double total = 0;
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    Batch acc(0.0f);
    for (int64_t j = i; j < i + kBlock; j += kLanes) {
      acc += xsimd::abs(xsimd::load_unaligned(a + j) - xsimd::load_unaligned(mean + j));
    }
    total += xsimd::hadd(acc);
  }
  for (; i < n; ++i) total += std::fabs(a[i] - mean[i]);
  return total;
}

}  // namespace samplerd::kernels
