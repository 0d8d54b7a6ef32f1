// PendingBudget: the bytes the server holds for calls it has not finished with (requests taken on and not yet
// answered, answers not yet written to their callers), bounded by --max_pending_request_bytes. A
// PendingBudget::Charge is a hold on part of it, given back when the Charge goes.
//
//   PendingBudget budget(512 << 20);
//   PendingBudget::Charge request = budget.TryCharge(parsed.SpaceUsedLong());
//   if (!request) return Refuse();                               // the budget is full
//   ...
//   PendingBudget::Charge answer = budget.Hold(wire.Length());   // counted, never refused: the work is done
#ifndef SAMPLERD_SERVICE_PENDING_BUDGET_H_
#define SAMPLERD_SERVICE_PENDING_BUDGET_H_

#include <atomic>
#include <cstdint>
#include <utility>

namespace samplerd {

// Thread-safe. Must outlive its Charges.
class PendingBudget {
 public:
  // A hold on `bytes` of the budget until destroyed or Release()d; empty (false) when nothing was charged.
  class Charge {
   public:
    Charge() = default;
    Charge(Charge&& other) noexcept
        : budget_(std::exchange(other.budget_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
    Charge& operator=(Charge&& other) noexcept {
      if (this != &other) {
        Release();
        budget_ = std::exchange(other.budget_, nullptr);
        bytes_ = std::exchange(other.bytes_, 0);
      }
      return *this;
    }
    Charge(const Charge&) = delete;
    Charge& operator=(const Charge&) = delete;
    ~Charge() { Release(); }

    explicit operator bool() const { return budget_ != nullptr; }
    int64_t bytes() const { return bytes_; }
    void Release() {
      if (budget_ != nullptr) budget_->held_.fetch_sub(bytes_, std::memory_order_relaxed);
      budget_ = nullptr;
      bytes_ = 0;
    }

   private:
    friend class PendingBudget;
    Charge(PendingBudget* budget, int64_t bytes) : budget_(budget), bytes_(bytes) {}
    PendingBudget* budget_ = nullptr;
    int64_t bytes_ = 0;
  };

  explicit PendingBudget(int64_t max_bytes) : max_bytes_(max_bytes) {}
  PendingBudget(const PendingBudget&) = delete;
  PendingBudget& operator=(const PendingBudget&) = delete;

  // Charges `bytes` unless that would pass the budget while anything else is held; then an empty Charge. Any one
  // charge is taken when nothing is held, so every request the transport lets through can be answered.
  Charge TryCharge(int64_t bytes) {
    int64_t held = held_.load(std::memory_order_relaxed);
    do {
      if (held != 0 && held + bytes > max_bytes_) return Charge();
    } while (!held_.compare_exchange_weak(held, held + bytes, std::memory_order_relaxed));
    return Charge(this, bytes);
  }

  // Charges `bytes` whatever is held: for memory already spent that only its caller can give back (a stream's
  // answer waiting for its client, whose stream stops reading requests until it is written). It makes the next
  // TryCharge refuse sooner.
  Charge Hold(int64_t bytes) {
    held_.fetch_add(bytes, std::memory_order_relaxed);
    return Charge(this, bytes);
  }

  int64_t held() const { return held_.load(std::memory_order_relaxed); }
  int64_t max_bytes() const { return max_bytes_; }

 private:
  const int64_t max_bytes_;
  std::atomic<int64_t> held_{0};
};

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_PENDING_BUDGET_H_
