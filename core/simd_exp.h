// The exponentials of the reduction kernels, for one instruction set: ExpImpl<Arch>::ExpClamped (float32, the
// step's hottest arithmetic), ExpImpl<Arch>::ExpStream (the same over a block of batches, software-pipelined) and
// ExpImpl<Arch>::ExpWide (double, for the exact agreement of short rows).
// Included only by core/reduce_kernels_impl.h (see there for why only Arch templates appear here).
//
//   using Exp = ExpImpl<xsimd::avx2>;
//   const Exp::Batch e = Exp::ExpClamped(Exp::Batch(-1.5f));  // exp(-1.5) within 2 ulp
//   // exp(d[i]) into e[i] for 16 batches of 8: source(j) loads batch j, sink(j, k, d, e) takes its result.
//   using B = Exp::Batch;
//   Exp::ExpStream<16>([&](int64_t j) { return B::load_unaligned(d + 8 * j); },
//                      [&](int64_t j, int, const B&, const B& ej) { ej.store_unaligned(e + 8 * j); });
#ifndef SAMPLERD_CORE_SIMD_EXP_H_
#define SAMPLERD_CORE_SIMD_EXP_H_

#include <immintrin.h>

#include <cstdint>
#include <type_traits>

#include "xsimd/xsimd.hpp"

namespace samplerd::kernels::detail {

template <class Arch>
struct ExpImpl {
  using Batch = xsimd::batch<float, Arch>;
  using Wide = xsimd::batch<double, Arch>;

  // exp(d) in float32 for kMinShifted <= d <= 0 (the only range the kernels need: d = max(x - max, kMinShifted)).
  // The exp is the step's hottest arithmetic (one per logit and per attention entry), and it runs out of
  // multiply-add ports, not memory: the AVX-512 and AVX2 builds therefore use a table of 2^(j/N), N = 16 or 8
  // entries held in one register (looked up with a lane permute), so the polynomial only has to cover
  // |r| <= ln2 / 2N: d = (16 n + j) ln2 / 16 + r, exp(d) = 2^n * 2^(j/16) * exp(r), exp(r) by Taylor to r^3
  // (AVX-512, truncation 0.15 ulp) or r^4 (AVX2, N = 8, 0.02 ulp): 10 or 11 float operations per vector
  // (the two multiply-add ports are what the kernels run out of). SSE2 has no lane permute and keeps
  // the latter: as Cephes' expf, exp(r) = 1 + r + r^2 q(r) with q of degree 4 (minimax coefficients, 3e-9
  // before rounding). Worst case about 1.3 ulp either way (the table entries are rounded to float);
  // tests/core/reduce_kernels_test.cc pins <= 2 ulp for d >= -20 and <= 5 ulp below, and
  // tests/golden/README.md admits exp errors of 3 ulp. Far fewer instructions than xsimd::exp, which also
  // handles overflow, NaN and denormals that cannot occur here.
  // k = N n + j is rounded by adding 1.5 * 2^23 (whose float spacing is 1), which also leaves k in the low
  // bits: j indexes the table, and k shifted into the exponent field adds n to the entry's exponent. The clamp,
  // kMinShifted, rounds to k = -127 N: j = 0 and exponent bits 0, a scale of exactly 0, so masked entries (-inf)
  // come out as 0 with no select. Between it and the smallest normal (d < about -87.3) the result is a
  // denormal off by less than 2^-126, which no sum holding exp(0) = 1 can see.
  static constexpr int kTableBits = std::is_base_of_v<xsimd::avx512f, Arch> ? 4
                                    : std::is_base_of_v<xsimd::avx2, Arch>  ? 3
                                                                            : 0;
  static constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23
  static constexpr int32_t kMagicBits = 0x4B400000;
  // The bits of 2^(j/N), j = 0..N-1, rounded to float, minus j << (23 - kTableBits): adding k << (23 - kTableBits)
  // (k = N n + j) then gives the bits of 2^(j/N) * 2^n, the scale and the table entry in one integer add.
  alignas(64) static constexpr int32_t kPow2SixteenthsBits[16] = {
      0x3F800000, 0x3F7DAAC3, 0x3F7B95C2, 0x3F79C3D3, 0x3F7837F0, 0x3F76F532, 0x3F75FED7, 0x3F75583F,
      0x3F7504F3, 0x3F7508A4, 0x3F75672A, 0x3F76248C, 0x3F7744FD, 0x3F78CCDF, 0x3F7AC0C7, 0x3F7D257D};
  alignas(32) static constexpr int32_t kPow2EighthsBits[8] = {0x3F800000, 0x3F7B95C2, 0x3F7837F0, 0x3F75FED7,
                                                              0x3F7504F3, 0x3F75672A, 0x3F7744FD, 0x3F7AC0C7};
  // N / ln2, and ln2 / N in two parts, the first with 12 significant bits so that k * part is exact
  // (|k| <= 88 N / ln2 < 2^11): r is accurate with or without a fused multiply-add.
  static constexpr float kInvStep = kTableBits == 4 ? 23.0831203f : 11.5415602f;
  static constexpr float kStepHi = kTableBits == 4 ? 0.0433197021484375f : 0.086639404296875f;
  static constexpr float kStepLo = kTableBits == 4 ? 1.99663646e-06f : 3.99327291e-06f;
  // SSE2: the degree-6 polynomial over |r| <= ln2 / 2, ln2 in two parts (the first exact times k).
  static constexpr float kC0 = 4.999999404e-01f, kC1 = 1.666652113e-01f, kC2 = 4.166838899e-02f, kC3 = 8.368710987e-03f,
                         kC4 = 1.381451264e-03f;

  static Batch TableLookup(const Batch& t) {
#if defined(__AVX512F__)
    if constexpr (kTableBits == 4) {
      // vpermps reads the low 4 bits of each index lane: j itself.
      return Batch(
          _mm512_permutexvar_ps(_mm512_castps_si512(t), _mm512_castsi512_ps(_mm512_load_si512(kPow2SixteenthsBits))));
    } else
#endif
#if defined(__AVX2__)
        if constexpr (kTableBits == 3) {
      return Batch(_mm256_permutevar8x32_ps(
          _mm256_castsi256_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(kPow2EighthsBits))),
          _mm256_castps_si256(t)));
    } else
#endif
    {
      return Batch(1.0f);  // not reached: kTableBits == 0 takes the polynomial
    }
  }

  // ExpClamped in three stages, for the kernels that software-pipeline it (ExpStream): the exp is a chain of
  // about ten dependent operations (some 30 cycles), and a loop that issues one whole chain per vector fills
  // the scheduler with operations still waiting on their inputs, so the multiply-add ports idle. Run a few
  // vectors apart, each stage's inputs are ready when it issues.
  struct ExpReduced {
    Batch r;      // d - k ln2 / N
    Batch scale;  // 2^(k / N), exactly
  };
  // Stage 1: t, which holds k = round(d N / ln2) in its low bits (k is rounded by adding 1.5 * 2^23, whose float
  // spacing is 1).
  __attribute__((always_inline)) static Batch ExpRound(const Batch& d) {
    return xsimd::fma(d, Batch(kTableBits > 0 ? kInvStep : 1.44269504088896341f), Batch(kRoundMagic));
  }
  // Stage 2: r and the scale.
  __attribute__((always_inline)) static ExpReduced ExpReduce(const Batch& d, const Batch& t) {
    using IntBatch = xsimd::batch<int32_t, Arch>;
    if constexpr (kTableBits > 0) {
      const Batch neg_k = Batch(kRoundMagic) - t;  // -k, so that r takes two plain multiply-adds
      const Batch r = xsimd::fma(neg_k, Batch(kStepLo), xsimd::fma(neg_k, Batch(kStepHi), d));
      // 2^(j/N) 2^n: the low bits of t are k (the magic's own bits shift out), so one shift and one integer add
      // (which has twice the ports of the float operations) scale the table entry exactly.
      const Batch scale = xsimd::bitwise_cast<Batch>(xsimd::bitwise_cast<IntBatch>(TableLookup(t)) +
                                                     (xsimd::bitwise_cast<IntBatch>(t) << (23 - kTableBits)));
      return {r, scale};
    } else {
      const Batch k = t - Batch(kRoundMagic);
      Batch r = xsimd::fnma(k, Batch(0.693359375f), d);  // k * 0.693359375 is exact: no FMA needed
      r = xsimd::fnma(k, Batch(-2.12194440e-4f), r);
      const IntBatch bits = (xsimd::bitwise_cast<IntBatch>(t) - IntBatch(kMagicBits - 127)) << 23;
      return {r, xsimd::bitwise_cast<Batch>(bits)};
    }
  }
  // Stage 3: exp(r) and the product with the scale.
  __attribute__((always_inline)) static Batch ExpFinish(const ExpReduced& x) {
    const Batch& r = x.r;
    if constexpr (kTableBits > 0) {
      // exp(r) = 1 + r * q, q = 1 + r / 2 + r^2 / 6 (+ r^3 / 24 with the coarser table).
      Batch q;
      if constexpr (kTableBits == 4) {
        q = xsimd::fma(Batch(1.0f / 6.0f), r, Batch(0.5f));
      } else {
        q = xsimd::fma(Batch(1.0f / 24.0f), r, Batch(1.0f / 6.0f));
        q = xsimd::fma(q, r, Batch(0.5f));
      }
      q = xsimd::fma(q, r, Batch(1.0f));
      return xsimd::fma(x.scale * r, q, x.scale);
    } else {
      Batch p(kC4);
      p = xsimd::fma(p, r, Batch(kC3));
      p = xsimd::fma(p, r, Batch(kC2));
      p = xsimd::fma(p, r, Batch(kC1));
      p = xsimd::fma(p, r, Batch(kC0));
      p = xsimd::fma(p, r * r, r + Batch(1.0f));
      return p * x.scale;
    }
  }

  static Batch ExpClamped(const Batch& d) { return ExpFinish(ExpReduce(d, ExpRound(d))); }

  // ExpClamped over batches [0, kBatches) as a three-stage software pipeline, two batches per step: source(j)
  // gives batch j's d, and sink(j, k, d, exp(d)) is called for j in order, with k = j % 2 (a constant at each
  // call, for per-parity accumulators). Batches j + 2, j + 3 are reduced and j + 4, j + 5 rounded while j, j + 1
  // finish. The same bits as ExpClamped.
  template <int64_t kBatches, class Source, class Sink>
  __attribute__((always_inline)) static void ExpStream(Source&& source, Sink&& sink) {
    static_assert(kBatches >= 4 && kBatches % 2 == 0, "whole steps of two, and a pipeline to fill");
    Batch d1[2], t1[2], d2[2];
    ExpReduced x2[2];
    const auto round = [&](int k, int64_t j) __attribute__((always_inline)) {
      d1[k] = source(j);
      t1[k] = ExpRound(d1[k]);
    };
    const auto reduce = [&](int k) __attribute__((always_inline)) {
      x2[k] = ExpReduce(d1[k], t1[k]);
      d2[k] = d1[k];
    };
    const auto finish = [&](int k, int64_t j) __attribute__((always_inline)) { sink(j, k, d2[k], ExpFinish(x2[k])); };
    round(0, 0);
    round(1, 1);
    reduce(0);
    reduce(1);
    round(0, 2);
    round(1, 3);
    int64_t j = 4;
    for (; j < kBatches; j += 2) {
      finish(0, j - 4);
      finish(1, j - 3);
      reduce(0);
      reduce(1);
      round(0, j);
      round(1, j + 1);
    }
    finish(0, j - 4);
    finish(1, j - 3);
    reduce(0);
    reduce(1);
    finish(0, j - 2);
    finish(1, j - 1);
  }

  // exp(d) in double for d in [-708, 0] (ExpDouble: the exact probabilities of short rows). Not xsimd::exp: its range
  // reduction converts double to int64 one lane at a time (xsimd 8 has no vector conversion below AVX-512DQ), 9 ns per
  // entry. Here k = round(d / ln2) by the 1.5 * 2^52 trick, which leaves k in the low mantissa bits; r = d - k ln2 with
  // ln2 in two parts (the first exact times k); exp(r) by Taylor to r^11 over |r| <= ln2 / 2 (relative error < 7e-15);
  // 2^k through the exponent bits. d < -708 (exp < 3e-308, where 2^k would be subnormal) gives 0.
  static Wide ExpWide(const Wide& d) {
    using WideInt = xsimd::batch<int64_t, Arch>;
    const Wide magic(6755399441055744.0);  // 1.5 * 2^52
    const Wide t = xsimd::fma(d, Wide(1.4426950408889634), magic);
    const Wide k = t - magic;
    const Wide r = xsimd::fnma(k, Wide(1.4286068203094172e-06), xsimd::fnma(k, Wide(0.693145751953125), d));
    Wide p = xsimd::fma(Wide(1.0 / 39916800.0), r, Wide(1.0 / 3628800.0));
    p = xsimd::fma(p, r, Wide(1.0 / 362880.0));
    p = xsimd::fma(p, r, Wide(1.0 / 40320.0));
    p = xsimd::fma(p, r, Wide(1.0 / 5040.0));
    p = xsimd::fma(p, r, Wide(1.0 / 720.0));
    p = xsimd::fma(p, r, Wide(1.0 / 120.0));
    p = xsimd::fma(p, r, Wide(1.0 / 24.0));
    p = xsimd::fma(p, r, Wide(1.0 / 6.0));
    p = xsimd::fma(p, r, Wide(0.5));
    p = xsimd::fma(p, r, Wide(1.0));
    p = xsimd::fma(p, r, Wide(1.0));
    const WideInt bits = (xsimd::bitwise_cast<WideInt>(t) - WideInt(static_cast<int64_t>(0x4338000000000000)) +
                          WideInt(static_cast<int64_t>(1023)))
                         << 52;
    return p * xsimd::bitwise_cast<Wide>(bits);
  }
};

}  // namespace samplerd::kernels::detail

#endif  // SAMPLERD_CORE_SIMD_EXP_H_
