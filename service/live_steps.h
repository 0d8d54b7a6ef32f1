// LiveSteps: the recent steps of each profile, kept for the live page samplerd serves next to /metrics.
//
//   LiveSteps live;
//   std::shared_ptr<StepRing> ring = live.ForProfile("entropix");  // once per profile; null past kMaxProfiles
//   ring->Push(v1::REGIME_ARGMAX, /*logits_entropy=*/0.02f, /*logits_varentropy=*/0.01f);
//   std::string json = live.Json(registry.get());          // GET /live/steps
//
// Only what the picture needs is kept: the regime and the two logits metrics of a step. No sequence id, token
// id, logprob or time of a step is stored, so the page exposes nothing of what users generate.
#ifndef SAMPLERD_SERVICE_LIVE_STEPS_H_
#define SAMPLERD_SERVICE_LIVE_STEPS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "core/profile.h"
#include "samplerd/v1/sampler.pb.h"

namespace samplerd {

// "REGIME_ARGMAX" -> "argmax" (the label of samplerd_steps_total and of the live page); an unnamed value -> its
// number.
std::string RegimeLabel(v1::Regime regime);

// StepRing
//
// A fixed-size ring of the latest steps of one profile and the count of every step by regime. Push is
// lock-free and wait-free (one fetch_add to claim a slot, one 64-bit store of the packed point), so the workers
// answering steps never wait for each other or for a reader, and a reader never sees half a point; a writer
// delayed by a whole lap of the ring only overwrites a slot with its own, older, point.
class StepRing {
 public:
  static constexpr size_t kCapacity = 1024;
  // Regime enum values 0..kRegimeSlots-1 are counted, 0..kRegimeSlots-2 also kept as points.
  static constexpr int kRegimeSlots = 16;

  struct Point {
    float logits_entropy;
    float logits_varentropy;
    int regime;
  };

  // Counts the step; keeps it as a point when both metrics are present (a NaN drops the point). The
  // varentropy kept is rounded down by at most a relative 2e-6.
  void Push(v1::Regime regime, float logits_entropy, float logits_varentropy);
  void Count(v1::Regime regime);

  // The points still in the ring, oldest first (at most kCapacity).
  std::vector<Point> Snapshot() const;
  // Steps counted, by regime enum value.
  std::array<uint64_t, kRegimeSlots> Counts() const;

 private:
  std::atomic<uint64_t> next_{0};
  // entropy float bits << 32 | varentropy float bits with the low 4 bits replaced by regime + 1; 0 = empty.
  std::array<std::atomic<uint64_t>, kCapacity> slots_{};
  std::array<std::atomic<uint64_t>, kRegimeSlots> counts_{};
};

// LiveSteps
//
// One StepRing per profile name, made on its first step. Thread-safe.
class LiveSteps {
 public:
  // Profiles beyond this many are not shown, so memory stays bounded (~16 KiB per profile).
  static constexpr size_t kMaxProfiles = 64;

  // The ring of `profile`; null when kMaxProfiles are already kept.
  std::shared_ptr<StepRing> ForProfile(const std::string& profile);

  // Drops the rings of profiles not in `names` (those a reload removed), making room for new ones. A holder of a
  // dropped ring may still push to it.
  void KeepOnly(const absl::flat_hash_set<std::string>& names);

  // The data of the live page (JSON): every profile of `profiles` (its regime bounds, so the page can draw
  // the regions) and every profile that has steps, each with its points and its step counts by regime.
  // `profiles` may be null (no bounds then).
  std::string Json(const ProfileRegistry* profiles) const;

 private:
  mutable std::mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<StepRing>> rings_;  // guarded by mu_
};

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_LIVE_STEPS_H_
