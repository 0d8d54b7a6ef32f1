// Pins the counter-based generator: Philox4x32-10 known answers (Random123's kat_vectors), a stable
// sequence-id hash, purity (same inputs, same number) and independence of the addressing words.
#include <cmath>
#include <set>
#include <thread>
#include <vector>

#include "core/counter_rng.h"
#include "gtest/gtest.h"

namespace samplerd {
namespace {

TEST(Philox4x32Test, MatchesRandom123KnownAnswers) {
  EXPECT_EQ(Philox4x32({0, 0, 0, 0}, {0, 0}),
            (std::array<uint32_t, 4>{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  EXPECT_EQ(Philox4x32({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu}),
            (std::array<uint32_t, 4>{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  EXPECT_EQ(Philox4x32({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u}),
            (std::array<uint32_t, 4>{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(StableHash64Test, IsFnv1a64) {
  EXPECT_EQ(StableHash64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(StableHash64("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(StableHash64("foobar"), 0x85944171f73967e8ull);
}

TEST(UniformDoubleTest, IsAPureFunctionOfItsAddress) {
  const double a = UniformDouble({42, "seq"}, 7, 1);
  std::vector<double> from_threads(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] { from_threads[t] = UniformDouble({42, "seq"}, 7, 1); });
  }
  for (auto& th : threads) th.join();
  for (double v : from_threads) EXPECT_EQ(v, a);
}

TEST(UniformDoubleTest, EveryAddressWordChangesTheNumber) {
  const double base = UniformDouble({42, "seq"}, 7, 1);
  EXPECT_NE(UniformDouble({43, "seq"}, 7, 1), base);
  EXPECT_NE(UniformDouble({42, "seq2"}, 7, 1), base);
  EXPECT_NE(UniformDouble({42, "seq"}, 8, 1), base);
  EXPECT_NE(UniformDouble({42, "seq"}, 7, 2), base);
  EXPECT_NE(UniformDouble({42, "seq"}, 7ull + (1ull << 32), 1), base);
}

TEST(UniformDoubleTest, IsUniformOnTheUnitInterval) {
  // 20 bins, 100000 draws: chi-square with 19 degrees of freedom; 43.8 is the 0.999 quantile.
  constexpr int kBins = 20, kDraws = 100000;
  std::vector<int> counts(kBins, 0);
  std::set<double> distinct;
  for (int i = 0; i < kDraws; ++i) {
    const double u = UniformDouble({static_cast<uint64_t>(i % 97), "s"}, static_cast<uint64_t>(i), 0);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    ++counts[static_cast<int>(u * kBins)];
    distinct.insert(u);
  }
  double chi2 = 0;
  const double expected = static_cast<double>(kDraws) / kBins;
  for (int c : counts) chi2 += (c - expected) * (c - expected) / expected;
  EXPECT_LT(chi2, 43.8);
  EXPECT_EQ(distinct.size(), static_cast<size_t>(kDraws));
}

}  // namespace
}  // namespace samplerd
