// The seeds the server picks for steps that arrive with seed 0 (docs/contract.md section 5).
//
// A sequence's random draws are a pure function of (seed, sequence_id, step, draw), so the server must keep
// using the seed it picked for a sequence for as long as that sequence keeps sending seed 0 on the same stream;
// the client reads it from StepResult.seed and sends it back to reproduce a step elsewhere. The table is
// per stream (per call for SampleOnce) and bounded: a stream may carry any number of sequences over its
// lifetime, and an unbounded map would grow with it.
//
//   SeedTable seeds;
//   uint64_t seed = seeds.Resolve(step.sequence_id(), step.seed());   // step.seed() unless it is 0
#ifndef SAMPLERD_SERVICE_SEED_TABLE_H_
#define SAMPLERD_SERVICE_SEED_TABLE_H_

#include <cstddef>
#include <cstdint>
#include <list>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"

namespace samplerd {

// SeedTable
//
// sequence_id -> server-picked seed, holding at most `capacity` sequences whose ids total at most `max_key_bytes`;
// past either the sequence used least recently is forgotten, so a sequence that keeps stepping keeps its seed as
// long as the others used between two of its steps fit beside it. An id longer than `max_key_bytes`, or than the
// contract's kMaxSequenceIdBytes, gets a fresh seed and is not kept. A forgotten sequence that sends seed 0 again gets
// a fresh seed, which its results report, so every step stays reproducible from its reported seed. Not thread-safe: a
// stream reads one request at a time.
class SeedTable {
 public:
  // Enough for the batch of any continuous-batching host.
  static constexpr size_t kDefaultCapacity = 4096;
  // A full table of 64-byte ids (a UUID and a prefix); with the count this bounds a stream's table to about
  // 1 MiB whatever the ids' length (the map and the use order each hold a copy).
  static constexpr size_t kDefaultMaxKeyBytes = kDefaultCapacity * 64;

  explicit SeedTable(size_t capacity = kDefaultCapacity, size_t max_key_bytes = kDefaultMaxKeyBytes);

  // `requested` when it is non-zero; otherwise the seed picked for `sequence_id` (a new non-zero one from
  // std::random_device the first time).
  uint64_t Resolve(absl::string_view sequence_id, uint64_t requested);

  size_t size() const { return seeds_.size(); }
  // The total length of the ids held.
  size_t key_bytes() const { return key_bytes_; }

 private:
  size_t capacity_;
  size_t max_key_bytes_;
  size_t key_bytes_ = 0;
  struct Entry {
    uint64_t seed;
    std::list<std::string>::iterator use;  // its place in use_order_
  };
  absl::flat_hash_map<std::string, Entry> seeds_;
  std::list<std::string> use_order_;  // least recently used first
};

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_SEED_TABLE_H_
