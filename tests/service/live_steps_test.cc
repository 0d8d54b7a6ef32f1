#include "service/live_steps.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace samplerd {
namespace {

TEST(StepRing, KeepsTheLatestCapacityPointsOldestFirstAndCountsEveryStep) {
  StepRing ring;
  const int total = static_cast<int>(StepRing::kCapacity) + 100;
  for (int i = 0; i < total; ++i) ring.Push(i % 2 ? v1::REGIME_ARGMAX : v1::REGIME_EXPLORE, i, 2.0f * i);
  const std::vector<StepRing::Point> points = ring.Snapshot();
  ASSERT_EQ(points.size(), StepRing::kCapacity);
  EXPECT_EQ(points.front().logits_entropy, 100);
  EXPECT_EQ(points.front().logits_varentropy, 200);
  EXPECT_EQ(points.front().regime, v1::REGIME_EXPLORE);
  EXPECT_EQ(points.back().logits_entropy, total - 1);
  EXPECT_EQ(ring.Counts()[v1::REGIME_ARGMAX], static_cast<uint64_t>(total / 2));
  EXPECT_EQ(ring.Counts()[v1::REGIME_EXPLORE], static_cast<uint64_t>(total - total / 2));
}

TEST(StepRing, PointsKeepTheirMetricsAndRegime) {
  StepRing ring;
  ring.Push(v1::REGIME_RESAMPLE, 7.123456f, 12.345678f);
  ring.Push(v1::REGIME_ARGMAX, 0.0f, 0.0f);
  const std::vector<StepRing::Point> points = ring.Snapshot();
  ASSERT_EQ(points.size(), 2u);
  EXPECT_EQ(points[0].logits_entropy, 7.123456f);
  EXPECT_NEAR(points[0].logits_varentropy, 12.345678f, 12.345678f * 2e-6f);
  EXPECT_EQ(points[0].regime, v1::REGIME_RESAMPLE);
  EXPECT_EQ(points[1].logits_entropy, 0.0f);
  EXPECT_EQ(points[1].logits_varentropy, 0.0f);
  EXPECT_EQ(points[1].regime, v1::REGIME_ARGMAX);
}

TEST(StepRing, StepWithoutMetricsIsCountedButNotDrawn) {
  StepRing ring;
  ring.Push(v1::REGIME_CLARIFY, NAN, 1.0f);
  EXPECT_TRUE(ring.Snapshot().empty());
  EXPECT_EQ(ring.Counts()[v1::REGIME_CLARIFY], 1u);
}

// Writers on several threads and a reader at once (a ThreadSanitizer build checks the accesses): every step is
// counted, and every point read is one that was written whole (its varentropy is twice its entropy; integers
// below 2^20 survive the packing exactly).
TEST(StepRing, ConcurrentPushesAndSnapshotsSeeWholePoints) {
  StepRing ring;
  constexpr int kThreads = 4, kPerThread = 20000;
  std::atomic<bool> done{false};
  std::atomic<int> torn{0};
  std::thread reader([&] {
    while (!done.load()) {
      for (const StepRing::Point& p : ring.Snapshot()) {
        if (p.logits_varentropy != 2 * p.logits_entropy || p.regime != v1::REGIME_ADAPTIVE) ++torn;
      }
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&ring, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const float h = static_cast<float>(t * kPerThread + i);
        ring.Push(v1::REGIME_ADAPTIVE, h, 2 * h);
      }
    });
  }
  for (std::thread& w : writers) w.join();
  done = true;
  reader.join();
  EXPECT_EQ(torn.load(), 0);
  EXPECT_EQ(ring.Counts()[v1::REGIME_ADAPTIVE], static_cast<uint64_t>(kThreads * kPerThread));
  EXPECT_EQ(ring.Snapshot().size(), StepRing::kCapacity);
}

TEST(LiveSteps, JsonListsRegistryProfilesWithBoundsAndProfilesWithSteps) {
  LiveSteps live;
  live.ForProfile("fixed")->Push(v1::REGIME_FIXED, 1.5f, 0.25f);
  live.ForProfile("gone")->Push(v1::REGIME_ARGMAX, 0.01f, 0.02f);
  const nlohmann::json data = nlohmann::json::parse(live.Json(ProfileRegistry::BuiltIn().get()));
  EXPECT_EQ(data.at("regimes").at(v1::REGIME_ARGMAX), "argmax");
  std::map<std::string, nlohmann::json> profiles;
  for (const nlohmann::json& p : data.at("profiles")) profiles[p.at("name").get<std::string>()] = p;
  EXPECT_THAT(profiles, ::testing::SizeIs(4));  // the three built-ins and "gone" (steps, no longer configured)
  EXPECT_EQ(profiles["fixed"].at("steps"), 1);
  EXPECT_EQ(profiles["fixed"].at("points"), nlohmann::json::parse("[[1.5, 0.25, 6]]"));
  EXPECT_EQ(profiles["gone"].at("counts").at("argmax"), 1);
  EXPECT_FALSE(profiles["gone"].contains("rules"));
  const nlohmann::json& first_rule = profiles["entropix"].at("rules").at(0);
  EXPECT_EQ(first_rule.at("regime"), "argmax");
  EXPECT_EQ(first_rule.at("bounds").at(0).at("metric"), "logits_entropy");
  EXPECT_EQ(first_rule.at("bounds").at(0).at("op"), "lt");
  EXPECT_EQ(profiles["entropix"].at("default_regime"), "adaptive");
}

TEST(LiveSteps, ProfilesBeyondTheCapAreNotKept) {
  LiveSteps live;
  for (size_t i = 0; i < LiveSteps::kMaxProfiles; ++i) ASSERT_NE(live.ForProfile("p" + std::to_string(i)), nullptr);
  EXPECT_EQ(live.ForProfile("one-more"), nullptr);
  EXPECT_NE(live.ForProfile("p0"), nullptr);
}

}  // namespace
}  // namespace samplerd
