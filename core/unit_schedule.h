// UnitSchedule: how a step's units of work (the attention's row groups) are shared between the calling thread
// and a ForkJoin's other thread, apart from the math they do (core/metrics.cc).
//
// Phase 1 (Run): `head` on this thread (the logits), then units taken one at a time from the front while the
// other thread takes them from the back, until the two meet: each side's share adapts to how late the other
// starts (or whether it starts at all), and in steady streaming each unit tends to stay with the same thread from
// step to step, and so do the cache lines it writes. Phase 2 (RunAsPlaced): each unit again, on the thread that
// ran it in phase 1 and in the reverse of that thread's phase-1 order, so that what a unit wrote is read while it
// is still in that core's cache (the latest first: in phase-1 order the oldest lines would be read first and
// evict the ones read next). Without a ForkJoin everything runs on this thread.
//
//   UnitSchedule schedule(groups, fork_join);  // fork_join null: serial
//   schedule.Run([&] { SummarizeLogits(...); }, [&](int64_t g, int64_t next) { AttentionGroup(g, next); });
//   schedule.RunAsPlaced([&](int64_t g) { Deviations(g); });
#ifndef SAMPLERD_CORE_UNIT_SCHEDULE_H_
#define SAMPLERD_CORE_UNIT_SCHEDULE_H_

#include <atomic>
#include <cstdint>

#include "absl/functional/function_ref.h"
#include "core/fork_join.h"

namespace samplerd {

class UnitSchedule {
 public:
  // Units [0, units); `fork_join` may be null (everything on this thread). A ForkJoin is told to Prepare().
  UnitSchedule(int64_t units, ForkJoin* fork_join);

  UnitSchedule(const UnitSchedule&) = delete;
  UnitSchedule& operator=(const UnitSchedule&) = delete;

  // Phase 1: `head`, then units from the front, here; units from the back on the other thread. Every unit runs
  // exactly once, and `unit` may run on both threads at once (for different units). `next` is the unit this
  // thread expects to take after `unit` (unit + 1 from the front, unit - 1 from the back, -1 past the ends), so
  // that it can fetch that unit's inputs early; the other thread may take it instead. Call once.
  void Run(absl::FunctionRef<void()> head, absl::FunctionRef<void(int64_t unit, int64_t next)> unit);

  // Phase 2, after Run: units [0, split()) here, from split() - 1 down to 0, and units [split(), units) on the
  // other thread, from split() up; every unit here, from the last down, when one thread ran every unit.
  void RunAsPlaced(absl::FunctionRef<void(int64_t unit)> unit);

  // Between the phases, work that needs every unit's output: `range(0, mid)` here and `range(mid, n)` on the
  // other thread, mid a multiple of `align` near n / 2, when both threads ran units in phase 1; otherwise one
  // call `range(0, n)` here.
  void RunHalves(int64_t n, int64_t align, absl::FunctionRef<void(int64_t begin, int64_t end)> range);

  // Units [0, split()) ran on this thread in phase 1, the rest on the other one.
  int64_t split() const { return split_; }

 private:
  // The next unit from the front or the back, -1 when the two ends have met.
  int64_t TakeFront();
  int64_t TakeBack();

  const int64_t units_;
  ForkJoin* const fork_join_;
  std::atomic<uint64_t> ends_;  // front << 32 | back
  int64_t split_ = 0;
};

}  // namespace samplerd

#endif  // SAMPLERD_CORE_UNIT_SCHEDULE_H_
