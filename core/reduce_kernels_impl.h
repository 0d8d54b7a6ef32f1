// The reductions of core/reduce_kernels.h for one instruction set (their exponentials in core/simd_exp.h, the
// bf16 conversion in core/simd_bf16.h), instantiated by reduce_kernels_{sse2,avx2,avx512}.cc, each compiled
// with its own -m flags. Include nowhere else.
//
//   const KernelTable table = MakeTable<xsimd::fma3<xsimd::avx2>>("avx2");
//
// Only xsimd operations templated on Arch and plain C expressions appear here: an inline non-template helper
// (std::max, say) compiled with -mavx512f could be picked by the linker for the SSE2 build too and crash
// older CPUs.
#ifndef SAMPLERD_CORE_REDUCE_KERNELS_IMPL_H_
#define SAMPLERD_CORE_REDUCE_KERNELS_IMPL_H_

#include <float.h>
#include <math.h>

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/reduce_kernels.h"
#include "core/simd_bf16.h"
#include "core/simd_exp.h"
#include "xsimd/xsimd.hpp"

namespace samplerd::kernels::detail {

template <class Arch>
struct Impl : ExpImpl<Arch>, Bf16Impl<Arch> {
  using ExpImpl<Arch>::ExpClamped;
  using ExpImpl<Arch>::ExpWide;
  using Bf16Impl<Arch>::LoadBf16;
  using Bf16Impl<Arch>::ConvertBf16;
  using Batch = xsimd::batch<float, Arch>;
  using Wide = xsimd::batch<double, Arch>;
  static constexpr int64_t kWide = static_cast<int64_t>(Wide::size);
  static constexpr int64_t kLanes = static_cast<int64_t>(Batch::size);
  // Elements per block of float partial sums: 16 per lane whatever the width (64 on SSE2, 256 on AVX-512; the
  // moments kernels split a lane's 16 over two accumulators), so every instruction set sums alike, and the
  // horizontal add + double conversion per block stays cheap.
  static constexpr int64_t kBlock = 16 * kLanes;

  static float Clamp(float d) { return d < kMinShifted ? kMinShifted : d; }
  static bool Bad(float v) { return v != v || v == INFINITY; }

  // Element i of the source as a batch: float32 read in place, or bf16 converted and stored into out[i..]
  // on the way (the conversion happens inside the first pass, so the received bytes are read once).
  template <bool kBf16>
  static Batch LoadSource(const void* src, int64_t i, float* out) {
    if constexpr (kBf16) {
      const Batch v = LoadBf16(static_cast<const char*>(src) + 2 * i);
      v.store_unaligned(out + i);
      return v;
    } else {
      return Batch::load_unaligned(static_cast<const float*>(src) + i);
    }
  }
  // Converts the tail [from, n) of a bf16 source into out; the float32 array to read afterwards.
  template <bool kBf16>
  static const float* Floats(const void* src, int64_t from, int64_t n, float* out) {
    if constexpr (kBf16) {
      ConvertBf16(static_cast<const char*>(src) + 2 * from, n - from, out + from);
      return out;
    } else {
      return static_cast<const float*>(src);
    }
  }

  // The last, partial block of a row, [0, rest) copied to `block` and padded to whole vectors with `pad`: a row
  // of any length is done in vectors (a scalar tail of up to kBlock - 1 entries per row made kv_len 4095 cost
  // twice kv_len 4096). Returns the padded length, a multiple of kLanes.
  static int64_t PadTail(const float* x, int64_t rest, float pad, float* block) {
    const int64_t padded = (rest + kLanes - 1) / kLanes * kLanes;
    std::memcpy(block, x, static_cast<size_t>(rest) * sizeof(float));
    std::fill(block + rest, block + padded, pad);
    return padded;
  }

  // A block's squared deviation from its weighted mean, sum e * (d - mean)^2 over its kBlock / kLanes batches of
  // exponentials `e` and values `d`: the second pass of the moments pipelines (ExpMomentsOf, LogitsPass).
  __attribute__((always_inline)) static float BlockSquaredDeviation(const Batch* d, const Batch* e, float mean) {
    const Batch vmean(mean);
    // Four chains of four multiply-adds: the block's summary, and the loop's progress behind it, wait on the
    // longest chain.
    Batch acc0(0.0f), acc1(0.0f), acc2(0.0f), acc3(0.0f);
    for (int64_t j = 0; j < kBlock / kLanes; j += 4) {
      const Batch dev0 = d[j] - vmean, dev1 = d[j + 1] - vmean, dev2 = d[j + 2] - vmean, dev3 = d[j + 3] - vmean;
      acc0 += e[j] * dev0 * dev0;
      acc1 += e[j + 1] * dev1 * dev1;
      acc2 += e[j + 2] * dev2 * dev2;
      acc3 += e[j + 3] * dev3 * dev3;
    }
    return xsimd::hadd((acc0 + acc2) + (acc1 + acc3));
  }

  // A block's sums of e and e * d in two accumulators each (even and odd batches): one chain of dependent adds
  // would hold every block for kBlock / kLanes add latencies before its mean and its deviations can start.
  struct BlockSums {
    Batch e0 = Batch(0.0f), e1 = Batch(0.0f), ed0 = Batch(0.0f), ed1 = Batch(0.0f);
    // A batch of parity k (0: even, 1: odd; a constant where it is called).
    __attribute__((always_inline)) void Add(int k, const Batch& e, const Batch& d) {
      (k == 0 ? e0 : e1) += e;
      (k == 0 ? ed0 : ed1) += e * d;
    }
    float SumE() const { return xsimd::hadd(e0 + e1); }
    float SumEd() const { return xsimd::hadd(ed0 + ed1); }
  };

  // Horizontal max through the instruction set's shuffles (xsimd 8 has no reduce_max): cheap enough to run
  // once per block of kMaxBlock.
  static float ReduceMax(const Batch& b) {
#if defined(__AVX512F__)
    if constexpr (std::is_base_of_v<xsimd::avx512f, Arch>) {
      return _mm512_reduce_max_ps(b);
    } else
#endif
    {
      __m128 m;
#if defined(__AVX__)
      if constexpr (std::is_base_of_v<xsimd::avx, Arch>) {
        m = _mm_max_ps(_mm256_castps256_ps128(b), _mm256_extractf128_ps(b, 1));
      } else
#endif
      {
        m = b;
      }
      m = _mm_max_ps(m, _mm_movehl_ps(m, m));
      m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
      return _mm_cvtss_f32(m);
    }
  }

  template <bool kBf16>
  static ScanResult ScanMaxOf(const void* src, int64_t n, float* out, float* block_max) {
    ScanResult result;
    auto bad = Batch(0.0f) != Batch(0.0f);
    const Batch inf(INFINITY);
    // Per block: its max, and the first block whose max beats every earlier one (strictly, so that it is the
    // first block holding the final max).
    float m = -INFINITY;
    int64_t best_block = -1;
    Batch lo0(INFINITY), lo1(INFINITY);  // the min (it tells whether the exponentials need their clamp)
    int64_t i = 0;
    for (; i + kMaxBlock <= n; i += kMaxBlock) {
      // Four chains of max, so that the block's latency is not one max per vector.
      Batch b0(-INFINITY), b1(-INFINITY), b2(-INFINITY), b3(-INFINITY);
      for (int64_t j = i; j < i + kMaxBlock; j += 4 * kLanes) {
        const Batch v0 = LoadSource<kBf16>(src, j, out), v1 = LoadSource<kBf16>(src, j + kLanes, out),
                    v2 = LoadSource<kBf16>(src, j + 2 * kLanes, out), v3 = LoadSource<kBf16>(src, j + 3 * kLanes, out);
        // not v != v: AVX compares ordered
        bad = bad | xsimd::isnan(v0) | xsimd::isnan(v1) | xsimd::isnan(v2) | xsimd::isnan(v3) |
              (xsimd::max(xsimd::max(v0, v1), xsimd::max(v2, v3)) == inf);
        b0 = xsimd::max(b0, v0);
        b1 = xsimd::max(b1, v1);
        b2 = xsimd::max(b2, v2);
        b3 = xsimd::max(b3, v3);
        lo0 = xsimd::min(lo0, xsimd::min(v0, v1));
        lo1 = xsimd::min(lo1, xsimd::min(v2, v3));
      }
      const float b = ReduceMax(xsimd::max(xsimd::max(b0, b1), xsimd::max(b2, b3)));
      if (block_max != nullptr) block_max[i / kMaxBlock] = b;
      if (b > m) {
        m = b;
        best_block = i;
      }
    }
    const float* x = Floats<kBf16>(src, i, n, out);
    bool any_bad = xsimd::any(bad);
    int64_t argmax = best_block >= 0 ? -1 : 0;  // -1: in best_block, found below
    float tail_max = -INFINITY;
    float lo = -ReduceMax(-xsimd::min(lo0, lo1));
    for (; i < n; ++i) {
      any_bad = any_bad || Bad(x[i]);
      if (x[i] < lo) lo = x[i];
      if (x[i] > tail_max) tail_max = x[i];
      if (x[i] > m) {
        m = x[i];
        argmax = i;
      }
    }
    if (block_max != nullptr && n % kMaxBlock != 0) block_max[n / kMaxBlock] = tail_max;
    if (argmax < 0) {
      // The block's max is one of its entries (a NaN never wins a comparison; such input is rejected anyway).
      const int64_t at = FindFirst(x + best_block, kMaxBlock, m);
      argmax = best_block + (at < kMaxBlock ? at : 0);
    }
    result.argmax = argmax;
    result.min = lo;
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
  static ScanResult ScanMax(const float* x, int64_t n, float* block_max) {
    return ScanMaxOf<false>(x, n, nullptr, block_max);
  }
  static ScanResult ScanMaxBf16(const char* src, int64_t n, float* out, float* block_max) {
    return ScanMaxOf<true>(src, n, out, block_max);
  }

  static int64_t FindFirst(const float* x, int64_t n, float value) {
    int64_t i = 0;
    const Batch target(value);
    // Four vectors per test and branch; the single-vector loop below finds the lane.
    for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
      if (xsimd::any((Batch::load_unaligned(x + i) == target) | (Batch::load_unaligned(x + i + kLanes) == target) |
                     (Batch::load_unaligned(x + i + 2 * kLanes) == target) |
                     (Batch::load_unaligned(x + i + 3 * kLanes) == target))) {
        break;
      }
    }
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
    for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
      if (xsimd::any((Batch::load_unaligned(x + i) > t) | (Batch::load_unaligned(x + i + kLanes) > t) |
                     (Batch::load_unaligned(x + i + 2 * kLanes) > t) |
                     (Batch::load_unaligned(x + i + 3 * kLanes) > t))) {
        break;
      }
    }
    for (; i + kLanes <= n; i += kLanes) {
      if (xsimd::any(Batch::load_unaligned(x + i) > t)) break;
    }
    for (; i < n; ++i) {
      if (x[i] > threshold) return i;
    }
    return n;
  }

  // A float's bits as a signed integer in the floats' order: a negative float's magnitude bits flipped. The same
  // transform maps a key back to its float's bits.
  static int32_t OrderedKey(int32_t bits) { return bits ^ ((bits >> 31) & 0x7FFFFFFF); }

  static float KthLargest(const float* x, int64_t n, int64_t k, int32_t* keys) {
    using IntBatch = xsimd::batch<int32_t, Arch>;
    const int64_t whole = n - n % kLanes, padded = KthLargestKeys(n);
    // Each float's OrderedKey (here vectorized), padded with INT32_MIN, which no threshold below reaches.
    IntBatch lo(INT32_MAX), hi(INT32_MIN);
    for (int64_t i = 0; i < whole; i += kLanes) {
      const IntBatch b = xsimd::bitwise_cast<IntBatch>(Batch::load_unaligned(x + i));
      const IntBatch key = b ^ ((b >> 31) & IntBatch(0x7FFFFFFF));
      key.store_unaligned(keys + i);
      lo = xsimd::min(lo, key);
      hi = xsimd::max(hi, key);
    }
    alignas(64) int32_t lanes[3][kLanes];
    lo.store_aligned(lanes[0]);
    hi.store_aligned(lanes[1]);
    int32_t min_key = INT32_MAX, max_key = INT32_MIN;
    for (int64_t j = 0; j < kLanes; ++j) {
      min_key = lanes[0][j] < min_key ? lanes[0][j] : min_key;
      max_key = lanes[1][j] > max_key ? lanes[1][j] : max_key;
    }
    for (int64_t i = whole; i < padded; ++i) {
      int32_t key = INT32_MIN;
      if (i < n) {
        std::memcpy(&key, x + i, sizeof(key));
        key = OrderedKey(key);
        min_key = key < min_key ? key : min_key;
        max_key = key > max_key ? key : max_key;
      }
      keys[i] = key;
    }
    // The answer's key offset by 2^31 (unsigned order). Above the highest bit where the smallest and the largest
    // key differ, it is theirs; below, it is built two bits per pass from the top down: of the three prefixes
    // that set either bit, the highest that at least k keys reach.
    const uint32_t umin = static_cast<uint32_t>(min_key) ^ 0x80000000u;
    const uint32_t umax = static_cast<uint32_t>(max_key) ^ 0x80000000u;
    int bits = 0;
    while (bits < 32 && (umin >> bits) != (umax >> bits)) bits += 2;
    uint32_t found = bits == 32 ? 0 : (umax >> bits) << bits;
    for (int shift = bits - 2; shift >= 0; shift -= 2) {
      const IntBatch t1(static_cast<int32_t>((found | (uint32_t{1} << shift)) ^ 0x80000000u));
      const IntBatch t2(static_cast<int32_t>((found | (uint32_t{2} << shift)) ^ 0x80000000u));
      const IntBatch t3(static_cast<int32_t>((found | (uint32_t{3} << shift)) ^ 0x80000000u));
      const IntBatch one(1);
      IntBatch c1(0), c2(0), c3(0);
      for (int64_t i = 0; i < padded; i += kLanes) {
        const IntBatch key = IntBatch::load_unaligned(keys + i);
        c1 = xsimd::select(key >= t1, c1 + one, c1);
        c2 = xsimd::select(key >= t2, c2 + one, c2);
        c3 = xsimd::select(key >= t3, c3 + one, c3);
      }
      c1.store_aligned(lanes[0]);
      c2.store_aligned(lanes[1]);
      c3.store_aligned(lanes[2]);
      int64_t n1 = 0, n2 = 0, n3 = 0;
      for (int64_t j = 0; j < kLanes; ++j) {
        n1 += lanes[0][j];
        n2 += lanes[1][j];
        n3 += lanes[2][j];
      }
      found |= static_cast<uint32_t>(n3 >= k ? 3 : n2 >= k ? 2 : n1 >= k ? 1 : 0) << shift;
    }
    const int32_t result_bits = OrderedKey(static_cast<int32_t>(found ^ 0x80000000u));
    float v;
    std::memcpy(&v, &result_bits, sizeof(v));
    return v;
  }

  // d = x - shift, clamped at kMinShifted unless the caller knows no entry is below it (kClamp false: one
  // operation of the ~17 per vector less, the same bits).
  template <bool kClamp>
  static Batch Shifted(const float* x, const Batch& vshift) {
    const Batch d = Batch::load_unaligned(x) - vshift;
    if constexpr (kClamp) {
      return xsimd::max(d, Batch(kMinShifted));
    } else {
      return d;
    }
  }

  static void ExpShifted(const float* x, int64_t n, float shift, float* e, double* sum_e, double* sum_ed,
                         const void* next, int64_t next_bytes, bool clamp, const float* scan, RowScan* scanned) {
    const auto run = [&](auto kClamp, auto kStore, auto kScan) {
      ExpShiftedOf<decltype(kClamp)::value, decltype(kStore)::value, decltype(kScan)::value>(
          x, n, shift, e, sum_e, sum_ed, next, next_bytes, scan, scanned);
    };
    const auto with_clamp = [&](auto kStore, auto kScan) {
      clamp ? run(std::true_type(), kStore, kScan) : run(std::false_type(), kStore, kScan);
    };
    if (e == nullptr) {
      with_clamp(std::false_type(), std::false_type());
    } else if (scan == nullptr) {
      with_clamp(std::true_type(), std::false_type());
    } else {
      with_clamp(std::true_type(), std::true_type());
    }
  }
  template <bool kClamp, bool kStore, bool kScan>
  static void ExpShiftedOf(const float* x, int64_t n, float shift, float* e, double* sum_e, double* sum_ed,
                           const void* next, int64_t next_bytes, const float* scan, RowScan* scanned) {
    constexpr int64_t kBatches = kBlock / kLanes;
    const Batch vshift(shift);
    Wide total_e(0.0), total_ed(0.0);
    RowAcc scan_acc;
    // One block's worth of bytes of `next` per block of x: a row of the same size is fetched by the end.
    const char* pf = static_cast<const char*>(next);
    const char* const pf_end = pf + (next != nullptr ? next_bytes : 0);
    int64_t i = 0;
    for (; i + kBlock <= n; i += kBlock) {
      for (int64_t line = 0; line < kBlock * 4 && pf < pf_end; line += 64, pf += 64) __builtin_prefetch(pf, 0, 2);
      // The other row's block, a vector per batch of exponentials: its loads and adds run among the exponentials,
      // which are bound by the multiply pipes and leave the add pipes idle. Its next block is fetched towards L1
      // meanwhile, so that those loads do not hold the exponentials behind them.
      BlockScan block_scan;
      if constexpr (kScan) {
        if (i + 2 * kBlock <= n) {
          for (int64_t line = 0; line < kBlock; line += 16) __builtin_prefetch(scan + i + kBlock + line, 0, 3);
        }
      }
      // The block's float sums (BlockSums), added into double lanes.
      BlockSums sums;
      Impl::template ExpStream<kBatches>(
          [&](int64_t j) __attribute__((always_inline)) {
            if constexpr (kScan) block_scan.Add(Batch::load_unaligned(scan + i + j * kLanes));
            return Shifted<kClamp>(x + i + j * kLanes, vshift);
          },
          [&](int64_t j, int k, const Batch& d, const Batch& ev) __attribute__((always_inline)) {
            if constexpr (kStore) ev.store_unaligned(e + i + j * kLanes);
            sums.Add(k, ev, d);
          });
      if constexpr (kScan) block_scan.template Finish<false>(scan, i, n, nullptr, &scan_acc);
      total_e += WidenHalves(sums.e0 + sums.e1);
      total_ed += WidenHalves(sums.ed0 + sums.ed1);
    }
    if constexpr (kScan) *scanned = FinishRowScan<false>(scan, i, n, nullptr, &scan_acc);
    double tail_e = 0, tail_ed = 0;
    if (i < n) {
      // Padded with -inf, which the clamp turns into exp = 0 exactly: nothing added to either sum.
      alignas(64) float xt[kBlock];
      alignas(64) float et[kBlock];
      const int64_t padded = PadTail(x + i, n - i, -INFINITY, xt);
      Batch acc_e(0.0f), acc_ed(0.0f);
      for (int64_t j = 0; j < padded; j += kLanes) {
        const Batch d = Shifted<true>(xt + j, vshift);
        const Batch ev = ExpClamped(d);
        ev.store_aligned(et + j);
        acc_e += ev;
        acc_ed += ev * d;
      }
      if constexpr (kStore) std::memcpy(e + i, et, static_cast<size_t>(n - i) * sizeof(float));
      tail_e = xsimd::hadd(acc_e);
      tail_ed = xsimd::hadd(acc_ed);
    }
    *sum_e = SumLanes(total_e) + tail_e;
    *sum_ed = SumLanes(total_ed) + tail_ed;
  }

  // Per block of kBlock elements: weight W_b, weighted mean M_b and squared deviation Q_b in float32 (the
  // block stays in registers / L1), recorded in `blocks`; then, in double, M = sum W_b M_b / W and
  // M2 = sum Q_b + sum W_b (M_b - M)^2 (the two-pass form over block summaries). One pass over the data, no
  // E[d^2] - E[d]^2 cancellation, and no dependent divisions (a pairwise Chan merge per block costs two).
  // Short blocks matter: a lane that adds many tiny weights onto exp(0) = 1 loses them.
  static void ExpMoments(const float* x, int64_t n, float shift, float* blocks, double* sum_e, double* mean_d,
                         double* m2, bool clamp) {
    if (clamp) {
      ExpMomentsOf<true>(x, n, shift, blocks, sum_e, mean_d, m2);
    } else {
      ExpMomentsOf<false>(x, n, shift, blocks, sum_e, mean_d, m2);
    }
  }
  template <bool kClamp>
  static void ExpMomentsOf(const float* x, int64_t n, float shift, float* blocks, double* sum_e, double* mean_d,
                           double* m2) {
    constexpr int64_t kBatches = kBlock / kLanes;
    const Batch vshift(shift);
    // Software-pipelined: block b's deviation loop runs after block b + 1's exp loop, so the latency of the
    // horizontal sums and the division that give block b's mean is hidden behind independent work.
    Batch d[2][kBatches], e[2][kBatches];
    float prev_w = 0, prev_m = 0;
    bool have_prev = false;
    int64_t nb = 0;
    const auto finish_previous = [&](int slot) __attribute__((always_inline)) {
      blocks[3 * nb] = prev_w;
      blocks[3 * nb + 1] = prev_m;
      blocks[3 * nb + 2] = BlockSquaredDeviation(d[slot], e[slot], prev_m);
      ++nb;
    };
    int slot = 0;
    int64_t i = 0;
    for (; i + kBlock <= n; i += kBlock, slot ^= 1) {
      BlockSums sums;
      Impl::template ExpStream<kBatches>(
          [&](int64_t j) __attribute__((always_inline)) { return Shifted<kClamp>(x + i + j * kLanes, vshift); },
          [&](int64_t j, int k, const Batch& dj, const Batch& ej) __attribute__((always_inline)) {
            d[slot][j] = dj;
            e[slot][j] = ej;
            sums.Add(k, ej, dj);
          });
      if (have_prev) finish_previous(slot ^ 1);
      const float wb = sums.SumE();
      have_prev = wb != 0.0f;
      if (have_prev) {
        prev_w = wb;
        prev_m = sums.SumEd() / wb;
      }
    }
    if (have_prev) finish_previous(slot ^ 1);
    if (i < n) {
      // The partial last block, padded with -inf: the clamp makes those exp = 0, which add nothing to its
      // weight, mean or squared deviation. One more block summary (MomentBlocks has room for it).
      alignas(64) float xt[kBlock];
      const int64_t padded = PadTail(x + i, n - i, -INFINITY, xt);
      const int64_t batches = padded / kLanes;
      Batch acc_e(0.0f), acc_ed(0.0f);
      for (int64_t j = 0; j < batches; ++j) {
        d[0][j] = Shifted<true>(xt + j * kLanes, vshift);
        e[0][j] = ExpClamped(d[0][j]);
        acc_e += e[0][j];
        acc_ed += e[0][j] * d[0][j];
      }
      const float wb = xsimd::hadd(acc_e);
      if (wb != 0.0f) {
        const float mb = xsimd::hadd(acc_ed) / wb;
        const Batch vmb(mb);
        Batch acc_q(0.0f);
        for (int64_t j = 0; j < batches; ++j) {
          const Batch dev = d[0][j] - vmb;
          acc_q += e[0][j] * dev * dev;
        }
        blocks[3 * nb] = wb;
        blocks[3 * nb + 1] = mb;
        blocks[3 * nb + 2] = xsimd::hadd(acc_q);
        ++nb;
      }
    }
    double w = 0, s1 = 0;
    for (int64_t b = 0; b < nb; ++b) {
      w += blocks[3 * b];
      s1 += static_cast<double>(blocks[3 * b]) * blocks[3 * b + 1];
    }
    const double mean = s1 / w;
    double q = 0;
    for (int64_t b = 0; b < nb; ++b) {
      const double delta = static_cast<double>(blocks[3 * b + 1]) - mean;
      q += blocks[3 * b + 2] + blocks[3 * b] * delta * delta;
    }
    *sum_e = w;
    *mean_d = mean;
    *m2 = q;
  }

  // The logits in one read. The exponentials are taken against a running shift s: the first block's max to
  // begin with (past any leading blocks of nothing but -inf), and each block's raw max is taken in the same loop
  // as its exponentials, so no exponential waits for a max. d = x - s may then be positive, up to kMaxLead: a
  // block whose max lies further above s is done again against its own max, which becomes s (the block is in
  // L1, and s moves only when the max so far rises, a few times per vocabulary). Each moment
  // block is summarised as in ExpMoments (weight, mean and squared deviation in float32) with its shift beside
  // it; at the end each summary moves to the final max M in double: weight times exp(s_b - M), mean plus
  // s_b - M, the squared deviation times the same factor. Entries below s - 88 are clamped as in ExpMoments;
  // since s <= M they weigh less than exp(-88) against the max's 1.
  // Bad input needs no check in the loop: NaN or +inf makes a block's sums NaN (the clamp lets NaN through and
  // the exp keeps it; +inf makes d = inf - inf), and then ScanMax finds its index.
  template <bool kBf16>
  static LogitsMoments LogitsPassOf(const void* src, int64_t n, float* out, float* block_max, float* blocks) {
    static_assert(kMaxBlock % kBlock == 0, "a max block holds whole moment blocks");
    // How far above s a block's max may lie. d = x - s is rounded to float, an error that grows with |d|: the
    // entries near the max carry the weight and must keep |d| small, as they do against the exact max.
    constexpr float kMaxLead = 1.0f;
    constexpr int64_t kPrefetchBlocks = 16;
    constexpr int64_t kBatches = kBlock / kLanes;
    const int64_t nmax = MaxBlocks(n), full = n / kMaxBlock;
    LogitsMoments r;
    const auto bad_input = [&] {
      r.first_bad = ScanMaxOf<kBf16>(src, n, out, nullptr).first_bad;
      return r;
    };
    // The padded last partial block (converted first for bf16; the others are converted as they are read).
    alignas(64) float tail[kMaxBlock];
    if (full < nmax) {
      const float* x = Floats<kBf16>(src, full * kMaxBlock, n, out) + full * kMaxBlock;
      std::fill(tail + PadTail(x, n - full * kMaxBlock, -INFINITY, tail), tail + kMaxBlock, -INFINITY);
    }
    // Element i of block b, and block b's floats once read.
    const auto load = [&](int64_t b, int64_t i) __attribute__((always_inline)) {
      return b < full ? LoadSource<kBf16>(src, b * kMaxBlock + i, out) : Batch::load_aligned(tail + i);
    };
    const auto floats = [&](int64_t b) -> const float* {
      if (b >= full) return tail;
      if constexpr (kBf16) {
        return out + b * kMaxBlock;
      } else {
        return static_cast<const float*>(src) + b * kMaxBlock;
      }
    };

    // The first shift: the first block's max, past blocks of nothing but -inf (no weight in any sum).
    float s = -INFINITY;
    int64_t first = 0;
    for (; first < nmax; ++first) {
      Batch m(-INFINITY);
      auto nan = Batch(0.0f) != Batch(0.0f);
      for (int64_t i = 0; i < kMaxBlock; i += kLanes) {
        const Batch v = load(first, i);
        m = xsimd::max(m, v);
        nan = nan | xsimd::isnan(v);
      }
      if (xsimd::any(nan)) return bad_input();
      s = ReduceMax(m);
      if (s != -INFINITY) break;
      if (block_max != nullptr) block_max[first] = -INFINITY;
    }
    if (s == INFINITY) return bad_input();
    if (first == nmax) {
      r.max = -INFINITY;  // every logit is -inf
      return r;
    }

    // ExpMoments' pipeline: moment block k's deviation loop runs after block k + 1's exp loop.
    Batch d[2][kBatches], e[2][kBatches];
    float prev_w = 0, prev_m = 0, prev_s = 0;
    bool have_prev = false;
    int64_t nb = 0;
    const auto finish_previous = [&](int slot) __attribute__((always_inline)) {
      blocks[4 * nb] = prev_w;
      blocks[4 * nb + 1] = prev_m;
      blocks[4 * nb + 2] = BlockSquaredDeviation(d[slot], e[slot], prev_m);
      blocks[4 * nb + 3] = prev_s;
      ++nb;
    };
    int slot = 0;
    float top = -INFINITY;
    int64_t best_block = first;
    for (int64_t b = first; b < nmax; ++b) {
      if (b + kPrefetchBlocks < full) {
        // A stream from memory (a host's logits are not in cache): the prefetcher alone lets the exponentials
        // wait for it.
        const char* ahead = static_cast<const char*>(src) + (b + kPrefetchBlocks) * kMaxBlock * (kBf16 ? 2 : 4);
        for (int64_t line = 0; line < kMaxBlock * (kBf16 ? 2 : 4); line += 64) __builtin_prefetch(ahead + line, 0, 3);
      }
      float bm = -INFINITY;
      for (int64_t k = 0; k < kMaxBlock; k += kBlock, slot ^= 1) {
        BlockSums sums;
        const auto sink = [&](int64_t j, int par, const Batch& dj, const Batch& ej) __attribute__((always_inline)) {
          d[slot][j] = dj;
          e[slot][j] = ej;
          sums.Add(par, ej, dj);
        };
        Batch vmax(-INFINITY);
        const Batch vshift(s);
        // max(kMinShifted, .) returns its second operand for NaN: bad input reaches the sums.
        Impl::template ExpStream<kBatches>(
            [&](int64_t j) __attribute__((always_inline)) {
              const Batch v = load(b, k + j * kLanes);
              vmax = xsimd::max(vmax, v);
              return xsimd::max(Batch(kMinShifted), v - vshift);
            },
            sink);
        const float km = ReduceMax(vmax);
        if (km > s + kMaxLead) {
          s = km;
          sums = BlockSums();
          const Batch vnew(s);
          const float* x = floats(b) + k;
          Impl::template ExpStream<kBatches>(
              [&](int64_t j) __attribute__((always_inline)) {
                return xsimd::max(Batch(kMinShifted), Batch::load_unaligned(x + j * kLanes) - vnew);
              },
              sink);
        }
        if (km > bm) bm = km;
        if (have_prev) finish_previous(slot ^ 1);
        const float wb = sums.SumE();
        have_prev = wb != 0.0f;  // NaN included
        if (have_prev) {
          prev_w = wb;
          prev_m = sums.SumEd() / wb;
          prev_s = s;
        }
      }
      if (block_max != nullptr) block_max[b] = bm;
      if (bm > top) {  // strictly: the first block holding the final max
        top = bm;
        best_block = b;
      }
    }
    if (have_prev) finish_previous(slot ^ 1);

    double w = 0, s1 = 0;
    double last_shift = top, last_scale = 1.0;
    const auto scale_of = [&](float shift) {
      if (static_cast<double>(shift) != last_shift) {
        last_shift = shift;
        last_scale = exp(static_cast<double>(shift) - top);
      }
      return last_scale;
    };
    for (int64_t k = 0; k < nb; ++k) {
      const double wk = blocks[4 * k] * scale_of(blocks[4 * k + 3]);
      w += wk;
      s1 += wk * (static_cast<double>(blocks[4 * k + 1]) + (static_cast<double>(blocks[4 * k + 3]) - top));
    }
    if (!(w == w) || top == INFINITY) return bad_input();
    const double mean = s1 / w;
    double q = 0;
    for (int64_t k = 0; k < nb; ++k) {
      const double scale = scale_of(blocks[4 * k + 3]);
      const double delta =
          static_cast<double>(blocks[4 * k + 1]) + (static_cast<double>(blocks[4 * k + 3]) - top) - mean;
      q += scale * (blocks[4 * k + 2] + blocks[4 * k] * delta * delta);
    }
    r.max = top;
    const int64_t from = best_block * kMaxBlock, len = n - from < kMaxBlock ? n - from : kMaxBlock;
    const int64_t at = FindFirst(floats(best_block), len, top);
    r.argmax = from + (at < len ? at : 0);
    // Bounds that hold exactly (the max's own term is 1; no d = z - M is above 0), kept through the rounding of
    // shifts that lie below the max.
    r.sum_e = w < 1.0 ? 1.0 : w;
    r.mean_d = mean > 0.0 ? 0.0 : mean;
    r.m2 = q;
    return r;
  }
  static LogitsMoments LogitsPass(const float* x, int64_t n, float* block_max, float* blocks) {
    return LogitsPassOf<false>(x, n, nullptr, block_max, blocks);
  }
  static LogitsMoments LogitsPassBf16(const char* src, int64_t n, float* out, float* block_max, float* blocks) {
    return LogitsPassOf<true>(src, n, out, block_max, blocks);
  }

  // ScanRow's accumulators: per-lane max and min (of the finite entries), the NaN / +inf mask, and in scalars
  // the sum of |x| and the count of finite entries.
  struct RowAcc {
    Batch vmax = Batch(-INFINITY);
    Batch vmin = Batch(INFINITY);
    xsimd::batch_bool<float, Arch> bad = Batch(0.0f) != Batch(0.0f);
    double total = 0;
    int64_t count = 0;
  };

  // One block with every check: -inf entries are left out of min, sum and count, NaN / +inf flagged, and a
  // sum that overflows float (|x| near FLT_MAX) redone in double.
  static void ScanBlockChecked(const float* x, RowAcc* a) {
    const Batch vneg_inf(-INFINITY), zero(0.0f), one(1.0f), inf(INFINITY);
    Batch acc(0.0f), cnt(0.0f);
    for (int64_t j = 0; j < kBlock; j += kLanes) {
      Batch v = Batch::load_unaligned(x + j);
      a->bad = a->bad | xsimd::isnan(v) | (v == inf);  // not v != v: AVX compares ordered
      a->vmax = xsimd::max(a->vmax, v);
      auto finite = v != vneg_inf;
      a->vmin = xsimd::min(a->vmin, xsimd::select(finite, v, inf));
      acc += xsimd::select(finite, xsimd::abs(v), zero);
      cnt += xsimd::select(finite, one, zero);
    }
    const float block_sum = xsimd::hadd(acc);
    if (block_sum <= FLT_MAX) {
      a->total += block_sum;
    } else {
      // A block holding NaN or +inf lands here too; its row is rejected anyway.
      for (int64_t j = 0; j < kBlock; ++j) {
        if (x[j] != -INFINITY) a->total += fabs(static_cast<double>(x[j]));
      }
    }
    a->count += static_cast<int64_t>(xsimd::hadd(cnt));  // <= kBlock: exact in float
  }

  // ScanRow's block at i (whole), into `a`. Fast path, for blocks of finite values (attention rows without
  // masked positions): max, min and sum |x| only. NaN, +-inf or a float overflow make the block's sum
  // non-finite; such a block is scanned again with every check.
  template <bool kBf16>
  static void ScanRowBlock(const void* src, int64_t i, int64_t n, float* out, RowAcc* a) {
    BlockScan b;
    for (int64_t j = i; j < i + kBlock; j += kLanes) b.Add(LoadSource<kBf16>(src, j, out));
    b.template Finish<kBf16>(src, i, n, out, a);
  }
  // ScanRowBlock's fast path a vector at a time (Add, in order), then Finish: for loops that scan a block
  // while they do other work.
  struct BlockScan {
    Batch bmax = Batch(-INFINITY), bmin = Batch(INFINITY), acc = Batch(0.0f);
    __attribute__((always_inline)) void Add(const Batch& v) {
      bmax = xsimd::max(bmax, v);
      bmin = xsimd::min(bmin, v);
      acc += xsimd::abs(v);
    }
    template <bool kBf16>
    __attribute__((always_inline)) void Finish(const void* src, int64_t i, int64_t n, float* out, RowAcc* a) const {
      const float block_sum = xsimd::hadd(acc);
      if (block_sum <= FLT_MAX) {
        a->vmax = xsimd::max(a->vmax, bmax);
        a->vmin = xsimd::min(a->vmin, bmin);
        a->total += block_sum;
        a->count += kBlock;
      } else {
        ScanBlockChecked(Floats<kBf16>(src, n, n, out) + i, a);  // the block is converted by now
      }
    }
  };

  // ScanRow after its whole blocks [0, i): the partial block, and the row's result.
  template <bool kBf16>
  static RowScan FinishRowScan(const void* src, int64_t i, int64_t n, float* out, RowAcc* a) {
    RowScan r;
    const float* x = Floats<kBf16>(src, i, n, out);
    if (i < n) {
      // The partial block with every check, padded with -inf (left out of min, sum and count).
      alignas(64) float xt[kBlock];
      std::fill(xt + PadTail(x + i, n - i, -INFINITY, xt), xt + kBlock, -INFINITY);
      ScanBlockChecked(xt, a);
    }
    if (xsimd::any(a->bad)) {
      for (int64_t j = 0; j < n; ++j) {
        if (Bad(x[j])) {
          r.first_bad = j;
          break;
        }
      }
    }
    r.max = ReduceMax(a->vmax);
    r.min_finite = -ReduceMax(-a->vmin);
    r.abs_sum = a->total;
    r.finite_count = a->count;
    return r;
  }

  template <bool kBf16>
  static RowScan ScanRowOf(const void* src, int64_t n, float* out) {
    RowAcc a;
    int64_t i = 0;
    for (; i + kBlock <= n; i += kBlock) ScanRowBlock<kBf16>(src, i, n, out, &a);
    return FinishRowScan<kBf16>(src, i, n, out, &a);
  }
  static RowScan ScanRow(const float* x, int64_t n) { return ScanRowOf<false>(x, n, nullptr); }
  static RowScan ScanRowBf16(const char* src, int64_t n, float* out) { return ScanRowOf<true>(src, n, out); }

  // sum over entries with ln a < ln_floor of a * (ln_floor - ln a), with a = e * inv_sum and
  // ln a = d - log_sum: what the clip of docs/contract.md section 3 removes from the row entropy.
  static double ClipCorrection(const float* x, const float* e, int64_t n, float shift, float inv_sum, float log_sum,
                               float ln_floor) {
    const Batch vshift(shift), vmin(kMinShifted), vinv(inv_sum), vlog(log_sum), vfloor(ln_floor), zero(0.0f);
    double total = 0;
    int64_t i = 0;
    for (; i + kBlock <= n; i += kBlock) {
      Batch acc(0.0f);
      for (int64_t j = i; j < i + kBlock; j += kLanes) {
        const Batch gap = vfloor - (xsimd::max(Batch::load_unaligned(x + j) - vshift, vmin) - vlog);
        acc += Batch::load_unaligned(e + j) * vinv * xsimd::max(gap, zero);
      }
      total += xsimd::hadd(acc);
    }
    for (; i < n; ++i) {
      const float gap = ln_floor - (Clamp(x[i] - shift) - log_sum);
      if (gap > 0) total += static_cast<double>(e[i] * inv_sum * gap);
    }
    return total;
  }

  // The column sums of one agreement group (at most 8 rows, listed in `rows`): out[k] = sum_j rows[j][k] * inv[j],
  // fused multiply-adds in j order. Taken right after the group's exponentials are written (still in cache).
  static void GroupColumnSums(const float* const* rows, const float* inv, int64_t n, int64_t cols, float* out) {
    int64_t c = 0;
    for (; c + 4 * kLanes <= cols; c += 4 * kLanes) {
      Batch p0(0.0f), p1(0.0f), p2(0.0f), p3(0.0f);
      for (int64_t j = 0; j < n; ++j) {
        const Batch vinv(inv[j]);
        const float* e = rows[j] + c;
        p0 = xsimd::fma(Batch::load_unaligned(e), vinv, p0);
        p1 = xsimd::fma(Batch::load_unaligned(e + kLanes), vinv, p1);
        p2 = xsimd::fma(Batch::load_unaligned(e + 2 * kLanes), vinv, p2);
        p3 = xsimd::fma(Batch::load_unaligned(e + 3 * kLanes), vinv, p3);
      }
      p0.store_unaligned(out + c);
      p1.store_unaligned(out + c + kLanes);
      p2.store_unaligned(out + c + 2 * kLanes);
      p3.store_unaligned(out + c + 3 * kLanes);
    }
    for (; c + kLanes <= cols; c += kLanes) {
      Batch p(0.0f);
      for (int64_t j = 0; j < n; ++j) p = xsimd::fma(Batch::load_unaligned(rows[j] + c), Batch(inv[j]), p);
      p.store_unaligned(out + c);
    }
    for (; c < cols; ++c) {
      float p = 0;
      for (int64_t j = 0; j < n; ++j) p = fmaf(rows[j][c], inv[j], p);
      out[c] = p;
    }
  }

  // means[k] = (sum over g of sums[g * stride + k], Kahan-compensated in g order) * scale.
  static void GroupMeans(const float* sums, int64_t groups, int64_t stride, int64_t cols, float scale, float* means) {
    int64_t c = 0;
    const Batch vscale(scale);
    for (; c + kLanes <= cols; c += kLanes) {
      Batch sum(0.0f), comp(0.0f);
      for (int64_t g = 0; g < groups; ++g) {
        const Batch y = Batch::load_unaligned(sums + g * stride + c) - comp;
        const Batch t = sum + y;
        comp = (t - sum) - y;
        sum = t;
      }
      ((sum - comp) * vscale).store_unaligned(means + c);
    }
    for (; c < cols; ++c) {
      float sum = 0, comp = 0;
      for (int64_t g = 0; g < groups; ++g) {
        const float y = sums[g * stride + c] - comp;
        const float t = sum + y;
        comp = (t - sum) - y;
        sum = t;
      }
      means[c] = (sum - comp) * scale;
    }
  }

  // kWide floats at x widened to double, without a round trip through memory where the instruction set has
  // the conversion (xsimd 8 has none).
  static Wide Widen(const float* x) {
#if defined(__AVX512F__)
    if constexpr (std::is_base_of_v<xsimd::avx512f, Arch>) return Wide(_mm512_cvtps_pd(_mm256_loadu_ps(x)));
#endif
#if defined(__AVX__)
    if constexpr (std::is_base_of_v<xsimd::avx, Arch>) return Wide(_mm256_cvtps_pd(_mm_loadu_ps(x)));
#endif
    if constexpr (kWide == 2) {
      return Wide(_mm_cvtps_pd(_mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(x)))));
    } else {
      alignas(64) double d[kWide];
      for (int64_t j = 0; j < kWide; ++j) d[j] = static_cast<double>(x[j]);
      return Wide::load_aligned(d);
    }
  }

  // The lanes of w added in lane order (xsimd::hadd of a double batch, through GCC 12's extract, reads an
  // "undefined" register that -Wuninitialized reports).
  static double SumLanes(const Wide& w) {
    alignas(64) double lanes[kWide];
    w.store_aligned(lanes);
    double total = 0;
    for (int64_t i = 0; i < kWide; ++i) total += lanes[i];
    return total;
  }

  // b's low and high halves widened to double and added lane-wise: a block's float partial sums into double
  // lanes, with no horizontal reduction per block. (The zero-masked extract, as SumLanes says.)
  static Wide WidenHalves(const Batch& b) {
#if defined(__AVX512F__)
    if constexpr (std::is_base_of_v<xsimd::avx512f, Arch>) {
      return Wide(
          _mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(b)),
                        _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xF, _mm512_castps_pd(b), 1)))));
    } else
#endif
#if defined(__AVX__)
        if constexpr (std::is_base_of_v<xsimd::avx, Arch>) {
      return Wide(
          _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(b)), _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1))));
    } else
#endif
    {
      return Wide(_mm_add_pd(_mm_cvtps_pd(b), _mm_cvtps_pd(_mm_movehl_ps(b, b))));
    }
  }

  // out[i] = exp(double(x[i]) - shift) in double (0 for -inf), and their sum: the exact probabilities of a short
  // row for the agreement (kExactAgreementCols in core/metrics.h), through ExpWide (core/simd_exp.h).
  static double ExpDouble(const float* x, int64_t n, float shift, double* out) {
    const Wide vshift(static_cast<double>(shift)), vmin(-708.0), zero(0.0);
    Wide acc0(0.0), acc1(0.0);
    int64_t i = 0;
    // Two vectors per iteration: each is a chain of dependent multiply-adds.
    for (; i + 2 * kWide <= n; i += 2 * kWide) {
      const Wide d0 = Widen(x + i) - vshift, d1 = Widen(x + i + kWide) - vshift;
      const auto u0 = d0 < vmin, u1 = d1 < vmin;  // -inf included
      const Wide e0 = xsimd::select(u0, zero, ExpWide(xsimd::select(u0, zero, d0)));
      const Wide e1 = xsimd::select(u1, zero, ExpWide(xsimd::select(u1, zero, d1)));
      e0.store_unaligned(out + i);
      e1.store_unaligned(out + i + kWide);
      acc0 += e0;
      acc1 += e1;
    }
    double total = xsimd::hadd(acc0 + acc1);
    for (; i < n; ++i) {
      const double d = static_cast<double>(x[i]) - static_cast<double>(shift);
      out[i] = d < -708.0 ? 0.0 : std::exp(d);
      total += out[i];
    }
    return total;
  }

  // p[k] *= scale, then sums[k] += p[k]: a short row's probabilities, into the column sums.
  static void ScaleAccumulate(double* p, int64_t n, double scale, double* sums) {
    const Wide vscale(scale);
    int64_t k = 0;
    for (; k + kWide <= n; k += kWide) {
      const Wide v = Wide::load_unaligned(p + k) * vscale;
      v.store_unaligned(p + k);
      (Wide::load_unaligned(sums + k) + v).store_unaligned(sums + k);
    }
    for (; k < n; ++k) {
      p[k] *= scale;
      sums[k] += p[k];
    }
  }

  // sum_k |p[k] - means[k]|, in double.
  static double AbsDeviationDouble(const double* p, const double* means, int64_t n) {
    Wide acc(0.0);
    int64_t k = 0;
    for (; k + kWide <= n; k += kWide) acc += xsimd::abs(Wide::load_unaligned(p + k) - Wide::load_unaligned(means + k));
    double total = xsimd::hadd(acc);
    for (; k < n; ++k) total += std::abs(p[k] - means[k]);
    return total;
  }

  // sum_k |e[k] * inv - means[k]| over one row, float lanes over kBlock-element blocks added in double.
  static double RowDeviation(const float* e, float inv, const float* means, int64_t cols) {
    const Batch vinv(inv);
    double total = 0;
    int64_t c = 0;
    for (; c + kBlock <= cols; c += kBlock) {
      Batch a0(0.0f), a1(0.0f);
      for (int64_t j = c; j < c + kBlock; j += 2 * kLanes) {
        a0 += xsimd::abs(Batch::load_unaligned(e + j) * vinv - Batch::load_unaligned(means + j));
        a1 += xsimd::abs(Batch::load_unaligned(e + j + kLanes) * vinv - Batch::load_unaligned(means + j + kLanes));
      }
      total += xsimd::hadd(a0 + a1);
    }
    if (c < cols) {
      // Padded with 0 in both: |0 * inv - 0| adds nothing.
      alignas(64) float et[kBlock];
      alignas(64) float mt[kBlock];
      const int64_t padded = PadTail(e + c, cols - c, 0.0f, et);
      PadTail(means + c, cols - c, 0.0f, mt);
      Batch a0(0.0f);
      for (int64_t j = 0; j < padded; j += kLanes) {
        a0 += xsimd::abs(Batch::load_aligned(et + j) * vinv - Batch::load_aligned(mt + j));
      }
      total += xsimd::hadd(a0);
    }
    return total;
  }
};

// The table of this instruction set: every kernel of core/kernel_list.inc, by the same name.
template <class Arch>
KernelTable MakeTable(const char* name) {
  using I = Impl<Arch>;
  return KernelTable{
      name,
#define SAMPLERD_KERNEL(Result, Name, Params, Args) &I::Name,
#include "core/kernel_list.inc"
#undef SAMPLERD_KERNEL
  };
}

}  // namespace samplerd::kernels::detail

#endif  // SAMPLERD_CORE_REDUCE_KERNELS_IMPL_H_
