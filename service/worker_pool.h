// A fixed set of threads that run the core steps of every request, each with its own core Workspace.
//
// The gRPC reactions must not block (they run on gRPC's few callback threads), so a stream hands its request to
// the pool and gets a callback when the last step is done; only a lone step on a pool with a worker to spare
// runs at once on the reaction's thread (TryRunHere), where it costs no more core time than on that worker. One
// request's steps are spread over all workers (each idle worker takes the next step index of the oldest job), so a
// batched request uses every core; jobs start in submission order, so streams are served first come, first served.
// Scratch memory is per worker, not per stream: a thousand idle streams hold no Workspace.
//
// A step may also be shared: each worker lends core a ForkJoin (WorkerState::fork_join) that hands half of a
// step's passes to an idle worker, if there is one. That is what makes a lone stream's step take two cores'
// time instead of one's; when every worker is busy it costs one lock and a check.
//
//   absl::StatusOr<std::unique_ptr<WorkerPool>> pool = WorkerPool::Create({/*workers=*/0});
//   (*pool)->ParallelFor(
//       request.steps_size(),
//       [&](int i, WorkerPool::WorkerState* w) { /* RunStep(..., &w->workspace, &w->output) for step i */ },
//       [=] { /* every step is done: start the write */ });
#ifndef SAMPLERD_SERVICE_WORKER_POOL_H_
#define SAMPLERD_SERVICE_WORKER_POOL_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "core/fork_join.h"
#include "core/step_engine.h"

namespace samplerd {

// WorkerPool
//
// Thread-safe. The destructor runs every job already submitted to completion (their `done` included), then
// joins the threads; nothing may be submitted once it has started.
class WorkerPool {
 public:
  // Most threads a pool may have: far more than cores only costs memory (a Workspace each).
  static constexpr int kMaxWorkers = 1024;

  struct Options {
    // Threads; 0 = one per CPU this process may run on (DefaultWorkers()).
    int workers = 0;
    // Whether WorkerState::fork_join shares steps with idle workers (else it is null: one step, one thread).
    bool share_steps = true;
  };

  // What a task may use: the scratch of the worker that runs it, reused task after task, so a worker at steady
  // state allocates nothing in core.
  struct WorkerState {
    int index = 0;  // 0 .. size() - 1; -1 in TryRunHere
    Workspace workspace;
    StepOutput output;
    ForkJoin* fork_join = nullptr;  // for RunStep: shares the step with an idle worker; null if it cannot
  };

  // INVALID_ARGUMENT naming --workers when `options.workers` is outside [0, kMaxWorkers].
  static absl::StatusOr<std::unique_ptr<WorkerPool>> Create(Options options);

  // The CPUs in this process's affinity mask (what taskset / a container's cpuset allows), at least 1.
  static int DefaultWorkers();

  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;
  ~WorkerPool();

  int size() const { return static_cast<int>(threads_.size()); }

  // ParallelFor()
  //
  // Runs task(i, state) once for every i in [0, n), on any workers and in any order, then `done()` exactly once,
  // after every task has returned, on the worker that finished last (or on the calling thread, at once, when
  // n <= 0). Neither may throw. Whatever the tasks read must outlive `done`; the pool keeps only the two
  // functions. A task that must report an error writes it into its own output slot: the pool has no error
  // channel, so one failed step never stops the others.
  void ParallelFor(int n, std::function<void(int, WorkerState*)> task, std::function<void()> done);

  // TryRunHere()
  //
  // Runs task(state) on the calling thread, now, and returns true, if no job is queued and fewer tasks run than
  // there are workers (the caller then stands in for an idle worker, so the cores are not oversubscribed);
  // otherwise returns false at once, without running it. `state` is a spare WorkerState (its own Workspace, kept
  // for the next caller) whose fork_join shares with the idle workers. For a lone step on a server that keeps up,
  // this saves the hand-off to a worker and back (a futex wake each way: tens of microseconds on a VM,
  // BM_PoolHop), which is more than half of a small step's work.
  bool TryRunHere(absl::FunctionRef<void(WorkerState*)> task);

 private:
  struct Job {
    int n = 0;
    int next = 0;                // guarded by WorkerPool::mu_; the next index to hand out
    std::atomic<int> remaining;  // tasks not yet returned
    std::function<void(int, WorkerState*)> task;
    std::function<void()> done;
  };

  // One half of a shared step, queued for an idle worker. Lives on the forking worker's stack until Join.
  struct Subtask {
    absl::FunctionRef<void()> fn;
    std::atomic<bool> done{false};
    explicit Subtask(absl::FunctionRef<void()> f) : fn(f) {}
  };
  class WorkerForkJoin;
  struct Spare;  // a WorkerState and its ForkJoin, for TryRunHere's callers

  WorkerPool(int workers, bool share_steps);
  void Run(int index);
  // Wakes a sleeping worker to stand by for subtasks (kStandbySpin), unless one is awake already.
  void WakeHelper();
  // Queues `task` for an idle worker and wakes one; false when no worker is idle (the caller runs it).
  bool Offer(Subtask* task);
  // Takes `task` back if no worker has started it yet (the caller then runs it).
  bool Withdraw(Subtask* task);
  // Runs queued subtasks while there are any; spins up to `spin` for the first (kSpinAfterPart for the next).
  void HelpWithSubtasks(std::unique_lock<std::mutex>* lock, std::chrono::microseconds spin);

  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> jobs_;  // guarded by mu_; jobs with indices left to hand out, oldest first
  std::deque<Subtask*> subtasks_;          // guarded by mu_; halves of steps no worker has started yet
  int waiting_ = 0;                        // guarded by mu_; workers asleep on wake_
  int helpers_ = 0;                        // guarded by mu_; workers awake and looking for subtasks
  int standby_ = 0;                        // guarded by mu_; a wake-up meant to have a helper ready (0 or 1)
  // Tasks running, on workers or in TryRunHere; raised under mu_ (so TryRunHere's check-and-raise is atomic),
  // lowered without it as soon as a task returns.
  std::atomic<int> busy_{0};
  std::vector<std::unique_ptr<Spare>> spares_;  // guarded by mu_; TryRunHere's states not in use
  std::atomic<int> queued_subtasks_{0};         // subtasks_.size(), for the helpers' spin without the lock
  std::atomic<int> queued_jobs_{0};             // jobs_.size(), likewise
  bool stopping_ = false;                       // guarded by mu_
  const int workers_;                           // threads_.size(), readable while the constructor still starts threads
  const bool share_;                            // workers_ > 1 and Options::share_steps
  std::vector<std::thread> threads_;
};

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_WORKER_POOL_H_
