// bfloat16 -> float32 for one instruction set, exact (the bf16 bits are the float's upper half):
// Bf16Impl<Arch>::LoadBf16 for one batch (which the first pass over a bf16 tensor converts with) and
// Bf16Impl<Arch>::ConvertBf16 for an array. Included only by core/reduce_kernels_impl.h.
//
//   Bf16Impl<xsimd::sse2>::ConvertBf16(bytes, n, floats);  // floats[i] = the bf16 at bytes + 2 i
#ifndef SAMPLERD_CORE_SIMD_BF16_H_
#define SAMPLERD_CORE_SIMD_BF16_H_

#include <immintrin.h>

#include <cstdint>
#include <type_traits>

#include "xsimd/xsimd.hpp"

namespace samplerd::kernels::detail {

template <class Arch>
struct Bf16Impl {
  using Batch = xsimd::batch<float, Arch>;
  static constexpr int64_t kLanes = static_cast<int64_t>(Batch::size);

  // bfloat16 -> float32 for one batch, exactly: the bf16 bits are the float's upper half. Widening uses the
  // instruction set's own zero-extension (xsimd 8 has no widening conversion).
  static Batch LoadBf16(const char* p) {
#if defined(__AVX512F__)
    if constexpr (std::is_base_of_v<xsimd::avx512f, Arch>) {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
      return Batch(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
    } else
#endif
#if defined(__AVX2__)
        if constexpr (std::is_base_of_v<xsimd::avx2, Arch>) {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      return Batch(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
    } else
#endif
    {
      const __m128i h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
      return Batch(_mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), h)));
    }
  }
  static float Bf16At(const char* p) {
    const uint32_t u = (static_cast<uint32_t>(static_cast<unsigned char>(p[0])) |
                        static_cast<uint32_t>(static_cast<unsigned char>(p[1])) << 8)
                       << 16;
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
  }

  // out[i] = the bfloat16 at src + 2 i, a batch at a time.
  static void ConvertBf16(const char* src, int64_t n, float* out) {
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) LoadBf16(src + 2 * i).store_unaligned(out + i);
    for (; i < n; ++i) out[i] = Bf16At(src + 2 * i);
  }
};

}  // namespace samplerd::kernels::detail

#endif  // SAMPLERD_CORE_SIMD_BF16_H_
