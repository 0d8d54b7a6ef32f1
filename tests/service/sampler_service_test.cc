// SamplerService::StartRequest, the worker-pool path of a request, without a network: answers in request order,
// every step answered (also under many concurrent requests), each bad step with its own error, and the same
// answers on many workers as on one; and, registered in a gRPC server, the drain's StopAdmitting refusing new
// calls while an open stream is served to its end.
#include "service/sampler_service.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <future>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace samplerd {
namespace {

using ::testing::HasSubstr;

constexpr auto kPatience = std::chrono::seconds(60);

std::string F32Bytes(const std::vector<float>& values) {
  std::string bytes(values.size() * sizeof(float), '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

// A valid step whose tensors depend on (sequence_id, step); sizes vary so steps finish out of order.
v1::Step MakeStep(const std::string& sequence_id, uint64_t step) {
  std::mt19937 rng(static_cast<uint32_t>(std::hash<std::string>()(sequence_id) ^ (step * 2654435761u)));
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const int vocab = 500 + static_cast<int>(rng() % 20000);
  std::vector<float> logits(static_cast<size_t>(vocab));
  for (float& z : logits) z = normal(rng);
  std::vector<float> attention(4 * 64);
  for (float& a : attention) a = normal(rng);
  v1::Step s;
  s.set_sequence_id(sequence_id);
  s.set_step(step);
  s.set_seed(1234 + step);
  s.mutable_logits()->set_dtype(v1::DTYPE_F32);
  s.mutable_logits()->add_shape(vocab);
  s.mutable_logits()->set_data(F32Bytes(logits));
  s.mutable_attention()->set_dtype(v1::DTYPE_F32);
  s.mutable_attention()->add_shape(4);
  s.mutable_attention()->add_shape(64);
  s.mutable_attention()->set_data(F32Bytes(attention));
  s.add_recent_tokens(3);
  s.set_top_logprobs(2);
  return s;
}

v1::SampleRequest MakeRequest(const std::string& prefix, int steps) {
  v1::SampleRequest request;
  for (int i = 0; i < steps; ++i) *request.add_steps() = MakeStep(prefix + std::to_string(i % 5), i);
  return request;
}

std::unique_ptr<SamplerService> MakeService(int workers, int max_steps_per_request = 4096,
                                            int64_t max_pending_request_bytes = int64_t{512} << 20) {
  SamplerService::Options options;
  options.config.workers = workers;
  options.config.max_steps_per_request = max_steps_per_request;
  options.config.max_pending_request_bytes = max_pending_request_bytes;
  options.profiles = ProfileRegistry::BuiltIn();
  absl::StatusOr<std::unique_ptr<SamplerService>> service = SamplerService::Create(std::move(options));
  EXPECT_TRUE(service.ok()) << service.status();
  return service.ok() ? *std::move(service) : nullptr;
}

// Waits for StartRequest's `done`.
class Completion {
 public:
  std::function<void(absl::Status)> Callback() {
    return [this](absl::Status status) {
      std::lock_guard<std::mutex> lock(mu_);
      statuses_.push_back(std::move(status));
      cv_.notify_all();
    };
  }
  bool WaitFor(size_t count) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, kPatience, [&] { return statuses_.size() >= count; });
  }
  std::vector<absl::Status> statuses() {
    std::lock_guard<std::mutex> lock(mu_);
    return statuses_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<absl::Status> statuses_;
};

// Runs `request` to its end: every step gets a token.
void ExpectAnsweredWithTokens(const SamplerService& service, const v1::SampleRequest& request) {
  v1::SampleResponse response;
  SeedTable seeds;
  Completion completion;
  service.StartRequest(request, &seeds, &response, completion.Callback());
  ASSERT_TRUE(completion.WaitFor(1));
  ASSERT_EQ(response.results_size(), request.steps_size());
  for (const v1::StepResult& r : response.results()) EXPECT_FALSE(r.has_error()) << r.error().message();
}

// The result without its timing, for comparing answers.
std::string Comparable(v1::StepResult r) {
  r.clear_server_micros();
  return r.SerializeAsString();
}

TEST(StartRequest, AnswersInRequestOrderWithOneWorkersResults) {
  std::unique_ptr<SamplerService> service = MakeService(4);
  ASSERT_NE(service, nullptr);
  const v1::SampleRequest request = MakeRequest("seq-", 64);

  v1::SampleResponse pooled;
  SeedTable seeds;
  Completion completion;
  service->StartRequest(request, &seeds, &pooled, completion.Callback());
  ASSERT_TRUE(completion.WaitFor(1));
  ASSERT_TRUE(completion.statuses()[0].ok()) << completion.statuses()[0];

  // One worker answers the steps one after another, in request order.
  std::unique_ptr<SamplerService> one_worker = MakeService(1);
  ASSERT_NE(one_worker, nullptr);
  v1::SampleResponse serial;
  SeedTable serial_seeds;
  Completion serial_completion;
  one_worker->StartRequest(request, &serial_seeds, &serial, serial_completion.Callback());
  ASSERT_TRUE(serial_completion.WaitFor(1));
  ASSERT_TRUE(serial_completion.statuses()[0].ok()) << serial_completion.statuses()[0];

  ASSERT_EQ(pooled.results_size(), request.steps_size());
  ASSERT_EQ(serial.results_size(), request.steps_size());
  for (int i = 0; i < request.steps_size(); ++i) {
    const v1::StepResult& r = pooled.results(i);
    EXPECT_FALSE(r.has_error()) << i << ": " << r.error().message();
    EXPECT_EQ(r.sequence_id(), request.steps(i).sequence_id()) << i;
    EXPECT_EQ(r.step(), request.steps(i).step()) << i;
    EXPECT_EQ(r.seed(), request.steps(i).seed()) << i;
    EXPECT_EQ(Comparable(r), Comparable(serial.results(i))) << "step " << i << " differs from one worker's";
  }
}

TEST(StartRequest, AnswersEveryStepOfManyConcurrentRequests) {
  std::unique_ptr<SamplerService> service = MakeService(2);
  ASSERT_NE(service, nullptr);
  constexpr int kStreams = 6;
  constexpr int kRequestsPerStream = 8;
  std::vector<v1::SampleRequest> requests;
  for (int s = 0; s < kStreams; ++s) requests.push_back(MakeRequest("s" + std::to_string(s) + "-", 1 + s * 3));
  std::vector<std::vector<v1::SampleResponse>> responses(kStreams, std::vector<v1::SampleResponse>(kRequestsPerStream));
  Completion completion;
  std::vector<std::thread> streams;
  for (int s = 0; s < kStreams; ++s) {
    streams.emplace_back([&, s] {
      SeedTable seeds;  // one per stream, used only on its thread
      for (int r = 0; r < kRequestsPerStream; ++r) {
        service->StartRequest(requests[static_cast<size_t>(s)], &seeds,
                              &responses[static_cast<size_t>(s)][static_cast<size_t>(r)], completion.Callback());
      }
    });
  }
  for (std::thread& t : streams) t.join();
  ASSERT_TRUE(completion.WaitFor(kStreams * kRequestsPerStream));
  for (const absl::Status& s : completion.statuses()) EXPECT_TRUE(s.ok()) << s;
  for (int s = 0; s < kStreams; ++s) {
    const v1::SampleRequest& request = requests[static_cast<size_t>(s)];
    for (const v1::SampleResponse& response : responses[static_cast<size_t>(s)]) {
      ASSERT_EQ(response.results_size(), request.steps_size());
      for (int i = 0; i < request.steps_size(); ++i) {
        EXPECT_FALSE(response.results(i).has_error()) << response.results(i).error().message();
        EXPECT_EQ(response.results(i).sequence_id(), request.steps(i).sequence_id());
        EXPECT_EQ(response.results(i).step(), request.steps(i).step());
        // Same request, same seeds: every repetition draws the same token.
        EXPECT_EQ(response.results(i).token(), responses[static_cast<size_t>(s)][0].results(i).token());
      }
    }
  }
}

TEST(StartRequest, GivesEachBadStepItsOwnErrorAndAnswersTheOthers) {
  std::unique_ptr<SamplerService> service = MakeService(2);
  ASSERT_NE(service, nullptr);
  v1::SampleRequest request = MakeRequest("mixed-", 12);
  request.mutable_steps(3)->mutable_logits()->set_dtype(static_cast<v1::DType>(42));
  request.mutable_steps(7)->mutable_logits()->mutable_data()->resize(6);
  request.mutable_steps(9)->set_profile("no-such-profile");
  request.mutable_steps(11)->mutable_params()->set_temperature(-1.0f);

  v1::SampleResponse response;
  SeedTable seeds;
  Completion completion;
  service->StartRequest(request, &seeds, &response, completion.Callback());
  ASSERT_TRUE(completion.WaitFor(1));
  ASSERT_TRUE(completion.statuses()[0].ok());
  ASSERT_EQ(response.results_size(), 12);
  for (int i = 0; i < 12; ++i) {
    const v1::StepResult& r = response.results(i);
    EXPECT_EQ(r.sequence_id(), request.steps(i).sequence_id());
    EXPECT_EQ(r.step(), request.steps(i).step());
    const bool bad = i == 3 || i == 7 || i == 9 || i == 11;
    EXPECT_EQ(r.has_error(), bad) << "step " << i << ": " << r.error().message();
  }
  EXPECT_EQ(response.results(3).error().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(response.results(3).error().message(), HasSubstr("42"));
  EXPECT_EQ(response.results(7).error().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(response.results(7).error().field(), HasSubstr("logits"));
  EXPECT_EQ(response.results(9).error().code(), static_cast<int>(absl::StatusCode::kNotFound));
  EXPECT_THAT(response.results(9).error().message(), HasSubstr("no-such-profile"));
  EXPECT_EQ(response.results(11).error().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(response.results(11).error().field(), HasSubstr("temperature"));
}

// A call that is gone (cancelled, past its deadline) must not hold the workers for the rest of its steps.
TEST(StartRequest, StepsOfACancelledCallAreAnsweredCancelledWithoutRunning) {
  std::unique_ptr<SamplerService> service = MakeService(1);
  ASSERT_NE(service, nullptr);
  const v1::SampleRequest request = MakeRequest("cancel-", 12);
  std::atomic<int> asked{0};
  // The call "ends" while its fourth step is being asked about: steps 0-2 run, the rest do not.
  const auto cancelled = [&] { return asked.fetch_add(1) >= 3; };
  v1::SampleResponse response;
  SeedTable seeds;
  Completion completion;
  service->StartRequest(request, &seeds, &response, completion.Callback(), {}, cancelled);
  ASSERT_TRUE(completion.WaitFor(1));
  ASSERT_TRUE(completion.statuses()[0].ok());
  ASSERT_EQ(response.results_size(), 12);
  int ran = 0, skipped = 0;
  for (const v1::StepResult& r : response.results()) {
    if (r.has_error()) {
      EXPECT_EQ(r.error().code(), static_cast<int>(absl::StatusCode::kCancelled)) << r.error().message();
      EXPECT_EQ(r.server_micros(), 0) << "a cancelled step does not run";
      ++skipped;
    } else {
      ++ran;
    }
  }
  EXPECT_EQ(ran, 3);
  EXPECT_EQ(skipped, 9);
  // A lone step of a call already gone is not run either.
  v1::SampleRequest lone = MakeRequest("cancel-lone-", 1);
  v1::SampleResponse lone_response;
  Completion lone_completion;
  service->StartRequest(lone, &seeds, &lone_response, lone_completion.Callback(), {}, [] { return true; });
  ASSERT_TRUE(lone_completion.WaitFor(1));
  ASSERT_EQ(lone_response.results_size(), 1);
  EXPECT_EQ(lone_response.results(0).error().code(), static_cast<int>(absl::StatusCode::kCancelled));
}

TEST(StartRequest, RefusesTooManyStepsAtOnceOnTheCaller) {
  std::unique_ptr<SamplerService> service = MakeService(2, /*max_steps_per_request=*/4);
  ASSERT_NE(service, nullptr);
  const v1::SampleRequest request = MakeRequest("big-", 5);
  v1::SampleResponse response;
  SeedTable seeds;
  bool called = false;
  absl::Status status;
  service->StartRequest(request, &seeds, &response, [&](absl::Status s) {
    called = true;
    status = std::move(s);
  });
  ASSERT_TRUE(called) << "a refused request is answered before StartRequest returns";
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(status.message()), HasSubstr("--max_steps_per_request"));
  EXPECT_EQ(response.results_size(), 0);
  EXPECT_EQ(seeds.size(), 0u);
}

// A request that waits for the workers holds its bytes: past --max_pending_request_bytes over all calls, the next
// request is answered at once, every step RESOURCE_EXHAUSTED, and once the first is answered its bytes are free.
TEST(StartRequest, PastThePendingBytesBudgetEachStepIsRefusedAtOnceUntilTheBudgetFrees) {
  const v1::SampleRequest held = MakeRequest("held-", 2);
  const v1::SampleRequest next = MakeRequest("next-", 3);
  const int64_t budget = static_cast<int64_t>(held.SpaceUsedLong() + next.SpaceUsedLong()) - 1;
  std::unique_ptr<SamplerService> service = MakeService(1, 4096, budget);
  ASSERT_NE(service, nullptr);

  // The held request's first step waits on the worker until the gate opens.
  std::promise<void> gate;
  std::shared_future<void> open = gate.get_future().share();
  v1::SampleResponse held_response;
  SeedTable seeds;
  Completion held_completion;
  service->StartRequest(held, &seeds, &held_response, held_completion.Callback(), {}, [open] {
    open.wait_for(kPatience);
    return false;
  });

  v1::SampleResponse refused;
  bool called = false;
  service->StartRequest(next, &seeds, &refused, [&](absl::Status s) {
    called = true;
    EXPECT_TRUE(s.ok()) << "the call goes on; its steps carry the refusal";
  });
  ASSERT_TRUE(called) << "a request past the budget is answered before StartRequest returns";
  ASSERT_EQ(refused.results_size(), 3);
  for (int i = 0; i < 3; ++i) {
    const v1::StepResult& r = refused.results(i);
    EXPECT_EQ(r.sequence_id(), next.steps(i).sequence_id());
    EXPECT_EQ(r.step(), next.steps(i).step());
    EXPECT_EQ(r.error().code(), static_cast<int>(absl::StatusCode::kResourceExhausted));
    EXPECT_THAT(r.error().message(), HasSubstr("--max_pending_request_bytes"));
  }

  gate.set_value();
  ASSERT_TRUE(held_completion.WaitFor(1));
  ASSERT_EQ(held_response.results_size(), 2);
  for (const v1::StepResult& r : held_response.results()) EXPECT_FALSE(r.has_error()) << r.error().message();

  ExpectAnsweredWithTokens(*service, next);
}

TEST(StartRequest, AnyOneRequestIsTakenOnWhenNoneIsPending) {
  std::unique_ptr<SamplerService> service = MakeService(1, 4096, /*max_pending_request_bytes=*/1);
  ASSERT_NE(service, nullptr);
  for (int round = 0; round < 2; ++round) ExpectAnsweredWithTokens(*service, MakeRequest("alone-", 3));
}

TEST(StartRequest, EmptyRequestIsAnsweredAtOnce) {
  std::unique_ptr<SamplerService> service = MakeService(1);
  ASSERT_NE(service, nullptr);
  v1::SampleResponse response;
  SeedTable seeds;
  bool called = false;
  service->StartRequest(v1::SampleRequest(), &seeds, &response, [&](absl::Status s) {
    called = true;
    EXPECT_TRUE(s.ok());
  });
  EXPECT_TRUE(called);
  EXPECT_EQ(response.results_size(), 0);
}

TEST(StartRequest, ResolvesSeedZeroOncePerSequenceOnTheCaller) {
  std::unique_ptr<SamplerService> service = MakeService(2);
  ASSERT_NE(service, nullptr);
  v1::SampleRequest request = MakeRequest("zero-", 10);
  for (v1::Step& step : *request.mutable_steps()) step.set_seed(0);
  v1::SampleResponse response;
  SeedTable seeds;
  Completion completion;
  service->StartRequest(request, &seeds, &response, completion.Callback());
  EXPECT_EQ(seeds.size(), 5u) << "seeds are resolved before StartRequest returns";
  ASSERT_TRUE(completion.WaitFor(1));
  ASSERT_EQ(response.results_size(), 10);
  for (int i = 0; i < 10; ++i) {
    EXPECT_NE(response.results(i).seed(), 0u);
    EXPECT_EQ(response.results(i).seed(), response.results(i % 5).seed()) << "same sequence, same seed";
  }
}

TEST(StopAdmitting, RefusesEveryNewCallWithUnavailableAndServesTheOpenStreamToItsEnd) {
  std::unique_ptr<SamplerService> service = MakeService(1);
  ASSERT_NE(service, nullptr);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(service.get());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto stub = v1::Sampler::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));

  grpc::ClientContext open_context;
  auto open = stub->Sample(&open_context);
  v1::SampleResponse response;
  ASSERT_TRUE(open->Write(MakeRequest("open-", 2)));
  ASSERT_TRUE(open->Read(&response));
  EXPECT_EQ(response.results_size(), 2);

  service->StopAdmitting();
  const auto expect_refused = [](const grpc::Status& status, const char* method) {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << method << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr("draining")) << method;
  };
  {
    grpc::ClientContext context;
    expect_refused(stub->SampleOnce(&context, MakeRequest("once-", 1), &response), "SampleOnce");
  }
  {
    grpc::ClientContext context;
    v1::ListProfilesResponse profiles;
    expect_refused(stub->ListProfiles(&context, v1::ListProfilesRequest(), &profiles), "ListProfiles");
  }
  {
    grpc::ClientContext context;
    auto fresh = stub->Sample(&context);
    fresh->Write(MakeRequest("fresh-", 1));
    fresh->WritesDone();
    EXPECT_FALSE(fresh->Read(&response));
    expect_refused(fresh->Finish(), "Sample");
  }
  EXPECT_EQ(service->AdmitStream().code(), absl::StatusCode::kUnavailable) << "the shm control socket's streams";

  // The stream admitted before is still answered, request after request.
  ASSERT_TRUE(open->Write(MakeRequest("open-", 3)));
  ASSERT_TRUE(open->Read(&response));
  EXPECT_EQ(response.results_size(), 3);
  for (const v1::StepResult& result : response.results()) EXPECT_FALSE(result.has_error()) << result.error().message();
  open->WritesDone();
  EXPECT_FALSE(open->Read(&response));
  const grpc::Status finished = open->Finish();
  EXPECT_TRUE(finished.ok()) << finished.error_message();
  server->Shutdown();
}

}  // namespace
}  // namespace samplerd
