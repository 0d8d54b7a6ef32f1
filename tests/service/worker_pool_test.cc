// WorkerPool: every index runs exactly once, `done` runs once after the last task, jobs share the workers, and
// the destructor finishes what was submitted. No timing is asserted (speed is for the benchmarks); waits are
// bounded so a broken pool fails instead of hanging.
#include "service/worker_pool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace samplerd {
namespace {

using ::testing::HasSubstr;

constexpr auto kPatience = std::chrono::seconds(30);

// Counts `done` calls and lets the test wait for a number of them.
class DoneCounter {
 public:
  std::function<void()> Callback() {
    return [this] {
      std::lock_guard<std::mutex> lock(mu_);
      ++count_;
      cv_.notify_all();
    };
  }
  bool WaitFor(int count) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, kPatience, [&] { return count_ >= count; });
  }
  int count() {
    std::lock_guard<std::mutex> lock(mu_);
    return count_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int count_ = 0;
};

std::unique_ptr<WorkerPool> MakePool(int workers) {
  absl::StatusOr<std::unique_ptr<WorkerPool>> pool = WorkerPool::Create({workers});
  EXPECT_TRUE(pool.ok()) << pool.status();
  return pool.ok() ? *std::move(pool) : nullptr;
}

TEST(WorkerPool, RunsEveryIndexExactlyOnceThenDoneOnce) {
  std::unique_ptr<WorkerPool> pool = MakePool(4);
  ASSERT_NE(pool, nullptr);
  constexpr int kTasks = 1000;
  std::vector<std::atomic<int>> runs(kTasks);
  std::atomic<int> returned{0};
  std::atomic<int> returned_at_done{-1};
  DoneCounter done;
  auto on_done = done.Callback();
  pool->ParallelFor(
      kTasks,
      [&](int i, WorkerPool::WorkerState*) {
        runs[static_cast<size_t>(i)].fetch_add(1);
        returned.fetch_add(1);
      },
      [&] {
        returned_at_done = returned.load();
        on_done();
      });
  ASSERT_TRUE(done.WaitFor(1));
  pool.reset();  // joins: no late second `done`
  EXPECT_EQ(done.count(), 1);
  EXPECT_EQ(returned_at_done.load(), kTasks);
  for (int i = 0; i < kTasks; ++i) EXPECT_EQ(runs[static_cast<size_t>(i)].load(), 1) << "index " << i;
}

TEST(WorkerPool, NoTasksRunsDoneAtOnceOnTheCaller) {
  std::unique_ptr<WorkerPool> pool = MakePool(2);
  ASSERT_NE(pool, nullptr);
  const std::thread::id caller = std::this_thread::get_id();
  std::thread::id ran_on;
  bool task_ran = false;
  pool->ParallelFor(
      0, [&](int, WorkerPool::WorkerState*) { task_ran = true; }, [&] { ran_on = std::this_thread::get_id(); });
  EXPECT_EQ(ran_on, caller);
  EXPECT_FALSE(task_ran);
}

// One job's tasks run on several workers at once: each task waits until every worker holds one.
TEST(WorkerPool, SpreadsOneJobOverEveryWorker) {
  constexpr int kWorkers = 3;
  std::unique_ptr<WorkerPool> pool = MakePool(kWorkers);
  ASSERT_NE(pool, nullptr);
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  bool all_met = true;
  std::set<int> workers_seen;
  std::set<const Workspace*> workspaces_seen;
  DoneCounter done;
  pool->ParallelFor(
      kWorkers,
      [&](int, WorkerPool::WorkerState* w) {
        std::unique_lock<std::mutex> lock(mu);
        workers_seen.insert(w->index);
        workspaces_seen.insert(&w->workspace);
        ++arrived;
        cv.notify_all();
        if (!cv.wait_for(lock, kPatience, [&] { return arrived >= kWorkers; })) all_met = false;
      },
      done.Callback());
  ASSERT_TRUE(done.WaitFor(1));
  EXPECT_TRUE(all_met) << "the tasks of one job did not run concurrently";
  EXPECT_EQ(workers_seen, (std::set<int>{0, 1, 2}));
  EXPECT_EQ(workspaces_seen.size(), 3u) << "each worker has its own Workspace";
}

TEST(WorkerPool, ServesManyJobsFromManyThreads) {
  std::unique_ptr<WorkerPool> pool = MakePool(2);
  ASSERT_NE(pool, nullptr);
  constexpr int kThreads = 8;
  constexpr int kJobsPerThread = 50;
  std::atomic<int> tasks{0};
  DoneCounter done;
  auto on_done = done.Callback();
  std::vector<std::thread> submitters;
  for (int t = 0; t < kThreads; ++t) {
    submitters.emplace_back([&, t] {
      for (int j = 0; j < kJobsPerThread; ++j) {
        pool->ParallelFor(1 + (t + j) % 7, [&](int, WorkerPool::WorkerState*) { tasks.fetch_add(1); }, on_done);
      }
    });
  }
  for (std::thread& t : submitters) t.join();
  ASSERT_TRUE(done.WaitFor(kThreads * kJobsPerThread));
  int expected = 0;
  for (int t = 0; t < kThreads; ++t) {
    for (int j = 0; j < kJobsPerThread; ++j) expected += 1 + (t + j) % 7;
  }
  EXPECT_EQ(tasks.load(), expected);
}

TEST(WorkerPool, DestructorFinishesSubmittedJobs) {
  std::unique_ptr<WorkerPool> pool = MakePool(1);
  ASSERT_NE(pool, nullptr);
  std::atomic<int> tasks{0};
  std::atomic<int> dones{0};
  for (int j = 0; j < 20; ++j) {
    pool->ParallelFor(
        10,
        [&](int, WorkerPool::WorkerState*) {
          std::this_thread::sleep_for(std::chrono::microseconds(100));
          tasks.fetch_add(1);
        },
        [&] { dones.fetch_add(1); });
  }
  pool.reset();
  EXPECT_EQ(tasks.load(), 200);
  EXPECT_EQ(dones.load(), 20);
}

TEST(WorkerPool, SizeIsTheCpuCountByDefault) {
  EXPECT_GE(WorkerPool::DefaultWorkers(), 1);
  std::unique_ptr<WorkerPool> pool = MakePool(0);
  ASSERT_NE(pool, nullptr);
  EXPECT_EQ(pool->size(), WorkerPool::DefaultWorkers());
}

TEST(WorkerPool, CreateRejectsOutOfRangeCountsNamingTheFlag) {
  for (int bad : {-1, WorkerPool::kMaxWorkers + 1}) {
    absl::StatusOr<std::unique_ptr<WorkerPool>> pool = WorkerPool::Create({bad});
    ASSERT_FALSE(pool.ok());
    EXPECT_EQ(pool.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(pool.status().message()), HasSubstr("--workers"));
    EXPECT_THAT(std::string(pool.status().message()), HasSubstr(std::to_string(bad)));
  }
}

}  // namespace
}  // namespace samplerd
