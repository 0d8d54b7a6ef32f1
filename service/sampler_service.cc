#include "service/sampler_service.h"

#include <chrono>
#include <deque>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/field_error.h"
#include "service/step_codec.h"
#include "spdlog/spdlog.h"

namespace samplerd {
namespace {

// Responses waiting to be written, the one in flight included, before a stream stops reading. A few keep the
// pipeline busy (the next request is decoded while the previous response is on the wire); more would only
// buffer for a client that does not read. gRPC's flow control then pushes back on the client's writes.
constexpr size_t kMaxQueuedResponses = 4;

// Ends a stream that was not admitted without touching its messages.
class RejectedStream final : public grpc::ServerBidiReactor<v1::SampleRequest, v1::SampleResponse> {
 public:
  explicit RejectedStream(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

// SampleReactor
//
// One per Sample stream. The read side (request_, seeds_, workspace_) is used only between a StartRead and its
// OnReadDone, and only one read is ever outstanding, so it needs no lock; everything shared between the read
// and write reactions (which gRPC may run concurrently) is under mu_.
class SamplerService::SampleReactor final
    : public grpc::ServerBidiReactor<v1::SampleRequest, v1::SampleResponse> {
 public:
  SampleReactor(SamplerService* service, std::string peer) : service_(service), peer_(std::move(peer)) {
    spdlog::debug("Sample stream opened by {}", peer_);
    std::lock_guard<std::mutex> lock(mu_);
    MaybeStartReadLocked();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed, or the call is gone
      std::lock_guard<std::mutex> lock(mu_);
      reading_ = false;
      input_done_ = true;
      MaybeFinishLocked();
      return;
    }
    // Core runs inline in the reaction for now; request_ is not reused until the next StartRead below.
    v1::SampleResponse response;
    const absl::Status status = service_->HandleRequest(request_, &seeds_, &workspace_, &response);

    std::lock_guard<std::mutex> lock(mu_);
    reading_ = false;
    if (finished_) return;  // the stream broke while this request was processed
    if (!status.ok()) {
      spdlog::warn("Sample stream from {} ended: {}", peer_, status.ToString());
      finish_status_ = ToGrpcStatus(status);
      MaybeFinishLocked();
      return;
    }
    queue_.push_back(std::move(response));
    if (!writing_) StartWriteLocked();
    MaybeStartReadLocked();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {  // the call was cancelled or the connection broke: nothing more can be delivered
      queue_.clear();
      if (!finished_) {
        finished_ = true;
        Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the response could not be written"));
      }
      return;
    }
    queue_.pop_front();
    if (!queue_.empty()) StartWriteLocked();
    MaybeStartReadLocked();
    MaybeFinishLocked();
  }

  void OnCancel() override { spdlog::debug("Sample stream from {} cancelled", peer_); }

  void OnDone() override {
    spdlog::debug("Sample stream from {} closed", peer_);
    service_->ReleaseStream();
    delete this;
  }

 private:
  void MaybeStartReadLocked() {
    if (reading_ || input_done_ || finish_status_.has_value() || finished_) return;
    if (queue_.size() >= kMaxQueuedResponses) return;  // resumed from OnWriteDone
    reading_ = true;
    StartRead(&request_);
  }

  void StartWriteLocked() {
    writing_ = true;
    // std::deque keeps references to its elements valid across push_back, so front() stays put while written.
    StartWrite(&queue_.front());
  }

  // Finishes once every answer is written and either the client is done or an error ended the stream.
  void MaybeFinishLocked() {
    if (finished_ || writing_ || !queue_.empty()) return;
    if (!input_done_ && !finish_status_.has_value()) return;
    finished_ = true;
    Finish(finish_status_.value_or(grpc::Status::OK));
  }

  SamplerService* const service_;
  const std::string peer_;

  v1::SampleRequest request_;
  SeedTable seeds_;
  Workspace workspace_;

  std::mutex mu_;
  std::deque<v1::SampleResponse> queue_;       // guarded by mu_; front() is in flight when writing_
  bool reading_ = false;                       // guarded by mu_; a read is outstanding or being processed
  bool writing_ = false;                       // guarded by mu_
  bool input_done_ = false;                    // guarded by mu_; no more requests will arrive
  std::optional<grpc::Status> finish_status_;  // guarded by mu_; sent once queue_ drains
  bool finished_ = false;                      // guarded by mu_; Finish was called
};

absl::StatusOr<std::unique_ptr<SamplerService>> SamplerService::Create(Options options) {
  if (absl::Status s = ValidateServerConfig(options.config); !s.ok()) return s;
  if (options.profiles == nullptr) return absl::InvalidArgumentError("SamplerService needs a ProfileRegistry");
  return std::unique_ptr<SamplerService>(new SamplerService(std::move(options)));
}

SamplerService::SamplerService(Options options)
    : config_(std::move(options.config)),
      limits_(config_.tensor_limits()),
      profiles_(std::move(options.profiles)),
      observer_(std::move(options.observer)) {}

std::shared_ptr<const ProfileRegistry> SamplerService::profiles() const {
  std::lock_guard<std::mutex> lock(profiles_mu_);
  return profiles_;
}

void SamplerService::SetProfiles(std::shared_ptr<const ProfileRegistry> profiles) {
  std::lock_guard<std::mutex> lock(profiles_mu_);
  profiles_ = std::move(profiles);
}

bool SamplerService::TryAdmitStream() {
  if (active_streams_.fetch_add(1, std::memory_order_relaxed) >= config_.max_streams) {
    active_streams_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void SamplerService::ReleaseStream() { active_streams_.fetch_sub(1, std::memory_order_relaxed); }

absl::Status SamplerService::HandleRequest(const v1::SampleRequest& request, SeedTable* seeds,
                                           Workspace* workspace, v1::SampleResponse* response) const {
  response->Clear();
  if (observer_ != nullptr) observer_->OnRequest(request.ByteSizeLong());
  if (request.steps_size() > config_.max_steps_per_request) {
    return LimitFieldError("steps", absl::StrCat("a request may carry at most ", config_.max_steps_per_request,
                                                 " steps (--max_steps_per_request), got ", request.steps_size()));
  }
  const std::shared_ptr<const ProfileRegistry> registry = profiles();
  response->mutable_results()->Reserve(request.steps_size());
  StepOutput out;
  for (const v1::Step& step : request.steps()) {
    const uint64_t seed = seeds->Resolve(step.sequence_id(), step.seed());
    const StepInput in = DecodeStep(step, seed);
    const auto start = std::chrono::steady_clock::now();
    const absl::Status status = RunStep(*registry, limits_, in, workspace, &out);
    const auto elapsed = std::chrono::steady_clock::now() - start;
    v1::StepResult* result = response->add_results();
    if (status.ok()) {
      EncodeStepResult(step, out, seed, elapsed, result);
    } else {
      EncodeStepError(step, status, result);
    }
    if (observer_ != nullptr) observer_->OnStep(*result, elapsed);
  }
  return absl::OkStatus();
}

grpc::ServerBidiReactor<v1::SampleRequest, v1::SampleResponse>* SamplerService::Sample(
    grpc::CallbackServerContext* context) {
  if (!TryAdmitStream()) {
    spdlog::warn("Sample stream from {} refused: {} streams open (--max_streams)", context->peer(),
                 config_.max_streams);
    return new RejectedStream(ToGrpcStatus(absl::ResourceExhaustedError(absl::StrCat(
        "the server already serves ", config_.max_streams, " Sample streams (--max_streams); retry later"))));
  }
  return new SampleReactor(this, context->peer());
}

grpc::ServerUnaryReactor* SamplerService::SampleOnce(grpc::CallbackServerContext* context,
                                                     const v1::SampleRequest* request,
                                                     v1::SampleResponse* response) {
  // Seeds picked for seed-0 steps are remembered for this call only: a sequence repeated within the request
  // shares one.
  SeedTable seeds;
  Workspace workspace;
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(HandleRequest(*request, &seeds, &workspace, response)));
  return reactor;
}

grpc::ServerUnaryReactor* SamplerService::ListProfiles(grpc::CallbackServerContext* context,
                                                       const v1::ListProfilesRequest* request,
                                                       v1::ListProfilesResponse* response) {
  const std::shared_ptr<const ProfileRegistry> registry = profiles();
  for (const Profile& profile : registry->profiles()) *response->add_profiles() = profile.proto();
  response->set_default_profile(registry->default_profile());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace samplerd
