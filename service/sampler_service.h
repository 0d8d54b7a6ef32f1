// The samplerd.v1.Sampler service on gRPC's callback API: the RPC edge between the wire and core.
//
// Each `Sample` stream gets a reactor (no thread per stream) that owns the stream's session: a core Workspace
// reused step after step and the seeds the server picked for its sequences. Requests are answered in order,
// one response per request; the reactor keeps one write in flight and stops reading while a few responses wait,
// so a client that does not read cannot make the server buffer without bound. `SampleOnce` and `ListProfiles`
// are unary reactors.
//
// The service does no math: per step it decodes (step_codec.h), calls core's RunStep, and encodes. A rejected
// step gets its own StepResult.error and the other steps of the request are still answered; only stream-level
// problems (a request over max_steps_per_request, too many streams) end the call.
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
#include <memory>
#include <mutex>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/profile.h"
#include "core/step_engine.h"
#include "grpcpp/grpcpp.h"
#include "samplerd/v1/sampler.grpc.pb.h"
#include "service/request_observer.h"
#include "service/seed_table.h"
#include "service/server_config.h"

namespace samplerd {

// SamplerService
//
// Must outlive the grpc::Server it is registered with (the server's Shutdown waits for every reactor).
class SamplerService final : public v1::Sampler::CallbackService {
 public:
  struct Options {
    // Validated limits (ValidateServerConfig); only the limits are read here.
    ServerConfig config;
    // The profiles to decide with; required.
    std::shared_ptr<const ProfileRegistry> profiles;
    // Told about every request and every answered step (metrics); optional.
    std::shared_ptr<RequestObserver> observer;
  };

  // INVALID_ARGUMENT when `options.config` does not validate or `options.profiles` is null.
  static absl::StatusOr<std::unique_ptr<SamplerService>> Create(Options options);

  grpc::ServerBidiReactor<v1::SampleRequest, v1::SampleResponse>* Sample(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* SampleOnce(grpc::CallbackServerContext* context, const v1::SampleRequest* request,
                                       v1::SampleResponse* response) override;
  grpc::ServerUnaryReactor* ListProfiles(grpc::CallbackServerContext* context,
                                         const v1::ListProfilesRequest* request,
                                         v1::ListProfilesResponse* response) override;

  // HandleRequest()
  //
  // The transport-free data path of one request: the request-size limit, seed resolution (through `seeds`),
  // then per step decode → core (timed) → encode into `response` (cleared first). Step problems become that
  // step's StepResult.error; the returned status is non-OK only for a problem that ends the call
  // (RESOURCE_EXHAUSTED for more than max_steps_per_request steps). The request is processed on the calling
  // thread; a worker pool can call this unchanged with a per-worker Workspace.
  absl::Status HandleRequest(const v1::SampleRequest& request, SeedTable* seeds, Workspace* workspace,
                             v1::SampleResponse* response) const;

  // The profiles in force. A reload swaps them with SetProfiles; a request in flight keeps the set it started
  // with.
  std::shared_ptr<const ProfileRegistry> profiles() const;
  void SetProfiles(std::shared_ptr<const ProfileRegistry> profiles);

  // Sample streams currently open (admitted ones only).
  int active_streams() const { return active_streams_.load(std::memory_order_relaxed); }

 private:
  class SampleReactor;

  explicit SamplerService(Options options);

  // Admits a stream unless max_streams are open; every successful call is paired with ReleaseStream.
  bool TryAdmitStream();
  void ReleaseStream();

  const ServerConfig config_;
  const TensorLimits limits_;
  mutable std::mutex profiles_mu_;
  std::shared_ptr<const ProfileRegistry> profiles_;  // guarded by profiles_mu_
  std::atomic<int> active_streams_{0};
  const std::shared_ptr<RequestObserver> observer_;  // may be null
};

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_SAMPLER_SERVICE_H_
