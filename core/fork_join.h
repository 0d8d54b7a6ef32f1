// How core shares one step's passes between the calling thread and, at most, one other.
//
// A single step of a large workload is memory-bound work that splits cleanly (the logits, the attention row
// groups, each row's agreement deviations), and in a ping-pong stream the other cores are idle while it runs.
// Core does not own threads: the caller lends it a ForkJoin (the service's worker pool does), and core decides
// what to share. Results never depend on where the parts ran: core splits only at boundaries that its
// reductions already combine in a fixed order (tests/core/metrics_split_test.cc).
#ifndef SAMPLERD_CORE_FORK_JOIN_H_
#define SAMPLERD_CORE_FORK_JOIN_H_

#include "absl/functional/function_ref.h"

namespace samplerd {

// ForkJoin
//
// Run() must not return before both functions have returned. Neither may throw, and `theirs` must not call
// Run() itself.
class ForkJoin {
 public:
  virtual ~ForkJoin() = default;

  // Runs `mine` on this thread and `theirs` on another thread if one is free now; otherwise, or if no other
  // thread has started it by the time `mine` returns, runs `theirs` here after `mine`.
  virtual void Run(absl::FunctionRef<void()> mine, absl::FunctionRef<void()> theirs) = 0;

  // A hint that Run() will follow shortly: an implementation may wake a thread now, so that it is up by then.
  virtual void Prepare() {}
};

// Everything on the calling thread, `mine` first.
class SerialForkJoin final : public ForkJoin {
 public:
  void Run(absl::FunctionRef<void()> mine, absl::FunctionRef<void()> theirs) override {
    mine();
    theirs();
  }
};

}  // namespace samplerd

#endif  // SAMPLERD_CORE_FORK_JOIN_H_
