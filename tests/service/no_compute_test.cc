// NoComputeResponder (service/no_compute.h) alone, and through a Server in this process: a call carrying
// `samplerd-no-compute: 1` is echoed without core on both Sample RPCs under --allow_no_compute, refused with
// FAILED_PRECONDITION without it, and a call without the metadata is still computed.
#include "service/no_compute.h"

#include <memory>
#include <string>
#include <vector>

#include "core/profile.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "samplerd/v1/sampler.grpc.pb.h"
#include "service/server.h"
#include "service/server_config.h"

namespace samplerd {
namespace {

using ::testing::HasSubstr;

// Steps core would refuse (no logits): only a no-compute answer has no error.
v1::SampleRequest StepsWithoutLogits() {
  v1::SampleRequest request;
  for (int i = 0; i < 3; ++i) {
    v1::Step* step = request.add_steps();
    step->set_sequence_id("seq-" + std::to_string(i));
    step->set_step(10 + i);
  }
  return request;
}

void ExpectEchoed(const v1::SampleRequest& request, const v1::SampleResponse& response) {
  ASSERT_EQ(response.results_size(), request.steps_size());
  for (int i = 0; i < request.steps_size(); ++i) {
    const v1::StepResult& r = response.results(i);
    EXPECT_EQ(r.sequence_id(), request.steps(i).sequence_id()) << i;
    EXPECT_EQ(r.step(), request.steps(i).step()) << i;
    EXPECT_FALSE(r.has_error()) << i << ": " << r.error().message();
    EXPECT_EQ(r.seed(), 0u) << i << ": nothing is computed, no seed is picked";
  }
}

TEST(NoComputeResponder, EchoesEveryStepsIdAndIndexInOrderAndAnswersAtOnce) {
  const v1::SampleRequest request = StepsWithoutLogits();
  v1::SampleResponse response;
  response.add_results()->set_sequence_id("stale");
  std::vector<absl::Status> done;
  NoComputeResponder().StartRequest(request, &response, [&](absl::Status s) { done.push_back(s); });
  ASSERT_EQ(done.size(), 1u) << "done did not run exactly once before StartRequest returned";
  EXPECT_TRUE(done[0].ok()) << done[0];
  ExpectEchoed(request, response);
}

TEST(NoComputeResponder, RefusalIsFailedPreconditionNamingTheFlag) {
  const grpc::Status refused = NoComputeResponder::Refused();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(refused.error_message(), HasSubstr("--allow_no_compute"));
}

class NoComputeServer : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    ServerConfig config;
    config.listen = {"127.0.0.1:0"};
    config.metrics_listen = "";
    config.workers = 1;
    config.drain_seconds = 1;
    config.max_connection_age_grace_seconds = 1;
    config.allow_no_compute = GetParam();
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Create(config, ProfileRegistry::BuiltIn());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    stub_ =
        v1::Sampler::NewStub(grpc::CreateChannel(server_->bound_addresses()[0], grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }

  grpc::Status SampleOnce(bool no_compute, v1::SampleResponse* response) {
    grpc::ClientContext context;
    if (no_compute) context.AddMetadata(NoComputeResponder::kMetadata, "1");
    return stub_->SampleOnce(&context, StepsWithoutLogits(), response);
  }

  grpc::Status Sample(bool no_compute, std::vector<v1::SampleResponse>* responses) {
    grpc::ClientContext context;
    if (no_compute) context.AddMetadata(NoComputeResponder::kMetadata, "1");
    auto stream = stub_->Sample(&context);
    for (int i = 0; i < 2; ++i) stream->Write(StepsWithoutLogits());
    stream->WritesDone();
    v1::SampleResponse response;
    while (stream->Read(&response)) responses->push_back(response);
    return stream->Finish();
  }

  std::unique_ptr<Server> server_;
  std::unique_ptr<v1::Sampler::Stub> stub_;
};

TEST_P(NoComputeServer, NoComputeCallsAreEchoedUnderTheFlagAndRefusedWithoutIt) {
  const bool allowed = GetParam();
  v1::SampleResponse once;
  const grpc::Status once_status = SampleOnce(/*no_compute=*/true, &once);
  std::vector<v1::SampleResponse> streamed;
  const grpc::Status stream_status = Sample(/*no_compute=*/true, &streamed);
  if (allowed) {
    ASSERT_TRUE(once_status.ok()) << once_status.error_message();
    ExpectEchoed(StepsWithoutLogits(), once);
    ASSERT_TRUE(stream_status.ok()) << stream_status.error_message();
    ASSERT_EQ(streamed.size(), 2u);
    for (const v1::SampleResponse& r : streamed) ExpectEchoed(StepsWithoutLogits(), r);
  } else {
    EXPECT_EQ(once_status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(once_status.error_message(), HasSubstr("--allow_no_compute"));
    EXPECT_EQ(stream_status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(stream_status.error_message(), HasSubstr("--allow_no_compute"));
    EXPECT_TRUE(streamed.empty());
  }
}

TEST_P(NoComputeServer, CallsWithoutTheMetadataAreComputed) {
  v1::SampleResponse once;
  ASSERT_TRUE(SampleOnce(/*no_compute=*/false, &once).ok());
  ASSERT_EQ(once.results_size(), 3);
  for (const v1::StepResult& r : once.results()) EXPECT_TRUE(r.has_error()) << "a step without logits was answered";
  std::vector<v1::SampleResponse> streamed;
  ASSERT_TRUE(Sample(/*no_compute=*/false, &streamed).ok());
  ASSERT_EQ(streamed.size(), 2u);
  for (const v1::StepResult& r : streamed[1].results()) EXPECT_TRUE(r.has_error());
}

INSTANTIATE_TEST_SUITE_P(AllowNoCompute, NoComputeServer, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("Allowed") : std::string("NotAllowed");
                         });

}  // namespace
}  // namespace samplerd
