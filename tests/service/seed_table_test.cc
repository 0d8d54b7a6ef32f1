#include "service/seed_table.h"

#include <string>
#include <vector>

#include "core/step_engine.h"
#include "gtest/gtest.h"

namespace samplerd {
namespace {

TEST(SeedTable, NonZeroRequestPassesThroughAndIsNotRemembered) {
  SeedTable seeds;
  EXPECT_EQ(seeds.Resolve("a", 42), 42u);
  EXPECT_EQ(seeds.size(), 0u);
}

TEST(SeedTable, ZeroGetsANonZeroSeedThatStaysWithTheSequence) {
  SeedTable seeds;
  const uint64_t a = seeds.Resolve("a", 0);
  EXPECT_NE(a, 0u);
  EXPECT_EQ(seeds.Resolve("a", 0), a);
  const uint64_t b = seeds.Resolve("b", 0);
  EXPECT_NE(b, 0u);
  EXPECT_NE(b, a);  // 2^-64 chance of a false failure
  EXPECT_EQ(seeds.Resolve("a", 0), a);
}

TEST(SeedTable, SeparateTablesPickSeparateSeeds) {
  SeedTable first;
  SeedTable second;
  EXPECT_NE(first.Resolve("a", 0), second.Resolve("a", 0));
}

TEST(SeedTable, ForgetsTheLeastRecentlyUsedSequencePastItsCapacity) {
  SeedTable seeds(/*capacity=*/3);
  const uint64_t a = seeds.Resolve("a", 0);
  const uint64_t b = seeds.Resolve("b", 0);
  seeds.Resolve("c", 0);
  seeds.Resolve("d", 0);  // evicts "a"
  EXPECT_EQ(seeds.size(), 3u);
  EXPECT_EQ(seeds.Resolve("b", 0), b);  // "b" is now the most recently used, "c" the least
  EXPECT_NE(seeds.Resolve("a", 0), a);  // a fresh seed, and "c" is evicted
  EXPECT_EQ(seeds.size(), 3u);
  EXPECT_EQ(seeds.Resolve("b", 0), b);
}

// A continuous-batching host keeps a long sequence stepping while short ones start and finish around it.
TEST(SeedTable, ASequenceThatKeepsSteppingKeepsItsSeedWhileManyOthersComeAndGo) {
  SeedTable seeds(/*capacity=*/8, /*max_key_bytes=*/1000);
  const uint64_t a = seeds.Resolve("long-running", 0);
  for (int request = 0; request < 100; ++request) {
    for (int i = 0; i < 6; ++i) seeds.Resolve("short-" + std::to_string(request) + "-" + std::to_string(i), 0);
    ASSERT_EQ(seeds.Resolve("long-running", 0), a) << "request " << request;
  }
  EXPECT_LE(seeds.size(), 8u);
}

TEST(SeedTable, StaysBoundedUnderManySequences) {
  SeedTable seeds(/*capacity=*/100);
  for (int i = 0; i < 10000; ++i) seeds.Resolve("seq-" + std::to_string(i), 0);
  EXPECT_EQ(seeds.size(), 100u);
}

TEST(SeedTable, LongIdsAreBoundedByBytesNotCount) {
  SeedTable seeds(/*capacity=*/4096, /*max_key_bytes=*/1000);
  for (int i = 0; i < 100; ++i) seeds.Resolve(std::string(240, 'a' + i % 26) + std::to_string(i), 0);
  EXPECT_LE(seeds.key_bytes(), 1000u);
  EXPECT_EQ(seeds.size(), 4u);  // four ids of 241-242 bytes fit in 1000
  const uint64_t kept = seeds.Resolve("short", 0);
  EXPECT_EQ(seeds.Resolve("short", 0), kept);
}

TEST(SeedTable, AnIdOverTheByteBoundGetsAFreshSeedEachTimeAndIsNotKept) {
  SeedTable seeds(/*capacity=*/16, /*max_key_bytes=*/100);
  const uint64_t a = seeds.Resolve("a", 0);
  const std::string huge(101, 'x');
  const uint64_t first = seeds.Resolve(huge, 0);
  EXPECT_NE(first, 0u);
  EXPECT_NE(seeds.Resolve(huge, 0), first);  // 2^-64 chance of a false failure
  EXPECT_EQ(seeds.size(), 1u);
  EXPECT_EQ(seeds.Resolve("a", 0), a);
}

// A step whose id the contract refuses (over kMaxSequenceIdBytes) is answered INVALID_ARGUMENT; its seed is
// resolved before that, and must not push the stream's other sequences out of the table.
TEST(SeedTable, AnIdTheContractRefusesIsNotKeptAndForgetsNoOtherSequence) {
  SeedTable seeds;
  std::vector<uint64_t> kept;
  for (int i = 0; i < 8; ++i) kept.push_back(seeds.Resolve("seq" + std::to_string(i), 0));
  for (const size_t length : {kMaxSequenceIdBytes + 1, SeedTable::kDefaultMaxKeyBytes}) {
    EXPECT_NE(seeds.Resolve(std::string(length, 'x'), 0), 0u);
    EXPECT_EQ(seeds.size(), 8u) << length;
  }
  for (int i = 0; i < 8; ++i) EXPECT_EQ(seeds.Resolve("seq" + std::to_string(i), 0), kept[static_cast<size_t>(i)]);
}

}  // namespace
}  // namespace samplerd
