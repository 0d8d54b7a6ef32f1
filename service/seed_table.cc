#include "service/seed_table.h"

#include <algorithm>
#include <iterator>

#include "absl/random/random.h"
#include "core/step_engine.h"

namespace samplerd {
namespace {

// Unpredictable across streams, processes and restarts; 0 is reserved for "server picks". absl::BitGen is seeded
// from the OS once per thread, since opening the OS's source per seed costs ~20 us on the thread that reads the
// request, for every new sequence with seed 0 (BM_SeedTableFreshSeeds).
uint64_t FreshSeed() {
  thread_local absl::BitGen bits;
  uint64_t seed = 0;
  while (seed == 0) seed = absl::Uniform<uint64_t>(bits);
  return seed;
}

}  // namespace

SeedTable::SeedTable(size_t capacity, size_t max_key_bytes)
    : capacity_(capacity < 1 ? 1 : capacity), max_key_bytes_(max_key_bytes) {}

uint64_t SeedTable::Resolve(absl::string_view sequence_id, uint64_t requested) {
  if (requested != 0) return requested;
  if (auto it = seeds_.find(sequence_id); it != seeds_.end()) {
    use_order_.splice(use_order_.end(), use_order_, it->second.use);
    return it->second.seed;
  }
  const uint64_t seed = FreshSeed();
  // An id the contract refuses (its step is answered INVALID_ARGUMENT) must not push the others out.
  if (sequence_id.size() > std::min(max_key_bytes_, kMaxSequenceIdBytes)) return seed;
  while (!seeds_.empty() && (seeds_.size() >= capacity_ || key_bytes_ + sequence_id.size() > max_key_bytes_)) {
    key_bytes_ -= use_order_.front().size();
    seeds_.erase(use_order_.front());
    use_order_.pop_front();
  }
  use_order_.emplace_back(sequence_id);
  seeds_.emplace(sequence_id, Entry{seed, std::prev(use_order_.end())});
  key_bytes_ += sequence_id.size();
  return seed;
}

}  // namespace samplerd
