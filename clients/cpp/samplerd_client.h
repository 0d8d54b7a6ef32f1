// A small C++ client of samplerd (samplerd.v1.Sampler), for model hosts written in C++ and for samplerctl.
//
// `Client` wraps one channel: health, the profile list and one-shot sampling. `Session` is one generation: it
// owns a `Sample` stream and the per-sequence state the protocol leaves to the client (docs/contract.md section 2):
// the step index, the seed (the server's pick when the first step sent 0) and the recent tokens that feed the
// penalties and the clarifying-question rule. Because the client owns that state, a session can be replayed
// against any replica and reproduce its tokens.
//
//   samplerd::client::Client client("localhost:50051");
//   samplerd::client::SessionOptions options;
//   options.profile = "entropix";
//   std::unique_ptr<samplerd::client::Session> session = client.OpenSession(options);
//   for (...) {
//     absl::StatusOr<samplerd::client::StepResult> r = session->Step(logits);   // vocab floats
//     if (!r.ok()) { ... }   // the step was rejected (r.status() names the field) or the stream failed
//     next_token = r->token;
//   }
//   session->Close();
//
// Failover: a Client may be given several endpoints (or one "dns:///" / "ipv4:a,b" target, balanced
// round_robin). When a session's stream breaks (the server died or drained), the session reopens it on the next
// endpoint and resends the step; since the session owns the seed, the step index and the recent tokens, the
// tokens equal those of an uninterrupted run.
//
// Security: ClientOptions turns on TLS (a CA bundle, and a client certificate and key for mutual TLS) and a bearer
// token sent as "authorization: Bearer <token>" on every call.
//
//   samplerd::client::ClientOptions secure;
//   secure.tls = true;
//   secure.tls_ca_pem = ReadFile("ca.pem");   // PEM contents; empty = the system's roots
//   secure.token = "s3cret";
//   samplerd::client::Client client({"samplerd.example:50051"}, secure);
//
// Tensors travel in the host's byte order, which must be little-endian (as the wire format says): float32 as
// they are, float16 and bfloat16 as their 16-bit patterns (TensorRef::F16, TensorRef::BF16), so a host whose
// model computes in half precision sends its logits without widening them. Client::SampleBatch sends one step
// of each of several sessions in one request.
#ifndef SAMPLERD_CLIENTS_CPP_SAMPLERD_CLIENT_H_
#define SAMPLERD_CLIENTS_CPP_SAMPLERD_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "grpcpp/grpcpp.h"
#include "samplerd/v1/sampler.grpc.pb.h"

namespace samplerd::client {

// ServingStatus
//
// The answer of grpc.health.v1.Health/Check.
enum class ServingStatus { kUnknown = 0, kServing = 1, kNotServing = 2, kServiceUnknown = 3 };

// "SERVING", "NOT_SERVING", ... as the health protocol spells them.
absl::string_view ServingStatusName(ServingStatus status);

// FromGrpcStatus()
//
// The absl::Status of a finished call: same code, same message.
absl::Status FromGrpcStatus(const grpc::Status& status);

// RejectedField()
//
// The request field a server rejected (StepResult.error.field), carried by the status a rejected Step
// returns; empty for other statuses.
std::string RejectedField(const absl::Status& status);

// FillF32Tensor()
//
// Writes `values` as a DTYPE_F32 tensor of `shape` into `tensor`, reusing its buffer. The caller keeps
// `shape`'s product equal to `values.size()`; the server checks it anyway.
void FillF32Tensor(absl::Span<const float> values, absl::Span<const int64_t> shape, v1::Tensor* tensor);

// TensorRef
//
// A borrowed tensor of one of the wire's dtypes: float32 values, or float16 / bfloat16 values as their 16-bit
// patterns. The data and the shape are borrowed until the call that takes the TensorRef returns. An empty shape
// means one dimension of the values' count (logits: [vocab]).
//
//   std::vector<uint16_t> bf16_logits = ...;            // e.g. a torch.bfloat16 tensor's storage
//   session->Step(TensorRef::BF16(bf16_logits));
class TensorRef {
 public:
  // float32 values (implicit, so a span of floats is a TensorRef).
  TensorRef(absl::Span<const float> values, absl::Span<const int64_t> shape = {})
      : dtype_(v1::DTYPE_F32), data_(values.data()), count_(values.size()), shape_(shape) {}
  TensorRef(const std::vector<float>& values, absl::Span<const int64_t> shape = {})
      : TensorRef(absl::MakeConstSpan(values), shape) {}
  // IEEE 754 binary16 values, as their bits.
  static TensorRef F16(absl::Span<const uint16_t> bits, absl::Span<const int64_t> shape = {}) {
    return TensorRef(v1::DTYPE_F16, bits.data(), bits.size(), shape);
  }
  // bfloat16 values (the upper 16 bits of a float32), as their bits.
  static TensorRef BF16(absl::Span<const uint16_t> bits, absl::Span<const int64_t> shape = {}) {
    return TensorRef(v1::DTYPE_BF16, bits.data(), bits.size(), shape);
  }

  v1::DType dtype() const { return dtype_; }
  size_t size() const { return count_; }
  // Writes the tensor into `tensor`, reusing its buffers.
  void Fill(v1::Tensor* tensor) const;

 private:
  TensorRef(v1::DType dtype, const void* data, size_t count, absl::Span<const int64_t> shape)
      : dtype_(dtype), data_(data), count_(count), shape_(shape) {}

  v1::DType dtype_;
  const void* data_;
  size_t count_;
  absl::Span<const int64_t> shape_;
};

// StepOptions
//
// What a single step may change beyond its tensors.
struct StepOptions {
  // How many top tokens (with logprobs) to return, 0..20.
  int32_t top_logprobs = 0;
  // Overrides of the profile's parameters for this step only.
  std::optional<v1::SamplingParams> params;
};

// StepResult
//
// A successful step, as the server answered it.
struct StepResult {
  uint64_t step = 0;
  int32_t token = 0;
  float logprob = 0;  // nats, under the unmodified logits
  v1::Regime regime = v1::REGIME_UNSPECIFIED;
  v1::SamplingParams applied;  // empty when CLARIFY emitted its token without a draw
  v1::Metrics metrics;
  std::vector<std::pair<int32_t, float>> top;  // (token, logprob), best first
  uint64_t seed = 0;
  std::string profile;
  uint32_t server_micros = 0;
};

// SessionOptions
//
// The fixed parts of a generation.
struct SessionOptions {
  // Key of the sequence; empty = a random one.
  std::string sequence_id;
  // Server profile; empty = the server's default.
  std::string profile;
  // 0 = the server picks one on the first step; the session then sends that seed on every later step.
  uint64_t seed = 0;
  // Tokens before the first generated one (the prompt's tail), oldest first.
  std::vector<int32_t> prompt_tail;
  // How many of the most recent tokens each step carries (the same default as the other clients: penalties
  // see this window, so a shorter one changes tokens).
  size_t max_recent_tokens = 1024;
};

class Client;
class Session;

// ClientOptions
//
// Transport security and authentication of every endpoint of a Client.
struct ClientOptions {
  // TLS on every endpoint (a "unix:" target stays plaintext only when tls is false).
  bool tls = false;
  // PEM CA bundle the server's certificate must chain to; empty = the system's roots. Needs tls.
  std::string tls_ca_pem;
  // PEM client certificate chain and its private key, for a server started with --tls_client_ca. Needs tls.
  std::string tls_cert_pem;
  std::string tls_key_pem;
  // Sent as "authorization: Bearer <token>" on every call (a server started with --auth_token_file); empty =
  // none.
  std::string token;
  // How long one attempt of a Session's Step (opening the stream, the write, the answer) or Close may take: past
  // it the stream is cancelled and the step goes to the next endpoint, so a server that stops reading or
  // answering cannot hold the host.
  absl::Duration step_timeout = absl::Seconds(10);
  // How long a step (or SampleOnce, SampleBatch) that fails in transport is sent again, endpoint after endpoint,
  // with a backoff of 20 ms doubling to 500 ms: long enough for a replica to restart, bounded so that a host
  // whose servers are all gone hears about it. Every endpoint is tried at least once; then the last failure is
  // returned (DEADLINE_EXCEEDED when the last attempt timed out). As the other clients' failover timeout.
  absl::Duration failover_timeout = absl::Seconds(10);
};

// The channel credentials `options` ask for: TLS with their CA and client certificate, else plaintext. For
// channels a program makes itself (samplerctl bench); a Client makes its own.
std::shared_ptr<grpc::ChannelCredentials> MakeCredentials(const ClientOptions& options);

// Adds "authorization: Bearer <token>" to a call's metadata when `token` is not empty. For calls on such
// channels; a Client adds it to its own calls.
void AddBearerToken(absl::string_view token, grpc::ClientContext* context);

// BatchItem
//
// One session's step in a Client::SampleBatch.
struct BatchItem {
  Session* session;
  TensorRef logits;
  std::optional<TensorRef> attention = std::nullopt;
  StepOptions options = {};
};

// Session
//
// One sequence on its own Sample stream. Not thread-safe; one Step at a time. The destructor cancels a stream
// that was not closed.
class Session {
 public:
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session();

  // Sends one step and waits for its result: logits of shape [vocab], attention of shape [heads, kv_len] or
  // [layers, heads, kv_len], each float32, float16 or bfloat16. On success the token is appended to the recent tokens
  // and the step index advances. A rejected step returns the server's error (code, "field: message", RejectedField) and
  // changes nothing, so it can be corrected and resent. A broken stream (UNAVAILABLE, CANCELLED, UNKNOWN, INTERNAL, or
  // ended without an answer, or no answer within ClientOptions::step_timeout) is reopened on the next endpoint and the
  // step resent for up to ClientOptions::failover_timeout; then the status is returned and the next Step tries
  // again. A stream an earlier step left open that turns out broken is reopened at once. An answer that is not
  // this step's (another sequence id or step index, or an error without a code) is INTERNAL: the stream is
  // dropped and nothing changes.
  absl::StatusOr<StepResult> Step(const TensorRef& logits, const std::optional<TensorRef>& attention = std::nullopt,
                                  const StepOptions& options = {});

  // Half-closes the stream and returns its final status; INTERNAL if the server sent an answer no step asked for.
  absl::Status Close();

  const std::string& sequence_id() const { return sequence_id_; }
  // Index of the next step.
  uint64_t step() const { return step_; }
  // How many times the stream was reopened after a failure.
  int failovers() const { return failovers_; }
  // The seed in force: 0 until the server picked one when none was given.
  uint64_t seed() const { return seed_; }
  const std::vector<int32_t>& recent_tokens() const { return recent_tokens_; }

 private:
  friend class Client;
  Session(Client* client, SessionOptions options);

  // Writes this session's next step into `step`.
  void FillStep(const TensorRef& logits, const std::optional<TensorRef>& attention, const StepOptions& options,
                v1::Step* step) const;
  // INTERNAL unless `r` answers this session's next step: its sequence id (or, for a rejection, the id's cut
  // echo) and step index, and a rejection's code is an error code.
  absl::Status CheckAnswer(const v1::StepResult& r) const;
  // The result of this session's step `r`, which CheckAnswer accepted: on success advances the session (seed,
  // step index, recent tokens); a rejection comes back as its status with the rejected field as payload and
  // changes nothing.
  absl::StatusOr<StepResult> Commit(const v1::StepResult& r);
  // Ends the stream after a failed Read or Write and returns why.
  absl::Status FailStream();
  // Cancels and ends a stream whose answers can no longer be matched to its steps; returns `why`.
  absl::Status DropStream(absl::Status why);
  // One Write + Read of request_ on the open stream, else on a new stream to `*endpoint`; `*endpoint` becomes the
  // endpoint the stream is on.
  absl::Status Exchange(size_t* endpoint);

  Client* client_;
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::SampleRequest, v1::SampleResponse>> stream_;
  size_t stream_endpoint_ = 0;  // the endpoint stream_ is on
  bool closed_ = false;
  int failovers_ = 0;
  const std::string sequence_id_;
  const std::string profile_;
  const size_t max_recent_tokens_;
  uint64_t seed_;
  uint64_t step_ = 0;
  std::vector<int32_t> recent_tokens_;
  v1::SampleRequest request_;  // reused: keeps the tensor buffers' capacity between steps
  v1::SampleResponse response_;
};

// Client
//
// One channel to a samplerd. Thread-safe (gRPC stubs are); Sessions opened from it must not outlive it.
class Client {
 public:
  // `target` is any gRPC target: "localhost:50051", "unix:/run/samplerd.sock", "dns:///samplerd:50051"
  // (several addresses are balanced round_robin). Plaintext, unless `options` asks for TLS.
  explicit Client(const std::string& target, const ClientOptions& options = {});
  // Several endpoints, tried in order on failure.
  explicit Client(const std::vector<std::string>& targets, const ClientOptions& options = {});
  // Client({"a:50051", "b:50051"}, options): without it, a braced list of two string literals would also match
  // std::string's (first, last) constructor, and the call would be ambiguous.
  explicit Client(std::initializer_list<std::string> targets, const ClientOptions& options = {});
  // A channel made by the caller (its own credentials and arguments, interceptors); `token` as in ClientOptions.
  explicit Client(std::shared_ptr<grpc::Channel> channel, std::string token = "");

  // The server's health for `service` ("" = the whole server).
  absl::StatusOr<ServingStatus> Health(const std::string& service = "", absl::Duration timeout = absl::Seconds(5));
  absl::StatusOr<v1::ListProfilesResponse> ListProfiles(absl::Duration timeout = absl::Seconds(5));
  // The call's status is returned only when the call failed; rejected steps are in the response.
  absl::StatusOr<v1::SampleResponse> SampleOnce(const v1::SampleRequest& request,
                                                absl::Duration timeout = absl::Seconds(30));
  // One request carrying one step of each item's session (each session at most once), answered in order: the
  // outer status is the call's (or a session given twice); each inner one is that step's result or rejection.
  // Every accepted session advances; a rejected one is unchanged. Retried on the next endpoint as SampleOnce is.
  absl::StatusOr<std::vector<absl::StatusOr<StepResult>>> SampleBatch(absl::Span<const BatchItem> items,
                                                                      absl::Duration timeout = absl::Seconds(30));
  // Opens a Sample stream for one sequence. The stream is established lazily, with the first Step.
  std::unique_ptr<Session> OpenSession(SessionOptions options);

  // Adds the token (ClientOptions.token) to a call made on channel() directly.
  void Authorize(grpc::ClientContext* context) const;

  // The current endpoint's channel.
  const std::shared_ptr<grpc::Channel>& channel() const { return endpoints_[current_.load()].channel; }
  size_t endpoint_count() const { return endpoints_.size(); }

 private:
  friend class Session;
  struct Endpoint {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::Sampler::Stub> stub;
  };
  static Endpoint MakeEndpoint(std::shared_ptr<grpc::Channel> channel);
  // Sets the deadline and the token of a call.
  void Prepare(grpc::ClientContext* context, absl::Duration timeout) const;
  // The client's one failover loop: `attempt(&endpoint)` (a call on the current endpoint, which it may replace by
  // the one it used) until it succeeds or fails for a reason other than transport. After a transport failure the
  // client moves past that endpoint and, after a backoff, tries again, until every endpoint was tried and the
  // failures lasted failover_timeout_. `*retries` counts the attempts made again. Retrying is safe because a
  // request carries every input of its steps (the server keeps no per-call state).
  template <typename Attempt>
  absl::Status WithFailover(Attempt attempt, int* retries);

  std::vector<Endpoint> endpoints_;
  // Shared by every session, so one failure moves them all; a failure moves it only off the endpoint that failed,
  // so concurrent failures of one endpoint move it once.
  std::atomic<size_t> current_{0};
  std::string token_;
  absl::Duration step_timeout_ = ClientOptions().step_timeout;
  absl::Duration failover_timeout_ = ClientOptions().failover_timeout;
};

}  // namespace samplerd::client

#endif  // SAMPLERD_CLIENTS_CPP_SAMPLERD_CLIENT_H_
