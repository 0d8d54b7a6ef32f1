// WorkerPool: every index runs exactly once, `done` runs once after the last task, jobs share the workers, and
// the destructor finishes what was submitted. No timing is asserted (speed is for the benchmarks); waits are
// bounded so a broken pool fails instead of hanging.
#include "service/worker_pool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
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
        pool->ParallelFor(
            1 + (t + j) % 7, [&](int, WorkerPool::WorkerState*) { tasks.fetch_add(1); }, on_done);
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

// Runs `body(state)` as the single task of a job and waits for it.
void RunAsTask(WorkerPool* pool, const std::function<void(WorkerPool::WorkerState*)>& body) {
  DoneCounter done;
  pool->ParallelFor(
      1, [&](int, WorkerPool::WorkerState* w) { body(w); }, done.Callback());
  ASSERT_TRUE(done.WaitFor(1));
}

TEST(WorkerPoolForkJoin, AnIdleWorkerRunsTheOtherHalf) {
  std::unique_ptr<WorkerPool> pool = MakePool(2);
  ASSERT_NE(pool, nullptr);
  bool shared = false;
  int both_ran = 0, calls = 0;
  const auto give_up = std::chrono::steady_clock::now() + kPatience;
  // A worker that is just going back to sleep may miss one offer; then both halves run here, which is also
  // correct, and the next call tries again.
  while (!shared && std::chrono::steady_clock::now() < give_up) {
    RunAsTask(pool.get(), [&](WorkerPool::WorkerState* w) {
      ASSERT_NE(w->fork_join, nullptr);
      const std::thread::id me = std::this_thread::get_id();
      std::atomic<bool> theirs_started{false};
      std::thread::id theirs_thread;
      bool mine_ran = false;
      w->fork_join->Run(
          [&] {
            mine_ran = true;
            // Give the other worker time to take its half: wait (bounded) until it has started.
            const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
            while (!theirs_started.load() && std::chrono::steady_clock::now() < until) std::this_thread::yield();
          },
          [&] {
            theirs_thread = std::this_thread::get_id();
            theirs_started.store(true);
          });
      ++calls;
      if (mine_ran && theirs_started.load()) ++both_ran;
      shared = theirs_thread != me;
    });
  }
  EXPECT_TRUE(shared) << "no call out of " << calls << " ran the other half on another worker";
  EXPECT_EQ(both_ran, calls) << "Run returned before both halves had run";
}

TEST(WorkerPoolForkJoin, RunsBothHalvesOnTheCallerWhenNoWorkerIsIdle) {
  constexpr int kWorkers = 2;
  std::unique_ptr<WorkerPool> pool = MakePool(kWorkers);
  ASSERT_NE(pool, nullptr);
  std::mutex mu;
  std::condition_variable cv;
  int before = 0, after = 0;
  std::atomic<int> on_caller{0}, halves{0};
  bool met = true;
  auto rendezvous = [&](int* count) {
    std::unique_lock<std::mutex> lock(mu);
    ++*count;
    cv.notify_all();
    if (!cv.wait_for(lock, kPatience, [&] { return *count >= kWorkers; })) met = false;
  };
  DoneCounter done;
  pool->ParallelFor(
      kWorkers,
      [&](int, WorkerPool::WorkerState* w) {
        rendezvous(&before);  // every worker is busy from here ...
        const std::thread::id me = std::this_thread::get_id();
        w->fork_join->Run([&] { halves.fetch_add(1); },
                          [&] {
                            halves.fetch_add(1);
                            if (std::this_thread::get_id() == me) on_caller.fetch_add(1);
                          });
        rendezvous(&after);  // ... to here
      },
      done.Callback());
  ASSERT_TRUE(done.WaitFor(1));
  EXPECT_TRUE(met);
  EXPECT_EQ(halves.load(), 2 * kWorkers);
  EXPECT_EQ(on_caller.load(), kWorkers) << "a half went to a worker that was busy";
}

TEST(WorkerPoolForkJoin, ManyJobsSharingStepsRunEveryHalfExactlyOnce) {
  std::unique_ptr<WorkerPool> pool = MakePool(3);
  ASSERT_NE(pool, nullptr);
  constexpr int kThreads = 4;
  constexpr int kJobsPerThread = 200;
  std::atomic<int> mine{0}, theirs{0}, incomplete{0};
  DoneCounter done;
  auto on_done = done.Callback();
  std::vector<std::thread> submitters;
  for (int t = 0; t < kThreads; ++t) {
    submitters.emplace_back([&, t] {
      for (int j = 0; j < kJobsPerThread; ++j) {
        pool->ParallelFor(
            1 + (t + j) % 3,
            [&](int, WorkerPool::WorkerState* w) {
              for (int k = 0; k < 2; ++k) {  // a step forks twice (row groups, then agreement deviations)
                std::atomic<int> ran{0};
                w->fork_join->Run(
                    [&] {
                      mine.fetch_add(1);
                      ran.fetch_add(1);
                    },
                    [&] {
                      theirs.fetch_add(1);
                      ran.fetch_add(1);
                    });
                if (ran.load() != 2) incomplete.fetch_add(1);
              }
            },
            on_done);
      }
    });
  }
  for (std::thread& t : submitters) t.join();
  ASSERT_TRUE(done.WaitFor(kThreads * kJobsPerThread));
  int tasks = 0;
  for (int t = 0; t < kThreads; ++t) {
    for (int j = 0; j < kJobsPerThread; ++j) tasks += 1 + (t + j) % 3;
  }
  EXPECT_EQ(mine.load(), 2 * tasks);
  EXPECT_EQ(theirs.load(), 2 * tasks);
  EXPECT_EQ(incomplete.load(), 0) << "Run returned before both halves had run";
}

TEST(WorkerPoolForkJoin, ASingleWorkerPoolLendsNone) {
  std::unique_ptr<WorkerPool> pool = MakePool(1);
  ASSERT_NE(pool, nullptr);
  RunAsTask(pool.get(), [](WorkerPool::WorkerState* w) { EXPECT_EQ(w->fork_join, nullptr); });
}

TEST(WorkerPoolRunHere, RunsOnTheCallerWithASpareStateWhenAWorkerIsIdle) {
  std::unique_ptr<WorkerPool> pool = MakePool(2);
  ASSERT_NE(pool, nullptr);
  const std::thread::id me = std::this_thread::get_id();
  std::thread::id ran_on;
  const Workspace* first = nullptr;
  const Workspace* second = nullptr;
  ASSERT_TRUE(pool->TryRunHere([&](WorkerPool::WorkerState* w) {
    ran_on = std::this_thread::get_id();
    first = &w->workspace;
    EXPECT_EQ(w->index, -1);
    EXPECT_NE(w->fork_join, nullptr);
  }));
  EXPECT_EQ(ran_on, me);
  // The next caller gets the same scratch back: a quiet server's lone steps allocate nothing either.
  ASSERT_TRUE(pool->TryRunHere([&](WorkerPool::WorkerState* w) { second = &w->workspace; }));
  EXPECT_EQ(first, second);
}

TEST(WorkerPoolRunHere, DeclinesWhileEveryWorkerIsBusyOrAJobIsQueued) {
  std::unique_ptr<WorkerPool> pool = MakePool(1);
  ASSERT_NE(pool, nullptr);
  std::mutex mu;
  std::condition_variable cv;
  bool started = false, release = false;
  DoneCounter done;
  pool->ParallelFor(
      1,
      [&](int, WorkerPool::WorkerState*) {
        std::unique_lock<std::mutex> lock(mu);
        started = true;
        cv.notify_all();
        cv.wait_for(lock, kPatience, [&] { return release; });
      },
      done.Callback());
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, kPatience, [&] { return started; }));
  }
  bool ran = false;
  EXPECT_FALSE(pool->TryRunHere([&](WorkerPool::WorkerState*) { ran = true; })) << "the only worker is busy";
  // A queued job also declines it: the queue is served first come, first served.
  pool->ParallelFor(
      1, [](int, WorkerPool::WorkerState*) {}, done.Callback());
  EXPECT_FALSE(pool->TryRunHere([&](WorkerPool::WorkerState*) { ran = true; }));
  EXPECT_FALSE(ran);
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  ASSERT_TRUE(done.WaitFor(2));
  // The worker counts itself idle as its task returns, before `done`: accepted now.
  EXPECT_TRUE(pool->TryRunHere([&](WorkerPool::WorkerState*) { ran = true; }));
  EXPECT_TRUE(ran);
}

TEST(WorkerPoolRunHere, ShareStepsOffLendsNoForkJoin) {
  absl::StatusOr<std::unique_ptr<WorkerPool>> pool = WorkerPool::Create({2, /*share_steps=*/false});
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_TRUE((*pool)->TryRunHere([](WorkerPool::WorkerState* w) { EXPECT_EQ(w->fork_join, nullptr); }));
  RunAsTask(pool->get(), [](WorkerPool::WorkerState* w) { EXPECT_EQ(w->fork_join, nullptr); });
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
