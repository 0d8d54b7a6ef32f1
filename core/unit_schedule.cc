#include "core/unit_schedule.h"

namespace samplerd {

UnitSchedule::UnitSchedule(int64_t units, ForkJoin* fork_join)
    : units_(units), fork_join_(fork_join), ends_(static_cast<uint64_t>(units)) {
  if (fork_join_ != nullptr) fork_join_->Prepare();
}

int64_t UnitSchedule::TakeFront() {
  uint64_t ends = ends_.load(std::memory_order_relaxed);
  for (;;) {
    const uint64_t front = ends >> 32, back = ends & 0xffffffffu;
    if (front >= back) return -1;
    if (ends_.compare_exchange_weak(ends, ((front + 1) << 32) | back, std::memory_order_relaxed)) {
      return static_cast<int64_t>(front);
    }
  }
}

int64_t UnitSchedule::TakeBack() {
  uint64_t ends = ends_.load(std::memory_order_relaxed);
  for (;;) {
    const uint64_t front = ends >> 32, back = ends & 0xffffffffu;
    if (front >= back) return -1;
    if (ends_.compare_exchange_weak(ends, (front << 32) | (back - 1), std::memory_order_relaxed)) {
      return static_cast<int64_t>(back - 1);
    }
  }
}

void UnitSchedule::Run(absl::FunctionRef<void()> head, absl::FunctionRef<void(int64_t, int64_t)> unit) {
  const auto mine = [&] {
    head();
    int64_t end = 0;
    for (int64_t u; (u = TakeFront()) >= 0;) {
      unit(u, u + 1 < units_ ? u + 1 : -1);
      end = u + 1;
    }
    split_ = end;
  };
  if (fork_join_ == nullptr) {
    mine();
    return;
  }
  fork_join_->Run(mine, [&] {
    for (int64_t u; (u = TakeBack()) >= 0;) unit(u, u - 1);
  });
}

void UnitSchedule::RunHalves(int64_t n, int64_t align, absl::FunctionRef<void(int64_t, int64_t)> range) {
  const int64_t mid = n / 2 / align * align;
  if (fork_join_ == nullptr || split_ == 0 || split_ == units_ || mid == 0) {
    range(0, n);
    return;
  }
  fork_join_->Run([&] { range(0, mid); }, [&] { range(mid, n); });
}

void UnitSchedule::RunAsPlaced(absl::FunctionRef<void(int64_t)> unit) {
  const auto front = [&](int64_t end) {
    for (int64_t u = end - 1; u >= 0; --u) unit(u);
  };
  if (fork_join_ == nullptr || split_ == 0 || split_ == units_) {
    front(units_);
    return;
  }
  fork_join_->Run([&] { front(split_); },
                  [&] {
                    for (int64_t u = split_; u < units_; ++u) unit(u);
                  });
}

}  // namespace samplerd
