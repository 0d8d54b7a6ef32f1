#include "clients/cpp/samplerd_client.h"

#include <cstring>
#include <memory>
#include <random>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/alarm.h"

namespace samplerd::client {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "samplerd tensors are little-endian; TensorRef copies values in host order");

std::string RandomSequenceId() {
  std::random_device device;
  return absl::StrFormat("cpp-%08x%08x", device(), device());
}

constexpr char kFieldPayload[] = "type.samplerd.dev/rejected-field";

// Statuses of a stream that broke in transport or timed out (not a verdict on the request): worth another
// endpoint.
bool IsTransportFailure(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable || s.code() == absl::StatusCode::kCancelled ||
         s.code() == absl::StatusCode::kUnknown || s.code() == absl::StatusCode::kInternal ||
         s.code() == absl::StatusCode::kAborted || s.code() == absl::StatusCode::kDeadlineExceeded;
}

// A refused step echoes at most this many bytes of its sequence_id, cut at a UTF-8 character boundary
// (docs/contract.md).
constexpr size_t kMaxEchoedSequenceIdBytes = 256;

// Whether `r` answers a step of `sequence_id`: the id itself, or for a refused step, its cut echo.
bool Echoes(const v1::StepResult& r, const std::string& sequence_id) {
  if (r.sequence_id() == sequence_id) return true;
  const std::string& echo = r.sequence_id();
  return r.has_error() && sequence_id.size() > kMaxEchoedSequenceIdBytes &&
         echo.size() + 3 >= kMaxEchoedSequenceIdBytes && echo.size() <= kMaxEchoedSequenceIdBytes &&
         absl::StartsWith(sequence_id, echo);
}

// Cancels a call from gRPC's timer once `timeout` has passed, so that a Write blocked by a peer that does not
// read, or a Read of an answer that never comes, returns. The alarm's callback may run after the watchdog is
// gone, so it reaches the context only through state the watchdog clears on destruction.
class CallWatchdog {
 public:
  CallWatchdog(grpc::ClientContext* context, absl::Duration timeout) : state_(std::make_shared<State>()) {
    state_->context = context;
    alarm_.Set(absl::ToChronoTime(absl::Now() + timeout), [state = state_](bool expired) {
      absl::MutexLock lock(&state->mu);
      if (!expired || state->context == nullptr) return;
      state->context->TryCancel();
      state->fired = true;
    });
  }
  CallWatchdog(const CallWatchdog&) = delete;
  CallWatchdog& operator=(const CallWatchdog&) = delete;
  ~CallWatchdog() {
    {
      absl::MutexLock lock(&state_->mu);
      state_->context = nullptr;
    }
    alarm_.Cancel();
  }

  // Whether the call was cancelled for taking too long.
  bool fired() const {
    absl::MutexLock lock(&state_->mu);
    return state_->fired;
  }

 private:
  struct State {
    absl::Mutex mu;
    grpc::ClientContext* context ABSL_GUARDED_BY(mu) = nullptr;
    bool fired ABSL_GUARDED_BY(mu) = false;
  };
  std::shared_ptr<State> state_;
  grpc::Alarm alarm_;
};

absl::Status TimedOut(absl::string_view what, absl::Duration timeout) {
  return absl::DeadlineExceededError(
      absl::StrCat(what, " took longer than ", absl::FormatDuration(timeout), " (ClientOptions::step_timeout)"));
}

// The wait before attempt `failures` + 1 of a call whose attempts failed in transport: 20 ms, doubling, at most
// 500 ms, as the other clients wait.
absl::Duration Backoff(size_t failures) {
  return failures >= 5 ? absl::Milliseconds(500) : absl::Milliseconds(20 << failures);
}

// Waits `duration` watching `channel`, so that its connection attempts progress meanwhile: a handshake is driven by
// threads polling gRPC, and between calls none does but gRPC's backup poller, every 5 s. A plain sleep would
// leave a replica that came back unused for seconds.
void WaitPolling(grpc::Channel& channel, absl::Duration duration) {
  const auto deadline = absl::ToChronoTime(absl::Now() + duration);
  while (channel.WaitForStateChange(channel.GetState(/*try_to_connect=*/true), deadline)) {
  }
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target, const ClientOptions& options) {
  grpc::ChannelArguments args;
  // Several addresses behind one target (dns:///, ipv4:a,b) are spread over, not pinned to the first.
  args.SetLoadBalancingPolicyName("round_robin");
  // bytes; the server's default limit, so a large SampleOnce answer is not refused on our side (gRPC's client
  // default is 4 MiB).
  args.SetMaxReceiveMessageSize(64 << 20);
  // ms; keeps a long idle Sample stream alive through NATs. The server accepts a ping every 10 s.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30 * 1000);
  // ms; a restarted replica is connected to again within the failover timeout (gRPC's default backoff grows to
  // 120 s).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  return grpc::CreateCustomChannel(target, MakeCredentials(options), args);
}

}  // namespace

template <typename Attempt>
absl::Status Client::WithFailover(Attempt attempt, int* retries) {
  absl::Time first_failure;
  for (size_t failures = 0;; ++failures) {
    size_t endpoint = current_.load();
    const absl::Status status = attempt(&endpoint);
    if (status.ok() || !IsTransportFailure(status)) return status;
    const absl::Time now = absl::Now();
    if (failures == 0) first_failure = now;
    size_t failed = endpoint;
    current_.compare_exchange_strong(failed, (endpoint + 1) % endpoints_.size());
    if (failures + 1 >= endpoints_.size() && now - first_failure >= failover_timeout_) return status;
    ++*retries;
    WaitPolling(*endpoints_[current_.load()].channel, Backoff(failures));
  }
}

std::shared_ptr<grpc::ChannelCredentials> MakeCredentials(const ClientOptions& options) {
  if (!options.tls) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = options.tls_ca_pem;
  ssl.pem_cert_chain = options.tls_cert_pem;
  ssl.pem_private_key = options.tls_key_pem;
  return grpc::SslCredentials(ssl);
}

absl::string_view ServingStatusName(ServingStatus status) {
  switch (status) {
    case ServingStatus::kServing:
      return "SERVING";
    case ServingStatus::kNotServing:
      return "NOT_SERVING";
    case ServingStatus::kServiceUnknown:
      return "SERVICE_UNKNOWN";
    case ServingStatus::kUnknown:
      break;
  }
  return "UNKNOWN";
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

std::string RejectedField(const absl::Status& status) {
  auto payload = status.GetPayload(kFieldPayload);
  return payload.has_value() ? std::string(*payload) : std::string();
}

void FillF32Tensor(absl::Span<const float> values, absl::Span<const int64_t> shape, v1::Tensor* tensor) {
  TensorRef(values, shape).Fill(tensor);
}

void TensorRef::Fill(v1::Tensor* tensor) const {
  tensor->set_dtype(dtype_);
  tensor->mutable_shape()->Clear();
  if (shape_.empty()) {
    tensor->add_shape(static_cast<int64_t>(count_));
  } else {
    tensor->mutable_shape()->Add(shape_.begin(), shape_.end());
  }
  const size_t bytes = count_ * (dtype_ == v1::DTYPE_F32 ? sizeof(float) : sizeof(uint16_t));
  std::string* data = tensor->mutable_data();
  data->resize(bytes);
  if (bytes != 0) std::memcpy(data->data(), data_, bytes);
}

// Session

Session::Session(Client* client, SessionOptions options)
    : client_(client),
      sequence_id_(options.sequence_id.empty() ? RandomSequenceId() : std::move(options.sequence_id)),
      profile_(std::move(options.profile)),
      max_recent_tokens_(options.max_recent_tokens),
      seed_(options.seed),
      recent_tokens_(std::move(options.prompt_tail)) {
  if (recent_tokens_.size() > max_recent_tokens_) {
    recent_tokens_.erase(recent_tokens_.begin(), recent_tokens_.end() - static_cast<ptrdiff_t>(max_recent_tokens_));
  }
}

Session::~Session() {
  if (stream_ != nullptr) {
    context_->TryCancel();
    stream_->Finish();
  }
}

absl::Status Session::FailStream() {
  const grpc::Status status = stream_->Finish();
  stream_.reset();
  if (status.ok()) return absl::UnavailableError("the server ended the Sample stream before answering");
  return FromGrpcStatus(status);
}

absl::Status Session::DropStream(absl::Status why) {
  if (stream_ != nullptr) {
    context_->TryCancel();
    stream_->Finish();
    stream_.reset();
  }
  return why;
}

absl::Status Session::Exchange(size_t* endpoint) {
  const bool open = stream_ != nullptr;
  if (open) {
    *endpoint = stream_endpoint_;
  } else {
    context_ = std::make_unique<grpc::ClientContext>();
    client_->Authorize(context_.get());
  }
  // Armed before the stream opens: opening can wait for a connection, too.
  CallWatchdog watchdog(context_.get(), client_->step_timeout_);
  if (!open) {
    stream_ = client_->endpoints_[*endpoint].stub->Sample(context_.get());
    stream_endpoint_ = *endpoint;
  }
  if (stream_->Write(request_) && stream_->Read(&response_)) return absl::OkStatus();
  const absl::Status failed = FailStream();
  return watchdog.fired() ? TimedOut("the step", client_->step_timeout_) : failed;
}

void Session::FillStep(const TensorRef& logits, const std::optional<TensorRef>& attention, const StepOptions& options,
                       v1::Step* step) const {
  step->set_sequence_id(sequence_id_);
  step->set_step(step_);
  logits.Fill(step->mutable_logits());
  if (attention.has_value()) attention->Fill(step->mutable_attention());
  step->mutable_recent_tokens()->Add(recent_tokens_.begin(), recent_tokens_.end());
  if (options.params.has_value()) *step->mutable_params() = *options.params;
  step->set_profile(profile_);
  step->set_seed(seed_);
  step->set_top_logprobs(options.top_logprobs);
}

absl::Status Session::CheckAnswer(const v1::StepResult& r) const {
  if (!Echoes(r, sequence_id_) || r.step() != step_) {
    return absl::InternalError(absl::StrCat("expected the result of ", sequence_id_, " step ", step_, ", got ",
                                            r.sequence_id(), " step ", r.step()));
  }
  if (r.has_error() &&
      (r.error().code() <= 0 || r.error().code() > static_cast<int>(absl::StatusCode::kUnauthenticated))) {
    return absl::InternalError(absl::StrCat("the server refused ", sequence_id_, " step ", step_, " with code ",
                                            r.error().code(), ", which is not an error code"));
  }
  return absl::OkStatus();
}

absl::StatusOr<StepResult> Session::Commit(const v1::StepResult& r) {
  if (r.has_error()) {
    absl::Status rejected(static_cast<absl::StatusCode>(r.error().code()), r.error().message());
    rejected.SetPayload(kFieldPayload, absl::Cord(r.error().field()));
    return rejected;
  }

  StepResult result;
  result.step = r.step();
  result.token = r.token();
  result.logprob = r.logprob();
  result.regime = r.regime();
  result.applied = r.applied();
  result.metrics = r.metrics();
  result.top.reserve(static_cast<size_t>(r.top_size()));
  for (const v1::TokenLogprob& t : r.top()) result.top.emplace_back(t.token(), t.logprob());
  result.seed = r.seed();
  result.profile = r.profile();
  result.server_micros = r.server_micros();

  if (seed_ == 0) seed_ = r.seed();
  ++step_;
  recent_tokens_.push_back(r.token());
  if (recent_tokens_.size() > max_recent_tokens_) {
    recent_tokens_.erase(recent_tokens_.begin(), recent_tokens_.end() - static_cast<ptrdiff_t>(max_recent_tokens_));
  }
  return result;
}

absl::StatusOr<StepResult> Session::Step(const TensorRef& logits, const std::optional<TensorRef>& attention,
                                         const StepOptions& options) {
  if (closed_) return absl::FailedPreconditionError("the session's Sample stream is closed");

  // Clear keeps the cleared step and its byte buffers allocated for the next call.
  v1::Step* step = request_.steps_size() == 0 ? request_.add_steps() : request_.mutable_steps(0);
  step->Clear();
  FillStep(logits, attention, options, step);

  const absl::Status sent = client_->WithFailover(
      [this](size_t* endpoint) {
        const bool reused = stream_ != nullptr;
        absl::Status status = Exchange(endpoint);
        // An earlier step's stream can have broken since (a replica restarted between steps): that says nothing of
        // the endpoint until a fresh stream fails too.
        if (reused && IsTransportFailure(status) && status.code() != absl::StatusCode::kDeadlineExceeded) {
          status = Exchange(endpoint);
        }
        return status;
      },
      &failovers_);
  if (!sent.ok()) return sent;
  if (response_.results_size() != 1) {
    return DropStream(absl::InternalError(
        absl::StrCat("the server answered a 1-step request with ", response_.results_size(), " results")));
  }
  if (absl::Status answer = CheckAnswer(response_.results(0)); !answer.ok()) return DropStream(std::move(answer));
  return Commit(response_.results(0));
}

absl::Status Session::Close() {
  if (closed_) return absl::OkStatus();
  closed_ = true;
  if (stream_ == nullptr) return absl::OkStatus();
  CallWatchdog watchdog(context_.get(), client_->step_timeout_);
  stream_->WritesDone();
  // Finish waits for unread answers, so one no step asked for is read here rather than left to hold it.
  if (stream_->Read(&response_)) {
    return DropStream(absl::InternalError("the server sent an answer no step asked for"));
  }
  const grpc::Status status = stream_->Finish();
  stream_.reset();
  if (watchdog.fired()) return TimedOut("closing the stream", client_->step_timeout_);
  return FromGrpcStatus(status);
}

// Client

Client::Endpoint Client::MakeEndpoint(std::shared_ptr<grpc::Channel> channel) {
  Endpoint e;
  e.stub = v1::Sampler::NewStub(channel);
  e.channel = std::move(channel);
  return e;
}

Client::Client(const std::string& target, const ClientOptions& options)
    : Client(std::vector<std::string>{target}, options) {}

Client::Client(const std::vector<std::string>& targets, const ClientOptions& options)
    : token_(options.token), step_timeout_(options.step_timeout), failover_timeout_(options.failover_timeout) {
  for (const std::string& t : targets) endpoints_.push_back(MakeEndpoint(MakeChannel(t, options)));
  if (endpoints_.empty()) endpoints_.push_back(MakeEndpoint(MakeChannel("localhost:50051", options)));
}

Client::Client(std::initializer_list<std::string> targets, const ClientOptions& options)
    : Client(std::vector<std::string>(targets), options) {}

Client::Client(std::shared_ptr<grpc::Channel> channel, std::string token) : token_(std::move(token)) {
  endpoints_.push_back(MakeEndpoint(std::move(channel)));
}

void AddBearerToken(absl::string_view token, grpc::ClientContext* context) {
  if (!token.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
}

void Client::Authorize(grpc::ClientContext* context) const { AddBearerToken(token_, context); }

void Client::Prepare(grpc::ClientContext* context, absl::Duration timeout) const {
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  Authorize(context);
}

absl::StatusOr<ServingStatus> Client::Health(const std::string& service, absl::Duration timeout) {
  grpc::ClientContext context;
  Prepare(&context, timeout);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  // A stub is a thin wrapper of the channel; making one per check keeps the health proto out of the header.
  if (grpc::Status s = grpc::health::v1::Health::NewStub(channel())->Check(&context, request, &response); !s.ok()) {
    return FromGrpcStatus(s);
  }
  return static_cast<ServingStatus>(response.status());
}

absl::StatusOr<v1::ListProfilesResponse> Client::ListProfiles(absl::Duration timeout) {
  grpc::ClientContext context;
  Prepare(&context, timeout);
  v1::ListProfilesResponse response;
  if (grpc::Status s = endpoints_[current_.load()].stub->ListProfiles(&context, v1::ListProfilesRequest(), &response);
      !s.ok()) {
    return FromGrpcStatus(s);
  }
  return response;
}

absl::StatusOr<v1::SampleResponse> Client::SampleOnce(const v1::SampleRequest& request, absl::Duration timeout) {
  v1::SampleResponse response;
  int retries = 0;
  const absl::Status status = WithFailover(
      [&](size_t* endpoint) {
        grpc::ClientContext context;
        Prepare(&context, timeout);
        response.Clear();
        return FromGrpcStatus(endpoints_[*endpoint].stub->SampleOnce(&context, request, &response));
      },
      &retries);
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<std::vector<absl::StatusOr<StepResult>>> Client::SampleBatch(absl::Span<const BatchItem> items,
                                                                            absl::Duration timeout) {
  v1::SampleRequest request;
  for (size_t i = 0; i < items.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (items[j].session == items[i].session) {
        return absl::InvalidArgumentError(
            absl::StrCat("items[", i, "]: session ", items[i].session->sequence_id(), " is already items[", j, "]"));
      }
    }
    items[i].session->FillStep(items[i].logits, items[i].attention, items[i].options, request.add_steps());
  }
  absl::StatusOr<v1::SampleResponse> response = SampleOnce(request, timeout);
  if (!response.ok()) return response.status();
  if (response->results_size() != static_cast<int>(items.size())) {
    return absl::InternalError(absl::StrCat("the server answered a ", items.size(), "-step request with ",
                                            response->results_size(), " results"));
  }
  // Every answer is checked before any session advances, so a bad answer leaves every session as it was.
  for (size_t i = 0; i < items.size(); ++i) {
    if (absl::Status answer = items[i].session->CheckAnswer(response->results(static_cast<int>(i))); !answer.ok()) {
      return answer;
    }
  }
  std::vector<absl::StatusOr<StepResult>> results;
  results.reserve(items.size());
  for (size_t i = 0; i < items.size(); ++i)
    results.push_back(items[i].session->Commit(response->results(static_cast<int>(i))));
  return results;
}

std::unique_ptr<Session> Client::OpenSession(SessionOptions options) {
  return std::unique_ptr<Session>(new Session(this, std::move(options)));
}

}  // namespace samplerd::client
