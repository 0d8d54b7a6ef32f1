#include "service/no_compute.h"

#include "absl/strings/str_cat.h"

namespace samplerd {

bool NoComputeResponder::Wanted(const grpc::CallbackServerContext& context) {
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find(kMetadata);
  return it != metadata.end() && it->second == "1";
}

grpc::Status NoComputeResponder::Refused() {
  return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                      absl::StrCat(kMetadata, ": 1 needs a server started with --allow_no_compute"));
}

void NoComputeResponder::StartRequest(const v1::SampleRequest& request, v1::SampleResponse* response,
                                      const std::function<void(absl::Status)>& done) const {
  response->Clear();
  response->mutable_results()->Reserve(request.steps_size());
  for (const v1::Step& step : request.steps()) {
    v1::StepResult* result = response->add_results();
    result->set_sequence_id(step.sequence_id());
    result->set_step(step.step());
  }
  done(absl::OkStatus());
}

}  // namespace samplerd
