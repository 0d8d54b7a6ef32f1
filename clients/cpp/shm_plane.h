// ShmPlane: the client side of samplerd's shared-memory plane (docs/shm.md), for C++ model hosts next to the
// server (same machine or pod).
//
// One ShmPlane is one control connection and one region: a memfd of `size` bytes, sealed against shrinking
// (F_SEAL_SHRINK, F_SEAL_SEAL), mapped read-write here and registered with the server's `--shm_socket`. The host
// writes a step's tensors into the region (its own slot layout; a ring of slots lets it fill step N+1 while
// samplerd reads step N) and sends steps whose `logits_ref` / `attention_ref` point at them, either on calls
// carrying the session metadata (Attach) or on the control connection itself (Sample), which saves the gRPC
// round trip. Closing the plane (or the process dying) unregisters the region on the server.
//
//   absl::StatusOr<std::unique_ptr<ShmPlane>> plane = ShmPlane::Connect("/run/samplerd/shm.sock", 8 << 20);
//   if (!plane.ok()) { /* no shared-memory plane: send the bytes instead */ }
//   std::memcpy((*plane)->data() + offset, logits.data(), logits.size() * sizeof(float));
//   (*plane)->FillRef(offset, v1::DTYPE_F32, {vocab}, step.mutable_logits_ref());
//   grpc::ClientContext context;
//   (*plane)->Attach(&context);
//   auto stream = stub->Sample(&context);
//   // or, without gRPC:  v1::SampleResponse response;  absl::Status s = (*plane)->Sample(request, &response);
#ifndef SAMPLERD_CLIENTS_CPP_SHM_PLANE_H_
#define SAMPLERD_CLIENTS_CPP_SHM_PLANE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "grpcpp/grpcpp.h"
#include "samplerd/v1/sampler.pb.h"

namespace samplerd::client {

// The metadata key a call carries the session token in.
inline constexpr char kShmSessionMetadata[] = "samplerd-shm-session";

// The largest control packet either way (docs/shm.md).
inline constexpr size_t kShmMaxPacketBytes = 128 << 10;

// ShmControlExchange()
//
// One control round trip on a connected SOCK_SEQPACKET socket: `request` (with `fd` as SCM_RIGHTS when >= 0)
// out, the ShmControlResponse into `response`. `scratch` (may be null) is a receive buffer kept across calls.
// RESOURCE_EXHAUSTED for a request over kShmMaxPacketBytes (not sent); UNAVAILABLE when the socket fails or
// closes; the response's own code is left to the caller.
absl::Status ShmControlExchange(int socket_fd, const v1::ShmControlRequest& request, int fd,
                                v1::ShmControlResponse* response, std::string* scratch = nullptr);
absl::StatusOr<v1::ShmControlResponse> ShmControlExchange(int socket_fd, const v1::ShmControlRequest& request, int fd);

// How long a send to or an answer from the control socket may take by default (a server that stopped, or a
// queue that stays full): past it an exchange is DEADLINE_EXCEEDED rather than a host held for good.
inline constexpr absl::Duration kShmSocketTimeout = absl::Seconds(30);

// ShmConnect()
//
// A SOCK_SEQPACKET connection to the control socket at `path`, its sends and receives (and ShmControlExchange's)
// bounded by `timeout`; UNAVAILABLE naming the path.
absl::StatusOr<int> ShmConnect(const std::string& path, absl::Duration timeout = kShmSocketTimeout);

class ShmPlane;

// ShmBytesFor()
//
// The region size ReferenceTensors needs for `request`: its well-formed tensors back to back, 64-byte aligned.
uint64_t ShmBytesFor(const v1::SampleRequest& request);

// ReferenceTensors()
//
// Moves `request`'s well-formed tensors (known dtype, byte length = prod(shape) x itemsize) into `plane` from
// byte 0 on, 64-byte aligned, replacing each by its TensorRef; other tensors stay inline, so the server answers
// exactly as for the original request. RESOURCE_EXHAUSTED when they do not fit.
absl::Status ReferenceTensors(const ShmPlane& plane, v1::SampleRequest* request);

// ShmPlane
class ShmPlane {
 public:
  // Connects to `socket_path`, creates and seals a memfd of `size` bytes and registers it. `bearer_token` (a
  // token of the server's --auth_token_file; empty = none) authenticates the connection, which such a server
  // requires for the register and for Sample. UNAVAILABLE when the socket cannot be reached (the server has no
  // --shm_socket there); the server's refusal otherwise (its code and message, for example RESOURCE_EXHAUSTED
  // over its per-client limits, UNAUTHENTICATED for a token it does not accept or none).
  static absl::StatusOr<std::unique_ptr<ShmPlane>> Connect(const std::string& socket_path, uint64_t size,
                                                           absl::string_view name = "",
                                                           absl::string_view bearer_token = "");

  ShmPlane(const ShmPlane&) = delete;
  ShmPlane& operator=(const ShmPlane&) = delete;
  // Unmaps the region and closes the connection (the server then drops the region once no step reads it).
  ~ShmPlane();

  char* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& session() const { return session_; }
  const std::string& region() const { return region_; }

  // Adds the session metadata to a call's context (before the call starts).
  void Attach(grpc::ClientContext* context) const;

  // Sample()
  //
  // Runs `request` on the control connection (its tensors normally references into this region) and fills
  // `response` with what a Sample stream would answer: a rejected step carries its own StepResult.error. The
  // status is what would end a Sample stream (RESOURCE_EXHAUSTED over max_steps_per_request, --max_streams or
  // the control socket's packet size, UNAUTHENTICATED without an accepted token) or UNAVAILABLE when the
  // connection fails. One call at a time per plane (not thread-safe): a host with several streams uses one
  // plane per stream.
  absl::Status Sample(const v1::SampleRequest& request, v1::SampleResponse* response);

  // Points `ref` at `shape` elements of `dtype` at byte `offset` of this region.
  void FillRef(uint64_t offset, v1::DType dtype, absl::Span<const int64_t> shape, v1::TensorRef* ref) const;

  // Copies `values` to byte `offset` and points `ref` at them as DTYPE_F32 of `shape`; the one copy a host
  // whose logits live elsewhere pays (a host may write them into data() directly instead).
  void WriteF32(uint64_t offset, absl::Span<const float> values, absl::Span<const int64_t> shape,
                v1::TensorRef* ref) const;

 private:
  ShmPlane() = default;

  int socket_ = -1;
  int memfd_ = -1;
  char* data_ = nullptr;
  uint64_t size_ = 0;
  std::string session_;
  std::string region_;
  // Sample's reused messages.
  v1::ShmControlRequest request_;
  v1::ShmControlResponse response_;
  std::string scratch_;
};

}  // namespace samplerd::client

#endif  // SAMPLERD_CLIENTS_CPP_SHM_PLANE_H_
