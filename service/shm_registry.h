// ShmRegistry: the shared-memory regions clients registered on the control socket (shm_control_server.h), and
// the lookup a step's TensorRef goes through (step_codec.h). docs/shm.md describes the plane end to end.
//
// A region is a memfd the client sealed with F_SEAL_SHRINK and F_SEAL_SEAL, mapped here PROT_READ / MAP_SHARED at
// the size it had when registered: it can grow but never shrink, so a read within that size never faults. Each
// region belongs to one session (one control connection); its id and the session's token are 128-bit random
// hex strings, and a lookup must present both, so a call can reach only the regions of the connection whose
// token it carries. Closing a session or unregistering a region removes it from the registry at once; the
// mapping itself is released when the last step holding it (a shared_ptr) is done, so neither can pull memory
// from under a running step.
//
//   auto registry = std::make_shared<ShmRegistry>(ShmRegistry::Limits{});
//   absl::StatusOr<std::string> session = registry->OpenSession();
//   absl::StatusOr<ShmRegistry::Registered> r = registry->Register(*session, memfd, "host-0");
//   absl::StatusOr<std::shared_ptr<const ShmRegion>> region = registry->Find(*session, r->region);
//   registry->CloseSession(*session);   // the mapping goes once `region` is released
#ifndef SAMPLERD_SERVICE_SHM_REGISTRY_H_
#define SAMPLERD_SERVICE_SHM_REGISTRY_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <shared_mutex>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace samplerd {

class ShmRegistry;

// What the registry tells the rest of the server (the /metrics gauges, shm_metrics.h). Calls come from the
// control thread and, for an unmapping, from whichever thread released the region last; they must be cheap
// and thread-safe.
class ShmObserver {
 public:
  virtual ~ShmObserver() = default;
  // A control connection opened (+1) or closed (-1).
  virtual void OnClients(int delta) = 0;
  // A registration was accepted or refused.
  virtual void OnRegistration(bool accepted) = 0;
  // A region entered (+1) or left (-1) the registry.
  virtual void OnRegistered(int delta) = 0;
  // A mapping of `bytes` was made (+1) or unmapped (-1).
  virtual void OnMapped(int delta, uint64_t bytes) = 0;
};

// Mappings alive, shared by the registry and its regions (a step may hold the last region after the registry).
struct ShmMappedCounters {
  std::atomic<int64_t> regions{0};
  std::atomic<int64_t> bytes{0};
  std::shared_ptr<ShmObserver> observer;  // may be null
};

// ShmRegion
//
// One read-only mapping, and a read-only descriptor of the memfd this process opened itself; both released on
// destruction.
class ShmRegion {
 public:
  ShmRegion(const ShmRegion&) = delete;
  ShmRegion& operator=(const ShmRegion&) = delete;
  ~ShmRegion();

  const char* data() const { return data_; }
  uint64_t size() const { return size_; }

  // Written()
  //
  // Whether every page of bytes [offset, offset + length) holds memory, so that reading them allocates none.
  // A page of the memfd that was never written (a hole: ftruncate makes only holes) is allocated by the read
  // fault that touches it, charged to this process's memory cgroup, and stays allocated as long as anyone holds
  // the memfd: a client could make the server hold memory it never paid for. The range must be within size().
  // Cost: one mincore(2) per 4 MiB over pages this process has mapped; for pages it has not, or when mincore
  // cannot be trusted (see the .cc), one exact look at the file (cachestat(2), or lseek(SEEK_HOLE) on kernels
  // before 6.5). False also when the kernel cannot tell, so a ref fails closed.
  //
  // Only a snapshot: a client that punches a hole (fallocate(FALLOC_FL_PUNCH_HOLE)) between this check and the
  // read still gets the page allocated (docs/reliability.md, "Known gaps").
  bool Written(uint64_t offset, uint64_t length) const;

 private:
  friend class ShmRegistry;
  ShmRegion(const char* data, uint64_t size, int fd, bool residency_reliable,
            std::shared_ptr<ShmMappedCounters> counters)
      : data_(data), size_(size), fd_(fd), residency_reliable_(residency_reliable), counters_(std::move(counters)) {}

  const char* const data_;
  const uint64_t size_;
  // Opened by this process (/proc/self/fd), not the descriptor the client sent: lseek moves the offset of an
  // open file description, and the client's is shared with it.
  const int fd_;
  // mincore(2) reports every page of a file mapping resident, without looking, to a process that neither owns
  // the file nor may write it; the owner of the memfd is who created it. True when this process owns it.
  const bool residency_reliable_;
  const std::shared_ptr<ShmMappedCounters> counters_;
};

// ShmRegistry
//
// Thread-safe. Lookups (every step with a reference) take a shared lock; registration, unregistration and
// sessions an exclusive one.
class ShmRegistry {
 public:
  struct Limits {
    // Control connections open at once.
    int max_clients = 64;
    // Regions one connection may have registered at once.
    int max_regions_per_client = 16;
    // Bytes one connection may have registered at once (sum of its regions' sizes).
    uint64_t max_bytes_per_client = uint64_t{1} << 30;
    // Regions mapped at once over all clients (unregistered ones that a step still reads included): each keeps a
    // descriptor, so server.cc derives it from the open-file limit.
    int64_t max_regions = std::numeric_limits<int64_t>::max();
  };

  struct Registered {
    std::string region;  // 32 hex digits
    uint64_t size = 0;
  };

  // Point-in-time figures for /metrics.
  struct Stats {
    int64_t clients = 0;             // sessions open
    int64_t regions_registered = 0;  // regions a lookup can find
    int64_t regions_mapped = 0;      // mappings alive (registered ones and unregistered ones still in use)
    int64_t bytes_mapped = 0;
    int64_t registrations_accepted = 0;  // since start
    int64_t registrations_refused = 0;   // since start
  };

  // `observer` (optional) is told about every change.
  explicit ShmRegistry(Limits limits, std::shared_ptr<ShmObserver> observer = nullptr);
  ShmRegistry(const ShmRegistry&) = delete;
  ShmRegistry& operator=(const ShmRegistry&) = delete;

  const Limits& limits() const { return limits_; }

  // A new session's token; RESOURCE_EXHAUSTED when max_clients are open.
  absl::StatusOr<std::string> OpenSession();

  // Unregisters every region of `session` and forgets it (a no-op for an unknown token).
  void CloseSession(absl::string_view session);

  // Maps `fd` (borrowed: the caller still closes it) for `session`, and opens the memfd again read-only for
  // ShmRegion::Written. INVALID_ARGUMENT when it is not a sealable file, lacks F_SEAL_SHRINK or F_SEAL_SEAL, is
  // empty, or cannot be read; RESOURCE_EXHAUSTED over the per-client limits; FAILED_PRECONDITION for an unknown
  // session; INTERNAL when mmap fails. `name` is for the logs.
  absl::StatusOr<Registered> Register(absl::string_view session, int fd, absl::string_view name);

  // Removes `region` of `session` from the registry; NOT_FOUND when that session has no such region.
  absl::Status Unregister(absl::string_view session, absl::string_view region);

  // The mapping of `region` for a call carrying `session`. NOT_FOUND for an unknown region, PERMISSION_DENIED
  // for a region of another session; the message says which.
  absl::StatusOr<std::shared_ptr<const ShmRegion>> Find(absl::string_view session, absl::string_view region) const;

  Stats stats() const;

 private:
  struct Entry {
    std::string session;
    std::shared_ptr<const ShmRegion> region;
  };
  struct Session {
    int regions = 0;
    uint64_t bytes = 0;
  };

  const Limits limits_;
  mutable std::shared_mutex mu_;
  absl::flat_hash_map<std::string, Session> sessions_;  // guarded by mu_
  absl::flat_hash_map<std::string, Entry> regions_;     // guarded by mu_; by region id
  const std::shared_ptr<ShmMappedCounters> counters_;
  ShmObserver* const observer_;  // counters_->observer's; may be null
  std::atomic<int64_t> registrations_accepted_{0};
  std::atomic<int64_t> registrations_refused_{0};
};

// A random 128-bit token as 32 lowercase hex digits (getrandom).
std::string RandomToken();

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_SHM_REGISTRY_H_
