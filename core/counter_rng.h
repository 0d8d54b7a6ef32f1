// The counter-based random numbers of docs/contract.md section 5.
//
// Every random number of a step is a pure function of (seed, sequence_id, step, draw index): Philox4x32-10
// (Salmon et al., SC'11) keyed by the seed and a stable hash of the sequence id, with the step and the draw
// index as the counter. No generator state exists, so the same request gives the same token on any replica,
// after a restart, in any batch composition and on any thread.
//
//   double u = UniformDouble(StreamKey{seed, "seq-17"}, /*step=*/42, /*draw=*/0);   // in [0, 1)
#ifndef SAMPLERD_CORE_COUNTER_RNG_H_
#define SAMPLERD_CORE_COUNTER_RNG_H_

#include <array>
#include <cstdint>

#include "absl/strings/string_view.h"

namespace samplerd {

// FNV-1a 64 of the bytes: stable across processes, builds and platforms (unlike std::hash / absl::Hash).
uint64_t StableHash64(absl::string_view bytes);

// SplitMix64's finaliser: a bijective 64-bit mixer.
uint64_t SplitMix64(uint64_t x);

// The Philox4x32-10 block function.
std::array<uint32_t, 4> Philox4x32(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

// The key of one sequence's random stream.
struct StreamKey {
  uint64_t seed = 0;
  absl::string_view sequence_id;
};

// A uniform double in [0, 1) with 53 random bits, for draw `draw` of step `step`.
double UniformDouble(const StreamKey& key, uint64_t step, uint32_t draw);

}  // namespace samplerd

#endif  // SAMPLERD_CORE_COUNTER_RNG_H_
