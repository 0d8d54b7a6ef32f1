#include "service/shm_registry.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/field_error.h"
#include "spdlog/spdlog.h"

namespace samplerd {

std::string RandomToken() {
  char bytes[16];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    const ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n < 0 && errno == EINTR) continue;
    // getrandom on a booted system blocks only before the pool is initialised and never fails otherwise; a
    // token that could be guessed would break the sessions' isolation, so there is no weaker fallback.
    if (n < 0) std::abort();
    got += static_cast<size_t>(n);
  }
  return absl::BytesToHexString(absl::string_view(bytes, sizeof(bytes)));
}

ShmRegion::~ShmRegion() {
  munmap(const_cast<char*>(data_), static_cast<size_t>(size_));
  close(fd_);
  counters_->regions.fetch_sub(1, std::memory_order_relaxed);
  counters_->bytes.fetch_sub(static_cast<int64_t>(size_), std::memory_order_relaxed);
  if (counters_->observer != nullptr) counters_->observer->OnMapped(-1, size_);
}

namespace {

// cachestat(2), Linux 6.5. Debian 12's kernel headers (6.1) predate it; its number is the same on every
// architecture (the unified syscall table).
constexpr long kCachestatSyscall = 451;
struct CachestatRange {
  uint64_t off;
  uint64_t len;
};
struct Cachestat {
  uint64_t nr_cache;
  uint64_t nr_dirty;
  uint64_t nr_writeback;
  uint64_t nr_evicted;
  uint64_t nr_recently_evicted;
};
std::atomic<bool> cachestat_missing{false};  // ENOSYS once: an older kernel, not asked again

uint64_t PageSize() {
  static const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  return page;
}

// Whether mincore(2) reports each of `pages` pages from `start` (page-aligned, in a shared mapping of a file)
// resident, i.e. in the file's page cache. A swapped-out page is not: the caller asks the file then.
bool AllResident(const char* start, uint64_t pages) {
  unsigned char resident[1024];  // one byte per page: 4 MiB per call
  for (uint64_t done = 0; done < pages;) {
    const uint64_t n = std::min<uint64_t>(pages - done, sizeof(resident));
    if (mincore(const_cast<char*>(start + done * PageSize()), n * PageSize(), resident) != 0) return false;
    for (uint64_t i = 0; i < n; ++i) {
      if ((resident[i] & 1) == 0) return false;
    }
    done += n;
  }
  return true;
}

// Whether bytes [offset, offset + length) of the memfd `fd`, `pages` pages, have no hole. cachestat counts the
// range's pages in the page cache and swapped out (nr_evicted, for shmem), looking at that range only. Before
// Linux 6.5, lseek(SEEK_HOLE) finds the first hole at or after `offset`: exact too, but the kernel walks every
// page up to that hole, to the end of the file when there is none, under the file's lock. hugetlbfs has neither
// (cachestat refuses it, and its lseek reports no hole), so a MFD_HUGETLB region passes: its pages come from the
// huge page pool the administrator reserved, not from this process's memory, and Register takes one only with a
// write seal, under which no hole can be punched.
bool NoHoles(int fd, uint64_t offset, uint64_t length, uint64_t pages) {
  if (!cachestat_missing.load(std::memory_order_relaxed)) {
    CachestatRange range = {offset, length};
    Cachestat stat = {};
    if (syscall(kCachestatSyscall, fd, &range, &stat, 0) == 0) return stat.nr_cache + stat.nr_evicted >= pages;
    if (errno == ENOSYS) cachestat_missing.store(true, std::memory_order_relaxed);
  }
  const off_t hole = lseek(fd, static_cast<off_t>(offset), SEEK_HOLE);
  return hole >= 0 && static_cast<uint64_t>(hole) >= offset + length;
}

}  // namespace

bool ShmRegion::Written(uint64_t offset, uint64_t length) const {
  if (length == 0) return true;
  const uint64_t first = offset / PageSize();
  const uint64_t pages = (offset + length - 1) / PageSize() - first + 1;
  // The usual case, a slot this process has read before, costs the page table walk only.
  if (residency_reliable_ && AllResident(data_ + first * PageSize(), pages)) return true;
  return NoHoles(fd_, offset, length, pages);
}

namespace {

std::shared_ptr<ShmMappedCounters> MakeCounters(std::shared_ptr<ShmObserver> observer) {
  auto counters = std::make_shared<ShmMappedCounters>();
  counters->observer = std::move(observer);
  return counters;
}

}  // namespace

ShmRegistry::ShmRegistry(Limits limits, std::shared_ptr<ShmObserver> observer)
    : limits_(limits), counters_(MakeCounters(std::move(observer))), observer_(counters_->observer.get()) {}

absl::StatusOr<std::string> ShmRegistry::OpenSession() {
  std::unique_lock<std::shared_mutex> lock(mu_);
  if (static_cast<int64_t>(sessions_.size()) >= limits_.max_clients) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the server already has ", limits_.max_clients, " shared-memory clients (--shm_max_clients)"));
  }
  std::string token = RandomToken();
  sessions_.emplace(token, Session{});
  if (observer_ != nullptr) observer_->OnClients(1);
  return token;
}

void ShmRegistry::CloseSession(absl::string_view session) {
  std::vector<std::shared_ptr<const ShmRegion>> released;  // unmapped outside the lock
  {
    std::unique_lock<std::shared_mutex> lock(mu_);
    if (sessions_.erase(session) == 0) return;
    if (observer_ != nullptr) observer_->OnClients(-1);
    for (auto it = regions_.begin(); it != regions_.end();) {
      if (it->second.session == session) {
        released.push_back(std::move(it->second.region));
        regions_.erase(it++);
        if (observer_ != nullptr) observer_->OnRegistered(-1);
      } else {
        ++it;
      }
    }
  }
}

absl::StatusOr<ShmRegistry::Registered> ShmRegistry::Register(absl::string_view session, int fd,
                                                              absl::string_view name) {
  auto refuse = [this](absl::Status status) {
    registrations_refused_.fetch_add(1, std::memory_order_relaxed);
    if (observer_ != nullptr) observer_->OnRegistration(false);
    return status;
  };
  const int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0) {
    return refuse(
        absl::InvalidArgumentError(absl::StrCat("the fd is not a sealable memfd (F_GET_SEALS: ", std::strerror(errno),
                                                "); create it with memfd_create(MFD_ALLOW_SEALING)")));
  }
  if ((seals & F_SEAL_SHRINK) == 0 || (seals & F_SEAL_SEAL) == 0) {
    return refuse(absl::InvalidArgumentError(
        absl::StrCat("the memfd must be sealed with F_SEAL_SHRINK and F_SEAL_SEAL (so it can never shrink under the "
                     "server's mapping), got seals 0x",
                     absl::Hex(seals))));
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return refuse(absl::InvalidArgumentError("the fd is not a regular memfd"));
  }
  // A hole punched in a hugetlbfs file (fallocate, MADV_REMOVE) gives its huge pages back to the pool along with
  // their reservation, so a read of that range faults with SIGBUS when the pool has no free page, which kills the
  // server. The write seals are what forbid punching there; F_SEAL_FUTURE_WRITE still lets the client write
  // through a mapping it made before sealing.
  struct statfs fs;
  if (fstatfs(fd, &fs) == 0 && fs.f_type == HUGETLBFS_MAGIC && (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) == 0) {
    return refuse(absl::InvalidArgumentError(
        absl::StrCat("a MFD_HUGETLB memfd must also be sealed with F_SEAL_FUTURE_WRITE (after the client maps it "
                     "writable) or F_SEAL_WRITE, so that no hole can be punched in it, got seals 0x",
                     absl::Hex(seals))));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size == 0) return refuse(absl::InvalidArgumentError("the memfd is empty (size it before sealing)"));
  if (size > limits_.max_bytes_per_client) {
    return refuse(absl::ResourceExhaustedError(
        absl::StrCat("a region of ", size, " bytes is over the ", limits_.max_bytes_per_client,
                     " bytes a client may register (--shm_max_bytes_per_client)")));
  }
  {
    std::shared_lock<std::shared_mutex> lock(mu_);
    const auto it = sessions_.find(session);
    if (it == sessions_.end()) return refuse(absl::FailedPreconditionError("unknown shared-memory session"));
    if (it->second.regions >= limits_.max_regions_per_client) {
      return refuse(absl::ResourceExhaustedError(
          absl::StrCat("this client already has ", it->second.regions, " regions (--shm_max_regions_per_client)")));
    }
    if (it->second.bytes + size > limits_.max_bytes_per_client) {
      return refuse(absl::ResourceExhaustedError(
          absl::StrCat("this client already has ", it->second.bytes, " bytes registered; ", size,
                       " more would be over ", limits_.max_bytes_per_client, " (--shm_max_bytes_per_client)")));
    }
  }
  // A place among the regions mapped, taken before the mapping and its descriptor exist: the region's destructor
  // gives it back, and every refusal below before the region is made.
  if (counters_->regions.fetch_add(1, std::memory_order_relaxed) >= limits_.max_regions) {
    counters_->regions.fetch_sub(1, std::memory_order_relaxed);
    return refuse(absl::ResourceExhaustedError(absl::StrCat(
        "the server holds ", limits_.max_regions,
        " shared-memory regions over all clients, as many as its open-file limit (RLIMIT_NOFILE) leaves room for "
        "besides its connections; unregister one, or raise the limit")));
  }
  const auto unreserve = [&](absl::Status status) {
    counters_->regions.fetch_sub(1, std::memory_order_relaxed);
    return refuse(std::move(status));
  };
  void* data = mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_SHARED, fd, 0);
  if (data == MAP_FAILED) {
    const int error = errno;
    const std::string failed =
        absl::StrCat("mmap(PROT_READ, MAP_SHARED) of ", size, " bytes failed: ", std::strerror(error));
    // The client's descriptor or its backing (an fd not open for reading, huge pages the kernel has none of) is
    // the client's to fix, not a server fault.
    switch (error) {
      case EACCES:
        return unreserve(absl::InvalidArgumentError(
            absl::StrCat(failed, "; the fd must be open for reading (O_RDONLY or O_RDWR, as memfd_create's is)")));
      case ENOMEM:
      case EAGAIN:
        return unreserve(absl::ResourceExhaustedError(absl::StrCat(
            failed, "; the kernel cannot back the region now (for a MFD_HUGETLB memfd: not enough free huge pages)")));
      default:
        return unreserve(absl::InternalError(failed));
    }
  }
  const int private_fd = open(absl::StrCat("/proc/self/fd/", fd).c_str(), O_RDONLY | O_CLOEXEC);
  if (private_fd < 0) {
    const int error = errno;
    munmap(data, static_cast<size_t>(size));
    const std::string failed =
        absl::StrCat("reopening the memfd read-only (/proc/self/fd) failed: ", std::strerror(error));
    // EACCES: the client changed the memfd's mode so that this process may not read it.
    if (error == EACCES) return unreserve(absl::InvalidArgumentError(absl::StrCat(failed, "; leave it readable")));
    if (error == EMFILE || error == ENFILE) return unreserve(absl::ResourceExhaustedError(failed));
    return unreserve(absl::InternalError(failed));
  }
  counters_->bytes.fetch_add(static_cast<int64_t>(size), std::memory_order_relaxed);
  if (observer_ != nullptr) observer_->OnMapped(1, size);
  std::shared_ptr<const ShmRegion> region(
      new ShmRegion(static_cast<const char*>(data), size, private_fd, st.st_uid == geteuid(), counters_));

  Registered registered;
  registered.size = size;
  {
    std::unique_lock<std::shared_mutex> lock(mu_);
    // Checked again: the limits may have been reached by another registration of the same session while
    // mapping (the control server handles a connection on one thread, but the registry does not rely on it).
    const auto it = sessions_.find(session);
    if (it == sessions_.end()) {
      lock.unlock();
      region.reset();
      return refuse(absl::FailedPreconditionError("unknown shared-memory session"));
    }
    if (it->second.regions >= limits_.max_regions_per_client ||
        it->second.bytes + size > limits_.max_bytes_per_client) {
      lock.unlock();
      region.reset();
      return refuse(absl::ResourceExhaustedError("over the per-client shared-memory limits"));
    }
    ++it->second.regions;
    it->second.bytes += size;
    registered.region = RandomToken();
    regions_.emplace(registered.region, Entry{std::string(session), std::move(region)});
    if (observer_ != nullptr) observer_->OnRegistered(1);
  }
  registrations_accepted_.fetch_add(1, std::memory_order_relaxed);
  if (observer_ != nullptr) observer_->OnRegistration(true);
  spdlog::debug("shared-memory region {} ({} bytes, \"{}\") registered", registered.region, size, std::string(name));
  return registered;
}

absl::Status ShmRegistry::Unregister(absl::string_view session, absl::string_view region) {
  std::shared_ptr<const ShmRegion> released;  // unmapped outside the lock, unless a step still holds it
  std::unique_lock<std::shared_mutex> lock(mu_);
  const auto it = regions_.find(region);
  if (it == regions_.end() || it->second.session != session) {
    return absl::NotFoundError(absl::StrCat("this client has no region \"", Excerpt(region), "\""));
  }
  Session& owner = sessions_[session];
  --owner.regions;
  owner.bytes -= it->second.region->size();
  released = std::move(it->second.region);
  regions_.erase(it);
  if (observer_ != nullptr) observer_->OnRegistered(-1);
  lock.unlock();
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const ShmRegion>> ShmRegistry::Find(absl::string_view session,
                                                                   absl::string_view region) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  const auto it = regions_.find(region);
  if (it == regions_.end()) {
    return absl::NotFoundError(absl::StrCat("no shared-memory region \"", Excerpt(region),
                                            "\" is registered (unregistered, or its control connection closed)"));
  }
  if (it->second.session != session) {
    return absl::PermissionDeniedError(
        absl::StrCat("region \"", region,
                     "\" belongs to another client: the call's samplerd-shm-session metadata must be the "
                     "session of the control connection that registered it"));
  }
  return it->second.region;
}

ShmRegistry::Stats ShmRegistry::stats() const {
  Stats s;
  {
    std::shared_lock<std::shared_mutex> lock(mu_);
    s.clients = static_cast<int64_t>(sessions_.size());
    s.regions_registered = static_cast<int64_t>(regions_.size());
  }
  s.regions_mapped = counters_->regions.load(std::memory_order_relaxed);
  s.bytes_mapped = counters_->bytes.load(std::memory_order_relaxed);
  s.registrations_accepted = registrations_accepted_.load(std::memory_order_relaxed);
  s.registrations_refused = registrations_refused_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace samplerd
