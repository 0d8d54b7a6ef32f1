#include "service/shm_control_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "samplerd/v1/sampler.pb.h"
#include "spdlog/spdlog.h"

namespace samplerd {
namespace {

// A control packet is a few dozen bytes; anything larger is not a ShmControlRequest.
constexpr size_t kMaxPacketBytes = 4096;
// File descriptors accepted in one packet's ancillary data: one is expected, a few more are received only to be
// closed (the kernel installs them in this process as soon as recvmsg returns).
constexpr int kMaxFdsPerPacket = 8;

struct Connection {
  int fd = -1;
  std::string session;
};

// Receives one packet into `bytes` and its descriptors into `fds`; 0 at end of stream, -1 on error.
ssize_t ReceivePacket(int fd, std::string* bytes, std::vector<int>* fds) {
  bytes->resize(kMaxPacketBytes);
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerPacket)];
  struct iovec iov = {bytes->data(), bytes->size()};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return n;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int received;
      std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds->push_back(received);
    }
  }
  if ((msg.msg_flags & MSG_TRUNC) != 0) n = static_cast<ssize_t>(kMaxPacketBytes) + 1;  // reported as too long
  if ((msg.msg_flags & MSG_CTRUNC) != 0) fds->push_back(-1);                            // reported as too many
  bytes->resize(std::min(static_cast<size_t>(n), kMaxPacketBytes));
  return n;
}

void Reply(v1::ShmControlResponse* response, absl::Status status) {
  response->set_code(static_cast<int32_t>(status.code()));
  response->set_message(std::string(status.message()));
}

// The answer to one packet of `connection`.
v1::ShmControlResponse Handle(ShmRegistry& registry, const Connection& connection, ssize_t length,
                              const std::string& bytes, const std::vector<int>& fds) {
  v1::ShmControlResponse response;
  response.set_session(connection.session);
  v1::ShmControlRequest request;
  if (length > static_cast<ssize_t>(kMaxPacketBytes) || !request.ParseFromString(bytes)) {
    Reply(&response, absl::InvalidArgumentError("the packet is not a samplerd.v1.ShmControlRequest"));
    return response;
  }
  switch (request.kind_case()) {
    case v1::ShmControlRequest::kRegister: {
      if (fds.size() != 1 || fds[0] < 0) {
        Reply(&response, absl::InvalidArgumentError(absl::StrCat(
                             "a register packet carries exactly one memfd (SCM_RIGHTS), got ", fds.size())));
        return response;
      }
      absl::StatusOr<ShmRegistry::Registered> registered =
          registry.Register(connection.session, fds[0], request.register_().name());
      if (!registered.ok()) {
        Reply(&response, registered.status());
        return response;
      }
      response.set_region(registered->region);
      response.set_size(registered->size);
      return response;
    }
    case v1::ShmControlRequest::kUnregister:
      if (!fds.empty()) {
        Reply(&response, absl::InvalidArgumentError("an unregister packet carries no file descriptor"));
        return response;
      }
      Reply(&response, registry.Unregister(connection.session, request.unregister().region()));
      return response;
    default:
      Reply(&response, absl::InvalidArgumentError("the request names no operation (register or unregister)"));
      return response;
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<ShmControlServer>> ShmControlServer::Start(const std::string& path,
                                                                          std::shared_ptr<ShmRegistry> registry) {
  struct sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(address.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--shm_socket \"", path, "\" must be a path of 1..", sizeof(address.sun_path) - 1, " bytes"));
  }
  std::memcpy(address.sun_path, path.data(), path.size());
  const int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("socket(AF_UNIX): ", std::strerror(errno)));
  // A socket file left by an earlier run would make bind fail; anything else at the path is not ours to remove.
  struct stat st;
  if (lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) unlink(path.c_str());
  if (bind(fd, reinterpret_cast<const struct sockaddr*>(&address), sizeof(address)) != 0 || listen(fd, 64) != 0) {
    const int error = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat("cannot listen on --shm_socket ", path, ": ", std::strerror(error)));
  }
  const int wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("eventfd: ", std::strerror(errno)));
  }
  std::unique_ptr<ShmControlServer> server(new ShmControlServer(path, std::move(registry), fd, wake));
  server->thread_ = std::thread([s = server.get()] { s->Run(); });
  return server;
}

ShmControlServer::ShmControlServer(std::string path, std::shared_ptr<ShmRegistry> registry, int listen_fd, int wake_fd)
    : path_(std::move(path)), registry_(std::move(registry)), listen_fd_(listen_fd), wake_fd_(wake_fd) {}

ShmControlServer::~ShmControlServer() {
  const uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof(one)) != sizeof(one)) spdlog::error("cannot wake the shm control thread");
  thread_.join();
  close(listen_fd_);
  close(wake_fd_);
  unlink(path_.c_str());
}

void ShmControlServer::Run() {
  std::vector<Connection> connections;
  std::vector<struct pollfd> polled;
  std::string bytes;
  std::vector<int> fds;
  auto drop = [this](Connection& c) {
    registry_->CloseSession(c.session);
    close(c.fd);
    spdlog::debug("shared-memory client disconnected; its regions are unregistered");
  };
  for (;;) {
    polled.clear();
    polled.push_back({wake_fd_, POLLIN, 0});
    polled.push_back({listen_fd_, POLLIN, 0});
    for (const Connection& c : connections) polled.push_back({c.fd, POLLIN, 0});
    if (poll(polled.data(), polled.size(), -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("shm control socket: poll: {}", std::strerror(errno));
      break;
    }
    if (polled[0].revents != 0) break;
    // Connections first (their indices match `polled` from 2 on); new ones are appended after.
    std::vector<Connection> kept;
    kept.reserve(connections.size());
    for (size_t i = 0; i < connections.size(); ++i) {
      Connection& c = connections[i];
      const short revents = polled[i + 2].revents;
      if (revents == 0) {
        kept.push_back(std::move(c));
        continue;
      }
      fds.clear();
      const ssize_t n = ReceivePacket(c.fd, &bytes, &fds);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        kept.push_back(std::move(c));
        continue;
      }
      if (n <= 0) {  // end of stream or a broken connection
        for (int f : fds)
          if (f >= 0) close(f);
        drop(c);
        continue;
      }
      const v1::ShmControlResponse response = Handle(*registry_, c, n, bytes, fds);
      for (int f : fds)
        if (f >= 0) close(f);  // a registered region keeps its own reference (the mapping)
      const std::string wire = response.SerializeAsString();
      if (send(c.fd, wire.data(), wire.size(), MSG_DONTWAIT | MSG_NOSIGNAL) != static_cast<ssize_t>(wire.size())) {
        spdlog::warn("shared-memory client does not read its answers; disconnected");
        drop(c);
        continue;
      }
      kept.push_back(std::move(c));
    }
    connections = std::move(kept);
    if (polled[1].revents != 0) {
      for (;;) {
        const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) break;
        absl::StatusOr<std::string> session = registry_->OpenSession();
        if (!session.ok()) {
          // Told why, then closed: the client sees the message in the answer to its first packet's read.
          v1::ShmControlResponse response;
          Reply(&response, session.status());
          const std::string wire = response.SerializeAsString();
          (void)send(fd, wire.data(), wire.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
          close(fd);
          spdlog::warn("shared-memory client refused: {}", std::string(session.status().message()));
          continue;
        }
        connections.push_back({fd, *std::move(session)});
      }
    }
  }
  for (Connection& c : connections) drop(c);
}

}  // namespace samplerd
