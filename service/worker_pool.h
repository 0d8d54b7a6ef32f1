// A fixed set of threads that run the core steps of every request, each with its own core Workspace.
//
// The gRPC reactions must not block (they run on gRPC's few callback threads), so a stream hands its request to
// the pool and gets a callback when the last step is done. One request's steps are spread over all workers
// (each idle worker takes the next step index of the oldest job), so a batched request uses every core; jobs
// start in submission order, so streams are served first come, first served. Scratch memory is per worker, not
// per stream: a thousand idle streams hold no Workspace.
//
//   absl::StatusOr<std::unique_ptr<WorkerPool>> pool = WorkerPool::Create({/*workers=*/0});
//   (*pool)->ParallelFor(
//       request.steps_size(),
//       [&](int i, WorkerPool::WorkerState* w) { /* RunStep(..., &w->workspace, &w->output) for step i */ },
//       [=] { /* every step is done: start the write */ });
#ifndef SAMPLERD_SERVICE_WORKER_POOL_H_
#define SAMPLERD_SERVICE_WORKER_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
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
  };

  // What a task may use: the scratch of the worker that runs it, reused task after task, so a worker at steady
  // state allocates nothing in core.
  struct WorkerState {
    int index = 0;  // 0 .. size() - 1
    Workspace workspace;
    StepOutput output;
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

 private:
  struct Job {
    int n = 0;
    int next = 0;                // guarded by WorkerPool::mu_; the next index to hand out
    std::atomic<int> remaining;  // tasks not yet returned
    std::function<void(int, WorkerState*)> task;
    std::function<void()> done;
  };

  explicit WorkerPool(int workers);
  void Run(int index);

  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> jobs_;  // guarded by mu_; jobs with indices left to hand out, oldest first
  bool stopping_ = false;                  // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_WORKER_POOL_H_
