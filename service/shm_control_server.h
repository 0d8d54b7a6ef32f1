// ShmControlServer: the shared-memory control socket (`--shm_socket PATH`), where clients hand samplerd their
// memfds. The protocol is samplerd.v1.ShmControlRequest / ShmControlResponse (sampler.proto), one serialized
// message per SOCK_SEQPACKET packet; a `register` packet carries its memfd as SCM_RIGHTS ancillary data.
// docs/shm.md walks through it.
//
// Each accepted connection is one ShmRegistry session: its token comes back in every response, the client sends
// it as `samplerd-shm-session` metadata on its Sample calls, and when the connection closes (the client exited,
// crashed or closed it) the session and its regions leave the registry. One thread serves every connection with
// poll(); the messages are a few bytes and a registration is one mmap, so it never waits on a slow peer (a peer
// that does not read its answers is disconnected).
//
//   auto registry = std::make_shared<ShmRegistry>(ShmRegistry::Limits{});
//   absl::StatusOr<std::unique_ptr<ShmControlServer>> server = ShmControlServer::Start("/run/samplerd/shm.sock",
//                                                                                     registry);
//   ...
//   server->reset();   // stops the thread, closes every connection, removes the socket file
#ifndef SAMPLERD_SERVICE_SHM_CONTROL_SERVER_H_
#define SAMPLERD_SERVICE_SHM_CONTROL_SERVER_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "service/shm_registry.h"

namespace samplerd {

class ShmControlServer {
 public:
  // Binds `path` (a stale socket file there is replaced) and starts serving. UNAVAILABLE naming the path when
  // it cannot be bound.
  static absl::StatusOr<std::unique_ptr<ShmControlServer>> Start(const std::string& path,
                                                                 std::shared_ptr<ShmRegistry> registry);

  ShmControlServer(const ShmControlServer&) = delete;
  ShmControlServer& operator=(const ShmControlServer&) = delete;
  ~ShmControlServer();

  const std::string& path() const { return path_; }

 private:
  ShmControlServer(std::string path, std::shared_ptr<ShmRegistry> registry, int listen_fd, int wake_fd);
  void Run();

  const std::string path_;
  const std::shared_ptr<ShmRegistry> registry_;
  const int listen_fd_;
  const int wake_fd_;  // an eventfd: written once to stop Run
  std::thread thread_;
};

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_SHM_CONTROL_SERVER_H_
