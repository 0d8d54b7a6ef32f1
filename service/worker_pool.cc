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
    return absl::InvalidArgumentError(
        absl::StrCat("--workers: must be in [0, ", kMaxWorkers, "] (0 = one per CPU), got ", options.workers));
  }
  return std::unique_ptr<WorkerPool>(
      new WorkerPool(options.workers == 0 ? DefaultWorkers() : options.workers, options.share_steps));
}

int WorkerPool::DefaultWorkers() {
  // hardware_concurrency() counts the host's CPUs, not the ones a cpuset or taskset leaves us.
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

WorkerPool::WorkerPool(int workers, bool share_steps) : workers_(workers), share_(workers > 1 && share_steps) {
  threads_.reserve(static_cast<size_t>(workers));
  for (int i = 0; i < workers; ++i) {
    threads_.emplace_back([this, i] { Run(i); });
    // Shows in top -H and gdb; at most 15 characters.
    pthread_setname_np(threads_.back().native_handle(), absl::StrCat("samplerd-w", i).substr(0, 15).c_str());
  }
}

namespace {

// How long a worker woken to help (standby) looks for a step's first shared part before it sleeps again: the
// step gets there after its decode, and the wake-up itself costs tens of microseconds on a VM.
constexpr std::chrono::microseconds kStandbySpin{100};
// And after a shared part: a step's second one follows its first within about one row group's work (tens of
// microseconds for XL). No longer, because in ping-pong the client (often on the same machine) needs this CPU
// right after the step. Spins yield the CPU.
constexpr std::chrono::microseconds kSpinAfterPart{50};

void Relax(int* spins) {
  if (++*spins % 64 == 0) {
    std::this_thread::yield();
  } else {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
}

}  // namespace

class WorkerPool::WorkerForkJoin final : public ForkJoin {
 public:
  explicit WorkerForkJoin(WorkerPool* pool) : pool_(pool) {}

  // Wakes an idle worker to stand by, so that it is up when the step offers it work.
  void Prepare() override { pool_->WakeHelper(); }

  void Run(absl::FunctionRef<void()> mine, absl::FunctionRef<void()> theirs) override {
    Subtask task(theirs);
    if (!pool_->Offer(&task)) {
      mine();
      theirs();
      return;
    }
    mine();
    if (pool_->Withdraw(&task)) {
      theirs();
      return;
    }
    // Started elsewhere: it is a bounded piece of work already running, so wait for it here.
    int spins = 0;
    while (!task.done.load(std::memory_order_acquire)) Relax(&spins);
  }

 private:
  WorkerPool* pool_;
};

struct WorkerPool::Spare {
  explicit Spare(WorkerPool* pool) : fork_join(pool) {}
  WorkerState state;
  WorkerForkJoin fork_join;
};

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : threads_) t.join();
}

bool WorkerPool::TryRunHere(absl::FunctionRef<void(WorkerState*)> task) {
  std::unique_ptr<Spare> spare;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!jobs_.empty() || busy_.load(std::memory_order_relaxed) >= workers_) return false;
    busy_.fetch_add(1, std::memory_order_relaxed);
    if (!spares_.empty()) {
      spare = std::move(spares_.back());
      spares_.pop_back();
    }
  }
  if (spare == nullptr) {
    spare = std::make_unique<Spare>(this);
    spare->state.index = -1;
    spare->state.fork_join = share_ ? &spare->fork_join : nullptr;
  }
  task(&spare->state);
  busy_.fetch_sub(1, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(mu_);
  spares_.push_back(std::move(spare));
  return true;
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
    queued_jobs_.fetch_add(1, std::memory_order_relaxed);
  }
  // Wake as many workers as there are tasks; a woken worker that finds nothing left goes back to sleep.
  if (n == 1) {
    wake_.notify_one();
  } else {
    wake_.notify_all();
  }
}

void WorkerPool::WakeHelper() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (waiting_ == 0 || helpers_ > 0 || standby_ > 0) return;
    standby_ = 1;
  }
  wake_.notify_one();
}

bool WorkerPool::Offer(Subtask* task) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (helpers_ == 0 && waiting_ == 0) return false;
    subtasks_.push_back(task);
    queued_subtasks_.fetch_add(1, std::memory_order_relaxed);
    wake = helpers_ == 0;
  }
  if (wake) wake_.notify_one();
  return true;
}

bool WorkerPool::Withdraw(Subtask* task) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find(subtasks_.begin(), subtasks_.end(), task);
  if (it == subtasks_.end()) return false;
  subtasks_.erase(it);
  queued_subtasks_.fetch_sub(1, std::memory_order_relaxed);
  return true;
}

void WorkerPool::HelpWithSubtasks(std::unique_lock<std::mutex>* lock, std::chrono::microseconds spin) {
  ++helpers_;
  auto deadline = std::chrono::steady_clock::now() + spin;
  for (;;) {
    if (!subtasks_.empty()) {
      Subtask* task = subtasks_.front();
      subtasks_.pop_front();
      queued_subtasks_.fetch_sub(1, std::memory_order_relaxed);
      lock->unlock();
      task->fn();
      // The forking worker may return (and `task` go) as soon as it sees this.
      task->done.store(true, std::memory_order_release);
      deadline = std::chrono::steady_clock::now() + kSpinAfterPart;
      lock->lock();
      continue;
    }
    if (!jobs_.empty() || stopping_ || std::chrono::steady_clock::now() >= deadline) break;
    lock->unlock();
    int spins = 0;
    while (queued_subtasks_.load(std::memory_order_relaxed) == 0 && queued_jobs_.load(std::memory_order_relaxed) == 0 &&
           std::chrono::steady_clock::now() < deadline) {
      Relax(&spins);
    }
    lock->lock();
  }
  --helpers_;
}

void WorkerPool::Run(int index) {
  WorkerState state;
  WorkerForkJoin fork_join(this);
  state.index = index;
  state.fork_join = share_ ? &fork_join : nullptr;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (!subtasks_.empty()) {
      HelpWithSubtasks(&lock, kSpinAfterPart);
      continue;
    }
    if (!jobs_.empty()) {
      std::shared_ptr<Job> job = jobs_.front();
      const int i = job->next++;
      if (job->next == job->n) {
        jobs_.pop_front();
        queued_jobs_.fetch_sub(1, std::memory_order_relaxed);
      }
      busy_.fetch_add(1, std::memory_order_relaxed);
      lock.unlock();
      job->task(i, &state);
      // Idle again before `done`: the answer it sends may bring the stream's next step at once, and that one
      // should find this worker counted idle (TryRunHere).
      busy_.fetch_sub(1, std::memory_order_relaxed);
      // acq_rel: the worker that runs `done` sees every other task's writes.
      if (job->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        job->done();
        // Drop the functions (and what they captured) here rather than when the last shared_ptr goes.
        job->task = nullptr;
        job->done = nullptr;
      }
      job.reset();
      lock.lock();
      continue;
    }
    if (standby_ > 0) {
      standby_ = 0;
      HelpWithSubtasks(&lock, kStandbySpin);
      continue;
    }
    if (stopping_) return;  // every submitted job has been handed out and run
    ++waiting_;
    wake_.wait(lock);
    --waiting_;
  }
}

}  // namespace samplerd
