#include "clients/cpp/shm_plane.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace samplerd::client {
namespace {

uint64_t ItemSize(v1::DType dtype) {
  return dtype == v1::DTYPE_F32 ? 4 : (dtype == v1::DTYPE_F16 || dtype == v1::DTYPE_BF16) ? 2 : 0;
}

bool WellFormed(const v1::Tensor& t) {
  const uint64_t item = ItemSize(t.dtype());
  if (item == 0 || t.shape_size() == 0) return false;
  uint64_t bytes = item;
  for (const int64_t d : t.shape()) {
    if (d < 1 || bytes > (uint64_t{1} << 62) / static_cast<uint64_t>(d)) return false;
    bytes *= static_cast<uint64_t>(d);
  }
  return bytes == t.data().size();
}

uint64_t Align64(uint64_t n) { return (n + 63) / 64 * 64; }

absl::Status TimedOut(absl::string_view what) {
  return absl::DeadlineExceededError(absl::StrCat(what, " took longer than the socket's timeout (ShmConnect)"));
}

absl::Status Errno(absl::string_view what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(errno)));
}

}  // namespace

uint64_t ShmBytesFor(const v1::SampleRequest& request) {
  uint64_t total = 0;
  for (const v1::Step& step : request.steps()) {
    if (step.has_logits() && WellFormed(step.logits())) total += Align64(step.logits().data().size());
    if (step.has_attention() && WellFormed(step.attention())) total += Align64(step.attention().data().size());
  }
  return total;
}

absl::Status ReferenceTensors(const ShmPlane& plane, v1::SampleRequest* request) {
  uint64_t offset = 0;
  auto move = [&](v1::Tensor* tensor, v1::TensorRef* ref) -> absl::Status {
    if (offset + tensor->data().size() > plane.size()) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the request's tensors need more than the region's ", plane.size(), " bytes"));
    }
    std::memcpy(plane.data() + offset, tensor->data().data(), tensor->data().size());
    const std::vector<int64_t> shape(tensor->shape().begin(), tensor->shape().end());
    plane.FillRef(offset, tensor->dtype(), shape, ref);
    offset = Align64(offset + tensor->data().size());
    return absl::OkStatus();
  };
  for (v1::Step& step : *request->mutable_steps()) {
    if (step.has_logits() && WellFormed(step.logits())) {
      if (absl::Status s = move(step.mutable_logits(), step.mutable_logits_ref()); !s.ok()) return s;
      step.clear_logits();
    }
    if (step.has_attention() && WellFormed(step.attention())) {
      if (absl::Status s = move(step.mutable_attention(), step.mutable_attention_ref()); !s.ok()) return s;
      step.clear_attention();
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int> ShmConnect(const std::string& path, absl::Duration timeout) {
  struct sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(address.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("shared-memory socket path \"", path, "\" is too long"));
  }
  std::memcpy(address.sun_path, path.data(), path.size());
  const int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return Errno("socket(AF_UNIX, SOCK_SEQPACKET)");
  // The send timeout bounds connect too, when the server's backlog is full.
  const struct timeval limit = absl::ToTimeval(timeout);
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit)) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit)) != 0) {
    const absl::Status status = Errno("setsockopt(SO_RCVTIMEO, SO_SNDTIMEO)");
    close(fd);
    return status;
  }
  if (connect(fd, reinterpret_cast<const struct sockaddr*>(&address), sizeof(address)) != 0) {
    const absl::Status status = Errno(absl::StrCat("connect to the shared-memory socket ", path));
    close(fd);
    return status;
  }
  return fd;
}

absl::StatusOr<v1::ShmControlResponse> ShmControlExchange(int socket_fd, const v1::ShmControlRequest& request, int fd) {
  v1::ShmControlResponse response;
  if (absl::Status s = ShmControlExchange(socket_fd, request, fd, &response); !s.ok()) return s;
  return response;
}

absl::Status ShmControlExchange(int socket_fd, const v1::ShmControlRequest& request, int fd,
                                v1::ShmControlResponse* response, std::string* scratch) {
  const std::string wire = request.SerializeAsString();
  if (wire.size() > kShmMaxPacketBytes) {
    return absl::ResourceExhaustedError(absl::StrCat("the control request is ", wire.size(), " bytes, over the ",
                                                     kShmMaxPacketBytes, "-byte packets of the shared-memory socket"));
  }
  std::string own;
  std::string& buffer = scratch != nullptr ? *scratch : own;
  struct iovec iov = {const_cast<char*>(wire.data()), wire.size()};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  ssize_t n;
  do {
    n = sendmsg(socket_fd, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  // A refused connection (over --shm_max_clients) is answered and closed at once: this packet may then fail to go
  // out, or arrive unread, which resets the connection; either way the answer waits in this socket, readable once
  // the error has been reported.
  const bool sent = n >= 0;
  const int send_errno = errno;
  // Sized once (a reused scratch keeps its size, so this costs nothing after the first call).
  if (buffer.size() < kShmMaxPacketBytes) buffer.resize(kShmMaxPacketBytes);
  do {
    n = recv(socket_fd, buffer.data(), kShmMaxPacketBytes, sent ? 0 : MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && errno == ECONNRESET) {
    const ssize_t queued = recv(socket_fd, buffer.data(), kShmMaxPacketBytes, MSG_DONTWAIT);
    if (queued > 0) {
      n = queued;
    } else {
      errno = ECONNRESET;
    }
  }
  if (!sent && n <= 0) {
    if (send_errno == EAGAIN || send_errno == EWOULDBLOCK) return TimedOut("a send on the shared-memory socket");
    errno = send_errno;
    return Errno("send on the shared-memory socket");
  }
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return TimedOut("the shared-memory socket's answer");
  if (n < 0) return Errno("receive on the shared-memory socket");
  if (n == 0) return absl::UnavailableError("the shared-memory socket closed without an answer");
  if (!response->ParseFromArray(buffer.data(), static_cast<int>(n))) {
    return absl::UnavailableError("the shared-memory socket answered with something that is not a ShmControlResponse");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ShmPlane>> ShmPlane::Connect(const std::string& socket_path, uint64_t size,
                                                            absl::string_view name, absl::string_view bearer_token) {
  if (size == 0) return absl::InvalidArgumentError("a shared-memory region needs at least one byte");
  std::unique_ptr<ShmPlane> plane(new ShmPlane());
  absl::StatusOr<int> socket_fd = ShmConnect(socket_path);
  if (!socket_fd.ok()) return socket_fd.status();
  plane->socket_ = *socket_fd;
  plane->memfd_ = memfd_create("samplerd-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (plane->memfd_ < 0) return Errno("memfd_create");
  if (ftruncate(plane->memfd_, static_cast<off_t>(size)) != 0) return Errno("ftruncate of the memfd");
  if (fcntl(plane->memfd_, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL) != 0) return Errno("F_ADD_SEALS");
  void* data = mmap(nullptr, static_cast<size_t>(size), PROT_READ | PROT_WRITE, MAP_SHARED, plane->memfd_, 0);
  if (data == MAP_FAILED) return Errno("mmap of the memfd");
  plane->data_ = static_cast<char*>(data);
  plane->size_ = size;
  v1::ShmControlRequest request;
  request.mutable_register_()->set_name(std::string(name));
  if (!bearer_token.empty()) request.set_authorization(absl::StrCat("Bearer ", bearer_token));
  absl::StatusOr<v1::ShmControlResponse> response = ShmControlExchange(plane->socket_, request, plane->memfd_);
  if (!response.ok()) return response.status();
  if (response->code() != 0) {
    return absl::Status(static_cast<absl::StatusCode>(response->code()),
                        absl::StrCat("samplerd refused the shared-memory region: ", response->message()));
  }
  plane->session_ = response->session();
  plane->region_ = response->region();
  return plane;
}

ShmPlane::~ShmPlane() {
  if (data_ != nullptr) munmap(data_, static_cast<size_t>(size_));
  if (memfd_ >= 0) close(memfd_);
  if (socket_ >= 0) close(socket_);
}

void ShmPlane::Attach(grpc::ClientContext* context) const { context->AddMetadata(kShmSessionMetadata, session_); }

absl::Status ShmPlane::Sample(const v1::SampleRequest& request, v1::SampleResponse* response) {
  // The request is copied into the reused control message: a few hundred bytes per referenced step.
  *request_.mutable_sample() = request;
  absl::Status status = ShmControlExchange(socket_, request_, -1, &response_, &scratch_);
  if (!status.ok()) return status;
  if (response_.code() != 0) {
    return absl::Status(static_cast<absl::StatusCode>(response_.code()), response_.message());
  }
  response->Swap(response_.mutable_sample());
  return absl::OkStatus();
}

void ShmPlane::FillRef(uint64_t offset, v1::DType dtype, absl::Span<const int64_t> shape, v1::TensorRef* ref) const {
  ref->set_region(region_);
  ref->set_offset(offset);
  ref->set_dtype(dtype);
  ref->mutable_shape()->Assign(shape.begin(), shape.end());
}

void ShmPlane::WriteF32(uint64_t offset, absl::Span<const float> values, absl::Span<const int64_t> shape,
                        v1::TensorRef* ref) const {
  std::memcpy(data_ + offset, values.data(), values.size() * sizeof(float));
  FillRef(offset, v1::DTYPE_F32, shape, ref);
}

}  // namespace samplerd::client
