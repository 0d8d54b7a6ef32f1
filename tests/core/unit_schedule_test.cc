// Pins UnitSchedule: every unit runs once, the units this thread ran are the front ones, and phase 2 gives each
// range to the thread that ran it in phase 1; without a ForkJoin everything runs here, in order.
#include "core/unit_schedule.h"

#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace samplerd {
namespace {

// `theirs` on a new thread, every time.
class ThreadForkJoin final : public ForkJoin {
 public:
  void Run(absl::FunctionRef<void()> mine, absl::FunctionRef<void()> theirs) override {
    std::thread other([&] { theirs(); });
    mine();
    other.join();
  }
};

TEST(UnitScheduleTest, WithoutAForkJoinRunsHeadThenEveryUnitInOrderHere) {
  std::vector<int64_t> order;
  UnitSchedule schedule(5, nullptr);
  std::vector<int64_t> next;
  schedule.Run([&] { order.push_back(-1); },
               [&](int64_t u, int64_t n) {
                 order.push_back(u);
                 next.push_back(n);
               });
  EXPECT_EQ(order, (std::vector<int64_t>{-1, 0, 1, 2, 3, 4}));
  EXPECT_EQ(next, (std::vector<int64_t>{1, 2, 3, 4, -1})) << "each unit names the one after it, none after the last";
  EXPECT_EQ(schedule.split(), 5);
  std::vector<int64_t> again;
  schedule.RunAsPlaced([&](int64_t u) { again.push_back(u); });
  EXPECT_EQ(again, (std::vector<int64_t>{4, 3, 2, 1, 0})) << "phase 2 takes the latest unit first";
  std::vector<std::pair<int64_t, int64_t>> halves;
  schedule.RunHalves(100, 16, [&](int64_t b, int64_t e) { halves.emplace_back(b, e); });
  EXPECT_EQ(halves, (std::vector<std::pair<int64_t, int64_t>>{{0, 100}})) << "one thread: one range";
}

TEST(UnitScheduleTest, ASerialForkJoinLeavesEveryUnitToThisThread) {
  SerialForkJoin serial;
  std::vector<int64_t> order;
  UnitSchedule schedule(3, &serial);
  schedule.Run([] {}, [&](int64_t u, int64_t) { order.push_back(u); });
  EXPECT_EQ(order, (std::vector<int64_t>{0, 1, 2})) << "this thread takes them all from the front first";
  EXPECT_EQ(schedule.split(), 3);
}

TEST(UnitScheduleTest, NoUnitsRunsOnlyTheHead) {
  int heads = 0, units = 0;
  UnitSchedule schedule(0, nullptr);
  schedule.Run([&] { ++heads; }, [&](int64_t, int64_t) { ++units; });
  EXPECT_EQ(heads, 1);
  EXPECT_EQ(units, 0);
}

TEST(UnitScheduleTest, TwoThreadsRunEachUnitOnceAndPhaseTwoFollowsPhaseOne) {
  ThreadForkJoin fork_join;
  constexpr int64_t kUnits = 64;
  for (int round = 0; round < 50; ++round) {
    const std::thread::id here = std::this_thread::get_id();
    std::mutex mu;
    std::vector<int> runs(kUnits, 0);
    std::vector<bool> ran_here(kUnits, false);
    std::vector<int64_t> next(kUnits, 0);
    UnitSchedule schedule(kUnits, &fork_join);
    schedule.Run([] {},
                 [&](int64_t u, int64_t n) {
                   std::lock_guard<std::mutex> lock(mu);
                   ++runs[static_cast<size_t>(u)];
                   ran_here[static_cast<size_t>(u)] = std::this_thread::get_id() == here;
                   next[static_cast<size_t>(u)] = n;
                 });
    const int64_t split = schedule.split();
    ASSERT_GE(split, 0);
    ASSERT_LE(split, kUnits);
    for (int64_t u = 0; u < kUnits; ++u) {
      EXPECT_EQ(runs[static_cast<size_t>(u)], 1) << "unit " << u;
      EXPECT_EQ(ran_here[static_cast<size_t>(u)], u < split) << "unit " << u << " split " << split;
      // The front goes up, the back down: each names the unit it would take next.
      const int64_t expected_next = u < split ? (u + 1 < kUnits ? u + 1 : -1) : u - 1;
      EXPECT_EQ(next[static_cast<size_t>(u)], expected_next) << "unit " << u << " split " << split;
    }
    // Between the phases: the halves split at a multiple of the alignment, one on each thread when both ran
    // units; otherwise the whole range here.
    std::vector<std::pair<int64_t, int64_t>> halves_here, halves_there;
    schedule.RunHalves(1000, 16, [&](int64_t b, int64_t e) {
      std::lock_guard<std::mutex> lock(mu);
      (std::this_thread::get_id() == here ? halves_here : halves_there).emplace_back(b, e);
    });
    if (split > 0 && split < kUnits) {
      EXPECT_EQ(halves_here, (std::vector<std::pair<int64_t, int64_t>>{{0, 496}}));
      EXPECT_EQ(halves_there, (std::vector<std::pair<int64_t, int64_t>>{{496, 1000}}));
    } else {
      EXPECT_EQ(halves_here, (std::vector<std::pair<int64_t, int64_t>>{{0, 1000}})) << "split " << split;
      EXPECT_TRUE(halves_there.empty());
    }
    std::vector<int> covered(kUnits, 0);
    std::vector<int64_t> here_order, there_order;
    schedule.RunAsPlaced([&](int64_t u) {
      std::lock_guard<std::mutex> lock(mu);
      ++covered[static_cast<size_t>(u)];
      (std::this_thread::get_id() == here ? here_order : there_order).push_back(u);
    });
    // Each thread takes its own phase-1 units again, latest first (every unit here when one thread ran them all).
    std::vector<int64_t> expected_here, expected_there;
    const bool shared = split > 0 && split < kUnits;
    for (int64_t u = (shared ? split : kUnits) - 1; u >= 0; --u) expected_here.push_back(u);
    for (int64_t u = split; shared && u < kUnits; ++u) expected_there.push_back(u);
    EXPECT_EQ(here_order, expected_here) << "split " << split;
    EXPECT_EQ(there_order, expected_there) << "split " << split;
    for (int64_t u = 0; u < kUnits; ++u) EXPECT_EQ(covered[static_cast<size_t>(u)], 1) << "unit " << u;
  }
}

}  // namespace
}  // namespace samplerd
