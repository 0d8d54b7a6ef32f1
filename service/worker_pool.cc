#include "service/worker_pool.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace samplerd {

absl::StatusOr<std::unique_ptr<WorkerPool>> WorkerPool::Create(Options options) {
  if (options.workers < 0 || options.workers > kMaxWorkers) {
    return absl::InvalidArgumentError(absl::StrCat("--workers: must be in [0, ", kMaxWorkers,
                                                   "] (0 = one per CPU), got ", options.workers));
  }
  return std::unique_ptr<WorkerPool>(new WorkerPool(options.workers == 0 ? DefaultWorkers() : options.workers));
}

int WorkerPool::DefaultWorkers() {
  // hardware_concurrency() counts the host's CPUs, not the ones a cpuset or taskset leaves us.
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

WorkerPool::WorkerPool(int workers) {
  threads_.reserve(static_cast<size_t>(workers));
  for (int i = 0; i < workers; ++i) {
    threads_.emplace_back([this, i] { Run(i); });
    // Shows in top -H and gdb; at most 15 characters.
    pthread_setname_np(threads_.back().native_handle(), absl::StrCat("samplerd-w", i).substr(0, 15).c_str());
  }
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void WorkerPool::ParallelFor(int n, std::function<void(int, WorkerState*)> task, std::function<void()> done) {
  if (n <= 0) {
    done();
    return;
  }
  auto job = std::make_shared<Job>();
  job->n = n;
  job->remaining.store(n, std::memory_order_relaxed);
  job->task = std::move(task);
  job->done = std::move(done);
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(std::move(job));
  }
  // Wake as many workers as there are tasks; a woken worker that finds nothing left goes back to sleep.
  if (n == 1) {
    wake_.notify_one();
  } else {
    wake_.notify_all();
  }
}

void WorkerPool::Run(int index) {
  WorkerState state;
  state.index = index;
  for (;;) {
    std::shared_ptr<Job> job;
    int i = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, and every submitted job has been handed out
      job = jobs_.front();
      i = job->next++;
      if (job->next == job->n) jobs_.pop_front();
    }
    job->task(i, &state);
    // acq_rel: the worker that runs `done` sees every other task's writes.
    if (job->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      job->done();
      // Drop the functions (and what they captured) here rather than when the last shared_ptr goes.
      job->task = nullptr;
      job->done = nullptr;
    }
  }
}

}  // namespace samplerd
