#include "service/sampler_service.h"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/field_error.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "service/allocator_tuning.h"
#include "service/answer_order.h"
#include "service/message_framing.h"
#include "service/request_wire.h"
#include "service/step_codec.h"
#include "service/tsan_annotations.h"
#include "spdlog/spdlog.h"

namespace samplerd {
namespace {

// Responses waiting to be written, the one in flight included, before a stream stops reading. A few keep the
// pipeline busy (the next request is decoded while the previous response is on the wire); more would only
// buffer for a client that does not read. gRPC's flow control then pushes back on the client's writes.
constexpr size_t kMaxQueuedResponses = 4;

// Requests a stream holds at once: one being received while the previous one runs on the workers. Each may be
// --max_message_bytes large, so this bounds a stream's memory; more would not make one stream faster, only let
// it take more of the pool from the other streams.
constexpr int kMaxRequestsInFlight = 2;

// The scratch a worker keeps after a step, over all its buffers. Ordinary steps stay far below it (an XL step's
// scratch is about 10 MiB) and reuse their buffers; an outsized one frees its largest buffers when it is done, so
// what the workspaces keep grows with the workers by at most this much each. At glibc's mmap threshold
// (service/allocator_tuning.h): a buffer over it was its own mapping and goes back to the kernel at once.
constexpr size_t kWorkspaceKeepBytes = kMmapThresholdBytes;

// The largest parsed request a stream keeps to parse the next one into. A message keeps its buffers' capacity
// when cleared, so a stream that once carried a request of --max_message_bytes would hold that much for as long
// as it stays open, idle or not; a few L steps fit, and a larger request's buffers go back to the allocator.
constexpr size_t kRequestKeepBytes = size_t{4} << 20;

// What all streams keep of those at once: a stream holds up to kMaxRequestsInFlight of them whether it is busy or
// idle, and --max_streams of idle streams would otherwise keep gigabytes. Past it a stream's request is freed once
// answered, and the next one parses into a new message.
constexpr int64_t kKeptRequestsBytes = int64_t{256} << 20;

// The same for a parsed answer, which a stream keeps in each of its kMaxQueuedResponses entries: 64 steps with
// 20 top log-probabilities each fit; the error answers of 4,096 empty steps (a 1 MB parsed answer to an 8 KB
// request) do not.
constexpr size_t kAnswerKeepBytes = size_t{64} << 10;

// Ends a stream that was not admitted without touching its messages.
class RejectedStream final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit RejectedStream(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

// RESOURCE_EXHAUSTED for a call or step that --max_pending_request_bytes turned away; `consequence` says what.
absl::Status BudgetFullError(int64_t max_bytes, absl::string_view consequence) {
  return absl::ResourceExhaustedError(absl::StrCat("the requests and answers the server holds already fill its ",
                                                   max_bytes, " bytes (--max_pending_request_bytes); ", consequence,
                                                   ", retry it later"));
}

// A unary call's reactor, which counts its answer against --max_pending_request_bytes until gRPC is done with the
// call: a client that does not read its answers (an HTTP/2 window it never opens) would otherwise make the server
// hold every one, and an answer can be far larger than its request.
class AnswerHoldingReactor final : public grpc::ServerUnaryReactor {
 public:
  // Where StartRequest leaves the request's charge (its keep_charge), for the answer to be held within.
  PendingBudget::Charge* request_charge() { return &request_held_; }

  // Counts `wire`'s bytes: within the request's charge when they fit in it, else as a charge of their own. When
  // that does not fit the budget, clears `wire` and says RESOURCE_EXHAUSTED: the call then ends with that status
  // and no answer, a few bytes to hold, so a refused call (whose request was not charged) leaves nothing behind.
  absl::Status HoldAnswer(PendingBudget* budget, grpc::ByteBuffer* wire) {
    const int64_t bytes = static_cast<int64_t>(wire->Length());
    if (bytes <= request_held_.bytes()) return absl::OkStatus();
    request_held_.Release();
    answer_held_ = budget->TryCharge(bytes);
    if (answer_held_) return absl::OkStatus();
    wire->Clear();
    return BudgetFullError(budget->max_bytes(), "this call's answer was dropped");
  }
  // Finish, with what this thread (a worker, or the handler's) did to the reactor ordered before OnDone, which gRPC
  // runs on its own thread (tsan_annotations.h).
  void FinishWith(grpc::Status status) {
    TsanHappensBefore(this);
    Finish(std::move(status));
  }
  void OnDone() override {
    TsanHappensAfter(this);
    delete this;
  }

 private:
  PendingBudget::Charge request_held_;
  PendingBudget::Charge answer_held_;
};

// The call's shared-memory session token (empty when it sends none).
std::string ShmSession(const grpc::CallbackServerContext& context) {
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find(SamplerService::kShmSessionMetadata);
  return it == metadata.end() ? std::string() : std::string(it->second.data(), it->second.size());
}

// Parses one received message into `request` (reused: its buffers keep their capacity) and releases the
// buffer's slices. `index` counts the call's messages from 1, for the error. A message that would parse to many
// times its size is refused first (CheckRequestWire, with `max_steps`).
template <class Request>
absl::Status ParseRequest(grpc::ByteBuffer* buffer, int64_t index, int64_t max_steps, Request* request) {
  // A unary call's handler runs with no buffer at all when the client sent no message.
  if (!buffer->Valid()) return absl::InvalidArgumentError("the call carried no request message");
  absl::Status refused;
  {
    grpc::ProtoBufferReader reader(buffer);
    refused = CheckRequestWire(*Request::descriptor(), &reader, max_steps);
  }
  if (!refused.ok()) {
    buffer->Clear();
    return refused;
  }
  const grpc::Status parsed = grpc::SerializationTraits<Request>::Deserialize(buffer, request);
  if (parsed.ok()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("message ", index, " of the call is not a ",
                                                 Request::descriptor()->full_name(), ": it does not parse"));
}

// A unary call's received message, taken from gRPC: the call keeps its own until it ends, which is when its answer
// is sent, and a client that opens no flow-control window never lets it be sent. What the call holds meanwhile is
// its answer, within --max_pending_request_bytes, not a request that may weigh many times its parsed form.
grpc::ByteBuffer TakeRequest(const grpc::ByteBuffer* request) {
  grpc::ByteBuffer taken;
  // gRPC 1.51 keeps a callback unary call's raw request in a non-const holder in the call's arena (no
  // MessageAllocator is set), reads it no more once the handler runs, and destroys it when the call is done; the
  // auth interceptor empties it the same way.
  taken.Swap(const_cast<grpc::ByteBuffer*>(request));
  return taken;
}

// The response's wire form, as gRPC would have written it. RESOURCE_EXHAUSTED (and no wire form) when it is over
// `max_bytes`, --max_message_bytes: gRPC would fail the whole call on writing it, and a stream's earlier answers
// could be lost with it; this way they are written and the stream ends after them with the reason.
template <class Response>
absl::Status Serialize(const Response& response, int64_t max_bytes, grpc::ByteBuffer* wire) {
  bool own_buffer = false;
  // Only fails for a message over 2 GiB, which no response of this service is.
  const grpc::Status status = grpc::SerializationTraits<Response>::Serialize(response, wire, &own_buffer);
  if (!status.ok()) {
    spdlog::error("a {} did not serialize: {}", Response::descriptor()->full_name(), status.error_message());
  }
  if (const size_t bytes = wire->Length(); static_cast<int64_t>(bytes) > max_bytes) {
    wire->Clear();
    // Only a sample's answer grows with what the request asks for.
    const absl::string_view advice = std::is_same_v<Response, v1::SampleResponse>
                                         ? "; send fewer steps per request"
                                         : "; the server's --max_message_bytes is too small for it";
    return absl::ResourceExhaustedError(
        absl::StrCat("the answer is ", bytes, " bytes, over --max_message_bytes ", max_bytes, advice));
  }
  return absl::OkStatus();
}

}  // namespace

// SampleReactor
//
// One per Sample stream. The order of answers (which read may start, which answer is written next, when and how
// the stream ends) is AnswerOrder's; the reactor does the I/O it allows. AnswerOrder is shared between the
// reactions (which gRPC may run concurrently) and the workers' completions, so it is under mu_. The read side
// (seeds_, the read's buffer and message, the message count) is only OnReadDone's: the read side stays taken
// from StartRead until that OnReadDone has handed the request to StartRequest (which resolves the seeds before it
// returns) and called ReleaseRead, so the next read, and with it the next OnReadDone, can only start after that.
//
// Lifetime: gRPC deletes the reactor (OnDone) once Finish has completed, so Finish is called only when no
// request is running on the workers, and, from a worker, as that thread's last touch of the reactor (after mu_
// is released).
class SamplerService::SampleReactor final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  SampleReactor(SamplerService* service, grpc::CallbackServerContext* context, Answerer answer)
      : service_(service), context_(context), peer_(context->peer()), answer_(std::move(answer)) {
    spdlog::debug("Sample stream opened by {}", peer_);
    std::lock_guard<std::mutex> lock(mu_);
    MaybeStartReadLocked();
  }

  void OnReadDone(bool ok) override {
    TsanHappensAfter(&read_buffer_);  // gRPC runs this after the StartRead below (tsan_annotations.h)
    // The parse and the seed resolution happen outside mu_ (a request may be tens of MB); the read side is
    // released only after StartRequest is done with seeds_.
    absl::Status parsed;
    if (ok) {
      parsed = CheckMessageFraming(*context_);
      if (parsed.ok()) {
        parsed = ParseRequest(&read_buffer_, ++messages_read_, service_->config_.max_steps_per_request,
                              &read_request_->message);
      }
    }
    Order::Entry* entry = nullptr;
    std::optional<absl::Status> finish;
    {
      std::lock_guard<std::mutex> lock(mu_);
      // Null when the client half-closed, the call is gone, an earlier request was refused, or the message is
      // garbage or refused by the wire check (logged with the status when it is sent, logging.h).
      entry = order_.Received(std::move(read_request_), /*half_closed=*/!ok, parsed);
      if (entry == nullptr) finish = order_.TakeFinish();
    }
    if (entry == nullptr) {
      if (finish.has_value()) Finish(ToGrpcStatus(*finish));
      return;
    }
    answer_(
        entry->request->message, &seeds_, &entry->answer.response,
        [this, entry](absl::Status status) { OnAnswered(entry, std::move(status)); }, nullptr);
    // The read side is free again; the next request is received while this one runs (the reactor stays alive:
    // this reaction holds it).
    std::lock_guard<std::mutex> lock(mu_);
    order_.ReleaseRead();
    MaybeStartReadLocked();
  }

  void OnWriteDone(bool ok) override {
    std::optional<absl::Status> finish;
    {
      std::lock_guard<std::mutex> lock(mu_);
      order_.WriteDone(ok);  // not ok: the call was cancelled or the connection broke
      MaybeStartWriteLocked();
      MaybeStartReadLocked();
      finish = order_.TakeFinish();
    }
    if (finish.has_value()) Finish(ToGrpcStatus(*finish));
  }

  void OnCancel() override { spdlog::debug("Sample stream from {} cancelled", peer_); }

  void OnDone() override {
    // gRPC calls this after every reaction has returned; taking mu_ once also shows that order to
    // ThreadSanitizer (tsan_annotations.h), since every reaction and completion ends its use of the reactor
    // under it.
    { std::lock_guard<std::mutex> lock(mu_); }
    spdlog::debug("Sample stream from {} closed", peer_);
    service_->ReleaseStream();
    delete this;
  }

 private:
  // A request's answer and its wire form.
  struct Answer {
    v1::SampleResponse response;
    grpc::ByteBuffer wire;       // `response` serialized, once answered
    PendingBudget::Charge held;  // `wire`'s bytes, until written
    void Clear() {
      wire.Clear();
      held.Release();
    }
  };
  // A parsed request, kept for the next one to parse into while kept_requests_ has room for it.
  struct Request {
    v1::SampleRequest message;
    PendingBudget::Charge kept;
  };
  using Order = AnswerOrder<Request, Answer>;

  // The completion of one request, on a worker (or on the reading thread for a request answered at once: refused,
  // empty, or no compute).
  void OnAnswered(Order::Entry* entry, absl::Status status) {
    // Serialized here, outside mu_, on the thread that answered.
    Answer& answer = entry->answer;
    if (status.ok()) status = Serialize(answer.response, service_->config_.max_message_bytes, &answer.wire);
    // Counted, not refused: the stream reads no more requests while kMaxQueuedResponses wait for its client.
    if (status.ok()) answer.held = service_->pending_.Hold(static_cast<int64_t>(answer.wire.Length()));
    // The answer is written from `wire`; a large parsed form would otherwise wait in a spare entry for as long as
    // the stream stays open.
    if (answer.response.SpaceUsedLong() > kAnswerKeepBytes) answer.response = v1::SampleResponse();
    KeepOrFree(&entry->request);
    std::optional<absl::Status> finish;
    {
      std::lock_guard<std::mutex> lock(mu_);
      order_.Answered(entry, status);  // a refusal ends the stream, logged with its status (logging.h)
      MaybeStartWriteLocked();
      MaybeStartReadLocked();
      finish = order_.TakeFinish();
    }
    // Possibly the last touch of this reactor: OnDone may delete it as soon as Finish is called.
    if (finish.has_value()) Finish(ToGrpcStatus(*finish));
  }

  // Keeps `request` for the next read when it is small enough and every stream's kept requests leave room.
  void KeepOrFree(std::unique_ptr<Request>* request) {
    const size_t bytes = (*request)->message.SpaceUsedLong();
    (*request)->kept.Release();
    if (bytes <= kRequestKeepBytes) (*request)->kept = service_->kept_requests_.TryCharge(static_cast<int64_t>(bytes));
    if (!(*request)->kept) request->reset();
  }

  void MaybeStartReadLocked() {
    std::unique_ptr<Request> request = order_.StartRead();
    if (request == nullptr) return;  // resumed from OnWriteDone / OnAnswered when the limits free up
    // A reused message keeps its buffers' capacity: a stream of same-sized requests parses without allocating.
    read_request_ = std::move(request);
    TsanHappensBefore(&read_buffer_);
    StartRead(&read_buffer_);
  }

  void MaybeStartWriteLocked() {
    // The answer stays untouched until OnWriteDone.
    if (Answer* answer = order_.NextWrite()) StartWrite(&answer->wire);
  }

  SamplerService* const service_;
  grpc::CallbackServerContext* const context_;  // gRPC's, alive until OnDone
  const std::string peer_;
  const Answerer answer_;

  std::mutex mu_;
  Order order_{{kMaxQueuedResponses, kMaxRequestsInFlight}};  // guarded by mu_
  // The read side: taken by MaybeStartReadLocked (under mu_) until OnReadDone releases it.
  SeedTable seeds_;
  grpc::ByteBuffer read_buffer_;
  std::unique_ptr<Request> read_request_;
  int64_t messages_read_ = 0;
};

absl::StatusOr<std::unique_ptr<SamplerService>> SamplerService::Create(Options options) {
  if (absl::Status s = ValidateServerConfig(options.config); !s.ok()) return s;
  if (options.profiles == nullptr) return absl::InvalidArgumentError("SamplerService needs a ProfileRegistry");
  if (options.workers == nullptr) {
    absl::StatusOr<std::unique_ptr<WorkerPool>> pool =
        WorkerPool::Create({options.config.workers, options.config.share_steps});
    if (!pool.ok()) return pool.status();
    options.workers = *std::move(pool);
  }
  spdlog::info("{} worker threads run core{}", options.workers->size(),
               options.config.allow_no_compute ? "; no-compute calls allowed (--allow_no_compute)" : "");
  return std::unique_ptr<SamplerService>(new SamplerService(std::move(options)));
}

SamplerService::SamplerService(Options options)
    : config_(std::move(options.config)),
      limits_(config_.tensor_limits()),
      profiles_(std::move(options.profiles)),
      pending_(config_.max_pending_request_bytes),
      kept_requests_(kKeptRequestsBytes),
      observer_(std::move(options.observer)),
      workers_(std::move(options.workers)),
      shm_(std::move(options.shm)),
      no_compute_(config_.allow_no_compute ? std::make_unique<NoComputeResponder>() : nullptr) {}

std::shared_ptr<const ProfileRegistry> SamplerService::profiles() const {
  std::lock_guard<std::mutex> lock(profiles_mu_);
  return profiles_;
}

void SamplerService::SetProfiles(std::shared_ptr<const ProfileRegistry> profiles) {
  std::lock_guard<std::mutex> lock(profiles_mu_);
  profiles_ = std::move(profiles);
}

absl::Status SamplerService::AdmitCall() const {
  if (!draining_.load(std::memory_order_acquire)) return absl::OkStatus();
  return absl::UnavailableError("the server is draining to stop (SIGTERM) and takes no new call; use another replica");
}

absl::Status SamplerService::AdmitUnaryCall(grpc::CallbackServerContext* context) const {
  if (absl::Status s = AdmitCall(); !s.ok()) return s;
  return CheckMessageFraming(*context);
}

absl::Status SamplerService::AdmitStream() {
  if (absl::Status s = AdmitCall(); !s.ok()) return s;
  if (active_streams_.fetch_add(1, std::memory_order_relaxed) >= config_.max_streams) {
    active_streams_.fetch_sub(1, std::memory_order_relaxed);
    return absl::ResourceExhaustedError(absl::StrCat("the server already serves ", config_.max_streams,
                                                     " Sample streams (--max_streams); retry later"));
  }
  return absl::OkStatus();
}

void SamplerService::ReleaseStream() { active_streams_.fetch_sub(1, std::memory_order_relaxed); }

void SamplerService::StartRequest(const v1::SampleRequest& request, SeedTable* seeds, v1::SampleResponse* response,
                                  std::function<void(absl::Status)> done, absl::string_view shm_session,
                                  std::function<bool()> cancelled, PendingBudget::Charge* keep_charge) const {
  response->Clear();
  const uint64_t request_bytes = request.ByteSizeLong();
  if (observer_ != nullptr) observer_->OnRequest(request_bytes);
  if (request.steps_size() > config_.max_steps_per_request) {
    done(TooManyStepsError(config_.max_steps_per_request, absl::StrCat(request.steps_size())));
    return;
  }
  // Tensors in shared memory are work the request asks for without carrying it: counted as if inline, so a
  // request by reference can ask for no more than one over the wire could.
  uint64_t total_bytes = request_bytes;
  for (const v1::Step& step : request.steps()) {
    total_bytes += ReferencedBytes(step, shm_.get(), shm_session);
    if (total_bytes > static_cast<uint64_t>(config_.max_message_bytes)) {
      done(LimitFieldError("steps", absl::StrCat("the request and the tensors its steps reference come to more than ",
                                                 config_.max_message_bytes,
                                                 " bytes (--max_message_bytes): a request by reference "
                                                 "may carry no more than one with its tensors inline")));
      return;
    }
  }
  // The requests waiting for a worker hold their memory; past the budget this one is answered now, without work.
  PendingBudget::Charge charge = pending_.TryCharge(static_cast<int64_t>(request.SpaceUsedLong()));
  if (!charge) {
    const absl::Status busy = BudgetFullError(config_.max_pending_request_bytes, "this step was not run");
    for (const v1::Step& step : request.steps()) {
      v1::StepResult* result = response->add_results();
      EncodeStepError(step, busy, result);
      if (observer_ != nullptr) observer_->OnStep(*result, std::chrono::nanoseconds(0));
    }
    done(absl::OkStatus());
    return;
  }
  // What the steps share while they run; freed by the pool after `done`.
  struct Job {
    std::shared_ptr<const ProfileRegistry> registry;
    std::vector<uint64_t> seeds;
    PendingBudget::Charge charge;
    PendingBudget::Charge* keep_charge;
    std::function<void(absl::Status)> done;
    std::string shm_session;
    std::function<bool()> cancelled;
    bool Cancelled() const { return cancelled != nullptr && cancelled(); }
    void Finish() {
      if (keep_charge != nullptr) {
        *keep_charge = std::move(charge);
      } else {
        charge.Release();
      }
      done(absl::OkStatus());
    }
  };
  auto job = std::make_shared<Job>();
  job->registry = profiles();
  job->charge = std::move(charge);
  job->keep_charge = keep_charge;
  job->done = std::move(done);
  job->shm_session = std::string(shm_session);
  job->cancelled = std::move(cancelled);
  const int n = request.steps_size();
  // Seeds in request order, here: the table is the stream's and not thread-safe.
  job->seeds.reserve(static_cast<size_t>(n));
  for (const v1::Step& step : request.steps()) job->seeds.push_back(seeds->Resolve(step.sequence_id(), step.seed()));
  // One slot per step before any worker starts: the workers write disjoint elements and never resize.
  google::protobuf::RepeatedPtrField<v1::StepResult>* results = response->mutable_results();
  results->Reserve(n);
  for (int i = 0; i < n; ++i) results->Add();
  // A lone step runs here when a worker is idle anyway (WorkerPool::TryRunHere): no hand-off either way.
  if (n == 1 && workers_->TryRunHere([&](WorkerPool::WorkerState* w) {
        AnswerStep(*job->registry, request.steps(0), job->seeds[0], job->shm_session, job->Cancelled(), &w->workspace,
                   &w->output, results->Mutable(0), w->fork_join);
      })) {
    job->Finish();
    return;
  }
  workers_->ParallelFor(
      n,
      [this, job, &request, results](int i, WorkerPool::WorkerState* worker) {
        AnswerStep(*job->registry, request.steps(i), job->seeds[static_cast<size_t>(i)], job->shm_session,
                   job->Cancelled(), &worker->workspace, &worker->output, results->Mutable(i), worker->fork_join);
      },
      [job] { job->Finish(); });
}

void SamplerService::AnswerStep(const ProfileRegistry& registry, const v1::Step& step, uint64_t seed,
                                absl::string_view shm_session, bool cancelled, Workspace* workspace, StepOutput* out,
                                v1::StepResult* result, ForkJoin* fork_join) const {
  StepInput in = DecodeStep(step, seed);
  // The regions stay mapped until the step is answered, whatever happens to their control connection meanwhile.
  ShmHold hold;
  absl::Status status =
      cancelled
          ? absl::CancelledError("the call ended (cancelled, past its deadline or disconnected) before this step ran")
          : ResolveTensorRefs(step, shm_.get(), shm_session, &in, &hold);
  const auto start = std::chrono::steady_clock::now();
  if (status.ok()) status = RunStep(registry, limits_, in, workspace, out, fork_join);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  if (status.ok()) {
    EncodeStepResult(step, *out, seed, elapsed, result);
  } else {
    EncodeStepError(step, status, result);
  }
  if (observer_ != nullptr) observer_->OnStep(*result, elapsed);
  TrimWorkspace(workspace, kWorkspaceKeepBytes);
}

SamplerService::Answerer SamplerService::AnswererFor(const grpc::CallbackServerContext& context) const {
  if (NoComputeResponder::Wanted(context)) {
    if (no_compute_ == nullptr) return nullptr;
    spdlog::debug("{} asks for no compute", context.peer());
    const NoComputeResponder* responder = no_compute_.get();
    return [responder](const v1::SampleRequest& request, SeedTable*, v1::SampleResponse* response,
                       std::function<void(absl::Status)> done,
                       PendingBudget::Charge*) { responder->StartRequest(request, response, done); };
  }
  // The context outlives the call's requests: a call finishes only once none of its requests is running.
  return [this, session = ShmSession(context), context = &context](
             const v1::SampleRequest& request, SeedTable* seeds, v1::SampleResponse* response,
             std::function<void(absl::Status)> done, PendingBudget::Charge* keep_charge) {
    StartRequest(
        request, seeds, response, std::move(done), session, [context] { return context->IsCancelled(); }, keep_charge);
  };
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* SamplerService::Sample(
    grpc::CallbackServerContext* context) {
  Answerer answer = AnswererFor(*context);
  if (!answer) return new RejectedStream(NoComputeResponder::Refused());
  // The call log reports the refusal with its status, within the log budget a flood of refusals needs.
  if (absl::Status admitted = AdmitStream(); !admitted.ok()) return new RejectedStream(ToGrpcStatus(admitted));
  return new SampleReactor(this, context, std::move(answer));
}

grpc::ServerUnaryReactor* SamplerService::SampleOnce(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  auto* reactor = new AnswerHoldingReactor();
  if (absl::Status admitted = AdmitUnaryCall(context); !admitted.ok()) {
    reactor->FinishWith(ToGrpcStatus(admitted));
    return reactor;
  }
  const Answerer answer = AnswererFor(*context);
  if (!answer) {
    reactor->FinishWith(NoComputeResponder::Refused());
    return reactor;
  }
  // The call's messages, until it is answered. Seeds picked for seed-0 steps are remembered for this call only: a
  // sequence repeated within the request shares one (StartRequest is done with the table when it returns).
  struct Call {
    v1::SampleRequest request;
    v1::SampleResponse response;
    SeedTable seeds;
  };
  auto call = std::make_shared<Call>();
  grpc::ByteBuffer received = TakeRequest(request);
  if (absl::Status parsed = ParseRequest(&received, 1, config_.max_steps_per_request, &call->request); !parsed.ok()) {
    reactor->FinishWith(ToGrpcStatus(parsed));
    return reactor;
  }
  answer(
      call->request, &call->seeds, &call->response,
      [this, call, reactor, response](absl::Status status) {
        if (status.ok()) status = Serialize(call->response, config_.max_message_bytes, response);
        if (status.ok()) status = reactor->HoldAnswer(&pending_, response);
        reactor->FinishWith(ToGrpcStatus(status));
      },
      reactor->request_charge());
  return reactor;
}
grpc::ServerUnaryReactor* SamplerService::ListProfiles(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  auto* reactor = new AnswerHoldingReactor();
  if (absl::Status admitted = AdmitUnaryCall(context); !admitted.ok()) {
    reactor->FinishWith(ToGrpcStatus(admitted));
    return reactor;
  }
  grpc::ByteBuffer received = TakeRequest(request);
  v1::ListProfilesRequest parsed_request;
  if (absl::Status parsed = ParseRequest(&received, 1, config_.max_steps_per_request, &parsed_request); !parsed.ok()) {
    reactor->FinishWith(ToGrpcStatus(parsed));
    return reactor;
  }
  v1::ListProfilesResponse answer;
  const std::shared_ptr<const ProfileRegistry> registry = profiles();
  for (const Profile& profile : registry->profiles()) *answer.add_profiles() = profile.proto();
  answer.set_default_profile(registry->default_profile());
  absl::Status status = Serialize(answer, config_.max_message_bytes, response);
  if (status.ok()) status = reactor->HoldAnswer(&pending_, response);
  reactor->FinishWith(ToGrpcStatus(status));
  return reactor;
}

}  // namespace samplerd
