#include "core/counter_rng.h"

namespace samplerd {
namespace {

// Philox4x32 constants from the paper (and Random123).
constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;
constexpr uint32_t kWeyl1 = 0xBB67AE85u;

inline void MulHiLo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t product = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(product >> 32);
  *lo = static_cast<uint32_t>(product);
}

}  // namespace

uint64_t StableHash64(absl::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

std::array<uint32_t, 4> Philox4x32(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    MulHiLo(kMul0, ctr[0], &hi0, &lo0);
    MulHiLo(kMul1, ctr[2], &hi1, &lo1);
    ctr = {hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0};
    key[0] += kWeyl0;
    key[1] += kWeyl1;
  }
  return ctr;
}

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

double UniformDouble(const StreamKey& key, uint64_t step, uint32_t draw) {
  // The Philox key binds seed and sequence: two sequences with the same seed draw independent streams,
  // and a stream's numbers are addressed by (step, draw) in the counter.
  const uint64_t k64 = SplitMix64(key.seed ^ SplitMix64(StableHash64(key.sequence_id)));
  const std::array<uint32_t, 4> counter = {static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32), draw, 0u};
  const std::array<uint32_t, 2> k = {static_cast<uint32_t>(k64), static_cast<uint32_t>(k64 >> 32)};
  const std::array<uint32_t, 4> out = Philox4x32(counter, k);
  const uint64_t bits = (static_cast<uint64_t>(out[0]) << 32 | out[1]) >> 11;
  return static_cast<double>(bits) * 0x1.0p-53;
}

}  // namespace samplerd
