#include "service/shm_registry.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>

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
  counters_->regions.fetch_sub(1, std::memory_order_relaxed);
  counters_->bytes.fetch_sub(static_cast<int64_t>(size_), std::memory_order_relaxed);
  if (counters_->observer != nullptr) counters_->observer->OnMapped(-1, size_);
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
  void* data = mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_SHARED, fd, 0);
  if (data == MAP_FAILED) {
    const int error = errno;
    const std::string failed =
        absl::StrCat("mmap(PROT_READ, MAP_SHARED) of ", size, " bytes failed: ", std::strerror(error));
    // The client's descriptor or its backing (an fd not open for reading, huge pages the kernel has none of) is
    // the client's to fix, not a server fault.
    switch (error) {
      case EACCES:
        return refuse(absl::InvalidArgumentError(
            absl::StrCat(failed, "; the fd must be open for reading (O_RDONLY or O_RDWR, as memfd_create's is)")));
      case ENOMEM:
      case EAGAIN:
        return refuse(absl::ResourceExhaustedError(absl::StrCat(
            failed, "; the kernel cannot back the region now (for a MFD_HUGETLB memfd: not enough free huge pages)")));
      default:
        return refuse(absl::InternalError(failed));
    }
  }
  counters_->regions.fetch_add(1, std::memory_order_relaxed);
  counters_->bytes.fetch_add(static_cast<int64_t>(size), std::memory_order_relaxed);
  if (observer_ != nullptr) observer_->OnMapped(1, size);
  std::shared_ptr<const ShmRegion> region(new ShmRegion(static_cast<const char*>(data), size, counters_));

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
