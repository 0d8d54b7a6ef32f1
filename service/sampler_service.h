// The samplerd.v1.Sampler service on gRPC's callback API: the RPC edge between the wire and core.
//
// Each `Sample` stream gets a reactor (no thread per stream) that owns the stream's session: the seeds the server
// picked for its sequences. Core runs on a WorkerPool (service/worker_pool.h), never on gRPC's threads: the
// reactor hands each request to the pool from OnReadDone, and the pool's completion starts the write, so a
// request's steps run on every core while the reactions stay non-blocking. Requests are answered in order, one
// response per request; a stream holds at most two requests (one being received while the previous one runs)
// and a few answers, keeps one write in flight and stops reading beyond that, so a client that does not read
// cannot make the server buffer without bound. The core scratch (Workspace) belongs to the workers, so an idle
// stream holds none. `SampleOnce` runs on the pool the same way; `ListProfiles` is answered inline.
//
// The service does no math: per step it decodes (step_codec.h), calls core's RunStep, and encodes. A rejected
// step gets its own StepResult.error and the other steps of the request are still answered; only stream-level
// problems (a request over max_steps_per_request, too many streams) end the call.
//
// All three methods are registered raw (ByteBuffer in and out) and parse their requests here: gRPC's typed
// callback API reports a message that fails to parse to a bidi reactor exactly as a half-close (OnReadDone(false)),
// and to a unary one as UNIMPLEMENTED, where docs/contract.md section 6 wants the stream ended with an error. So a
// message that is not a SampleRequest ends the call with INVALID_ARGUMENT naming its index in the stream, after
// the answers to the requests before it. The parse and the response's serialization are the ones gRPC would run.
//
// With --allow_no_compute, a call carrying the metadata `samplerd-no-compute: 1` is answered without core by a
// NoComputeResponder (service/no_compute.h), chosen once per call in place of StartRequest; without the flag
// such a call ends with FAILED_PRECONDITION.
//
//   SamplerService::Options options;
//   options.config = config;
//   options.profiles = ProfileRegistry::BuiltIn();
//   absl::StatusOr<std::unique_ptr<SamplerService>> service = SamplerService::Create(std::move(options));
//   grpc::ServerBuilder builder;
//   builder.RegisterService(service->get());
#ifndef SAMPLERD_SERVICE_SAMPLER_SERVICE_H_
#define SAMPLERD_SERVICE_SAMPLER_SERVICE_H_

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/profile.h"
#include "core/step_engine.h"
#include "grpcpp/grpcpp.h"
#include "samplerd/v1/sampler.grpc.pb.h"
#include "service/no_compute.h"
#include "service/pending_budget.h"
#include "service/request_observer.h"
#include "service/seed_table.h"
#include "service/server_config.h"
#include "service/shm_registry.h"
#include "service/worker_pool.h"

namespace samplerd {

// SamplerService
//
// Must outlive the grpc::Server it is registered with (the server's Shutdown waits for every reactor).
class SamplerService final
    : public v1::Sampler::WithRawCallbackMethod_Sample<v1::Sampler::WithRawCallbackMethod_SampleOnce<
          v1::Sampler::WithRawCallbackMethod_ListProfiles<v1::Sampler::Service>>> {
 public:
  struct Options {
    // Validated limits (ValidateServerConfig); only the limits are read here.
    ServerConfig config;
    // The profiles to decide with; required.
    std::shared_ptr<const ProfileRegistry> profiles;
    // Told about every request and every answered step (metrics); optional.
    std::shared_ptr<RequestObserver> observer;
    // The threads that run core; null = a new pool of `config.workers` threads. It must outlive the service.
    std::shared_ptr<WorkerPool> workers;
    // The shared-memory regions steps may reference (--shm_socket); null = no shared-memory plane.
    std::shared_ptr<const ShmRegistry> shm;
  };

  // The request metadata key whose value is the shared-memory session token (docs/shm.md): a call's steps may
  // reference only the regions registered by the control connection of that session.
  static constexpr char kShmSessionMetadata[] = "samplerd-shm-session";

  // INVALID_ARGUMENT when `options.config` does not validate or `options.profiles` is null.
  static absl::StatusOr<std::unique_ptr<SamplerService>> Create(Options options);

  // Raw: a serialized SampleRequest in, a serialized SampleResponse out (see above).
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Sample(grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* SampleOnce(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  // Raw: a serialized ListProfilesRequest in, a serialized ListProfilesResponse out (see above).
  grpc::ServerUnaryReactor* ListProfiles(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;

  // StartRequest()
  //
  // The data path of one request: the request-size limit and seed resolution (through `seeds`) on the calling
  // thread (so `seeds` is free again when this returns), then per step decode → core (timed) → encode, the steps
  // spread over the worker pool, each result written into its own slot of `response` (cleared first), so the
  // order is the request's whatever finishes first. Step problems become that step's StepResult.error. `done`
  // runs exactly once: with a non-OK status only for a problem that ends the call (RESOURCE_EXHAUSTED for more
  // than max_steps_per_request steps), at once on the calling thread when the request is refused or has no
  // steps, otherwise on the worker that answered the last step. `request` and `response` must stay untouched
  // until then. The request counts, parsed, against --max_pending_request_bytes until `done`; past it (with the
  // answers not yet written, which the callers count) every step is answered RESOURCE_EXHAUSTED at once, so no
  // number of callers makes the server hold more requests than that. `shm_session` is
  // the call's samplerd-shm-session metadata (empty when absent). `cancelled`, when set, is asked before each step:
  // once it says the call is gone (cancelled, past its deadline, disconnected), the steps not yet started are answered
  // CANCELLED without running, so a dead call does not hold the workers.
  // With `keep_charge`, the request's charge is moved there before `done` instead of given back: a caller that
  // holds the answer until it is written (SampleOnce) keeps the budget its request had.
  void StartRequest(const v1::SampleRequest& request, SeedTable* seeds, v1::SampleResponse* response,
                    std::function<void(absl::Status)> done, absl::string_view shm_session = {},
                    std::function<bool()> cancelled = nullptr, PendingBudget::Charge* keep_charge = nullptr) const;

  // Threads in the worker pool.
  int workers() const { return workers_->size(); }

  // The profiles in force. A reload swaps them with SetProfiles; a request in flight keeps the set it started
  // with.
  std::shared_ptr<const ProfileRegistry> profiles() const;
  void SetProfiles(std::shared_ptr<const ProfileRegistry> profiles);

  // Sample streams currently open (admitted ones only), the control socket's step connections included.
  int active_streams() const { return active_streams_.load(std::memory_order_relaxed); }
  // Bytes held for calls not finished with (--max_pending_request_bytes bounds them): the requests taken on and not
  // answered yet, parsed, and the answers not yet written to their callers.
  int64_t pending_request_bytes() const { return pending_.held(); }

  // Admits a stream unless the service is draining (UNAVAILABLE) or --max_streams are open (RESOURCE_EXHAUSTED),
  // the status a refused Sample call gets; every OK is paired with ReleaseStream. For a stream that is not a gRPC call:
  // the shared-memory control socket's step path (shm_control_server.h), which then answers through StartRequest like a
  // Sample stream.
  absl::Status AdmitStream();
  void ReleaseStream();

  // Refuses every call that starts from now on with UNAVAILABLE; the calls and streams already admitted are
  // served to their end. The drain calls it before health turns NOT_SERVING, so a client that has seen
  // NOT_SERVING never gets a new call admitted (gRPC's own refusal starts only later, in Server::Shutdown).
  void StopAdmitting() { draining_.store(true, std::memory_order_release); }

  // UNAVAILABLE once StopAdmitting ran: a new call of any method is refused. The control socket asks it before
  // each request it would start, as its connections are streams that outlive the drain's start.
  absl::Status AdmitCall() const;

 private:
  class SampleReactor;

  // How a call's requests are answered: StartRequest's shape, the call's shm session bound.
  using Answerer = std::function<void(const v1::SampleRequest& request, SeedTable* seeds, v1::SampleResponse* response,
                                      std::function<void(absl::Status)> done, PendingBudget::Charge* keep_charge)>;

  // StartRequest, or the no-compute responder when the call asks for it; empty when it asks for no compute and
  // the server does not allow it.
  Answerer AnswererFor(const grpc::CallbackServerContext& context) const;

  explicit SamplerService(Options options);

  // What a unary call passes before it runs: AdmitCall, then its message framing (CheckMessageFraming).
  absl::Status AdmitUnaryCall(grpc::CallbackServerContext* context) const;

  // decode → core (timed) → encode of one step into `result`, and the observer's OnStep. `fork_join` (may be
  // null) lets core share the step with an idle worker.
  // `shm_session` resolves the step's tensor references (ResolveTensorRefs). A `cancelled` call's step is answered
  // CANCELLED without running.
  void AnswerStep(const ProfileRegistry& registry, const v1::Step& step, uint64_t seed, absl::string_view shm_session,
                  bool cancelled, Workspace* workspace, StepOutput* out, v1::StepResult* result,
                  ForkJoin* fork_join = nullptr) const;

  const ServerConfig config_;
  const TensorLimits limits_;
  mutable std::mutex profiles_mu_;
  std::shared_ptr<const ProfileRegistry> profiles_;  // guarded by profiles_mu_
  std::atomic<int> active_streams_{0};
  // What the calls hold until they are finished with (pending_request_bytes()).
  mutable PendingBudget pending_;
  // What the Sample streams keep of their parsed requests, for the next to parse into (sampler_service.cc).
  PendingBudget kept_requests_;
  std::atomic<bool> draining_{false};
  const std::shared_ptr<RequestObserver> observer_;  // may be null
  const std::shared_ptr<WorkerPool> workers_;
  const std::shared_ptr<const ShmRegistry> shm_;                // may be null
  const std::unique_ptr<const NoComputeResponder> no_compute_;  // only under --allow_no_compute
};

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_SAMPLER_SERVICE_H_
