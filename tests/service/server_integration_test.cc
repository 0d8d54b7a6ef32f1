// End-to-end tests of the real samplerd binary, over its TCP port and its unix socket.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "clients/cpp/samplerd_client.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "samplerd/v1/sampler.grpc.pb.h"
#include "tests/service/server_process.h"

namespace samplerd {
namespace {

using ::samplerd::client::FillF32Tensor;
using ::samplerd::testing::ServerProcess;
using ::testing::HasSubstr;
using SampleStream = grpc::ClientReaderWriter<v1::SampleRequest, v1::SampleResponse>;

constexpr int kVocab = 1000;

// Logits of N(0, 1) (wide enough that a temperature-1 draw lands on many different tokens), fixed by `key`.
std::vector<float> GaussianLogits(int vocab, uint32_t key) {
  std::mt19937 rng(key);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> logits(static_cast<size_t>(vocab));
  for (float& z : logits) z = normal(rng);
  return logits;
}

// A valid step of `sequence_id` with logits and [4, 20] attention that depend only on (sequence_id, step).
v1::Step MakeStep(const std::string& sequence_id, uint64_t step, uint64_t seed, int vocab = kVocab) {
  const uint32_t key = static_cast<uint32_t>(std::hash<std::string>()(sequence_id) ^ (step * 2654435761u));
  v1::Step s;
  s.set_sequence_id(sequence_id);
  s.set_step(step);
  s.set_seed(seed);
  const int64_t logits_shape[] = {vocab};
  FillF32Tensor(GaussianLogits(vocab, key), logits_shape, s.mutable_logits());
  const int64_t attention_shape[] = {4, 20};
  FillF32Tensor(GaussianLogits(80, key + 1), attention_shape, s.mutable_attention());
  s.add_recent_tokens(1);
  s.add_recent_tokens(2);
  s.add_recent_tokens(3);
  return s;
}

// A step whose draw is a plain temperature-1 sample over the whole vocabulary: the token depends on the seed.
v1::Step MakeRandomDrawStep(const std::string& sequence_id, uint64_t step, uint64_t seed) {
  v1::Step s = MakeStep(sequence_id, step, seed);
  s.set_profile("fixed");
  s.mutable_params()->set_temperature(1.0f);
  s.mutable_params()->set_top_k(0);
  s.mutable_params()->set_top_p(1.0f);
  s.mutable_params()->set_min_p(0.0f);
  return s;
}

void ExpectValidResult(const v1::StepResult& r, const v1::Step& step) {
  EXPECT_FALSE(r.has_error()) << r.error().message();
  EXPECT_EQ(r.sequence_id(), step.sequence_id());
  EXPECT_EQ(r.step(), step.step());
  EXPECT_GE(r.token(), 0);
  EXPECT_LT(r.token(), step.logits().shape(0));
  EXPECT_LE(r.logprob(), 0.0f);
  EXPECT_NE(r.regime(), v1::REGIME_UNSPECIFIED);
  EXPECT_TRUE(r.metrics().has_logits_entropy());
  EXPECT_EQ(r.metrics().has_attn_entropy(), step.has_attention());
  EXPECT_FALSE(r.profile().empty());
}

// Open Sample stream with a helper for one request / one response.
struct Stream {
  explicit Stream(v1::Sampler::Stub* stub) : rw(stub->Sample(&context)) {}
  bool RoundTrip(const v1::SampleRequest& request, v1::SampleResponse* response) {
    return rw->Write(request) && rw->Read(response);
  }
  grpc::ClientContext context;
  std::unique_ptr<SampleStream> rw;
};

std::shared_ptr<grpc::Channel> Connect(const std::string& target, bool adaptive_window = true) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  // gRPC grows a connection's receive window from its bandwidth-delay estimate (to megabytes on loopback);
  // off, the client takes at most the initial 64 KiB window of answers it has not read.
  if (!adaptive_window) args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

// ---------------------------------------------------------------------------------------------------------------
// One server per test process, exercised over both of its addresses.

class ServerTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() { server_ = ServerProcess::Start().release(); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(server_, nullptr) << "samplerd did not start";
    target_ = GetParam() == "tcp" ? server_->tcp_target() : server_->unix_target();
    channel_ = Connect(target_);
    stub_ = v1::Sampler::NewStub(channel_);
  }

  static ServerProcess* server_;
  std::string target_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Sampler::Stub> stub_;
};

ServerProcess* ServerTest::server_ = nullptr;

INSTANTIATE_TEST_SUITE_P(Transports, ServerTest, ::testing::Values("tcp", "unix"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

TEST_P(ServerTest, HealthIsServingForServerAndSampler) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  for (const std::string service : {"", "samplerd.v1.Sampler"}) {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status status = health->Check(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING) << "service \"" << service << "\"";
  }
}

TEST_P(ServerTest, ReflectionListsAndDescribesTheSampler) {
  auto reflection = grpc::reflection::v1alpha::ServerReflection::NewStub(channel_);
  grpc::ClientContext context;
  auto stream = reflection->ServerReflectionInfo(&context);

  grpc::reflection::v1alpha::ServerReflectionRequest list;
  list.set_list_services("");
  grpc::reflection::v1alpha::ServerReflectionResponse listed;
  ASSERT_TRUE(stream->Write(list));
  ASSERT_TRUE(stream->Read(&listed));
  std::set<std::string> services;
  for (const auto& s : listed.list_services_response().service()) services.insert(s.name());
  EXPECT_TRUE(services.count("samplerd.v1.Sampler")) << "listed " << services.size() << " services";
  EXPECT_TRUE(services.count("grpc.health.v1.Health"));

  grpc::reflection::v1alpha::ServerReflectionRequest symbol;
  symbol.set_file_containing_symbol("samplerd.v1.Sampler");
  grpc::reflection::v1alpha::ServerReflectionResponse described;
  ASSERT_TRUE(stream->Write(symbol));
  ASSERT_TRUE(stream->Read(&described));
  ASSERT_GT(described.file_descriptor_response().file_descriptor_proto_size(), 0)
      << described.error_response().error_message();
  google::protobuf::FileDescriptorProto file;
  ASSERT_TRUE(file.ParseFromString(described.file_descriptor_response().file_descriptor_proto(0)));
  EXPECT_EQ(file.name(), "samplerd/v1/sampler.proto");
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_P(ServerTest, ListProfilesReturnsTheBuiltInsWithEntropixAsDefault) {
  grpc::ClientContext context;
  v1::ListProfilesResponse response;
  ASSERT_TRUE(stub_->ListProfiles(&context, v1::ListProfilesRequest(), &response).ok());
  std::set<std::string> names;
  for (const v1::Profile& p : response.profiles()) {
    names.insert(p.name());
    EXPECT_TRUE(p.params().has_temperature()) << p.name() << " lists its parameters";
  }
  EXPECT_EQ(names, (std::set<std::string>{"entropix", "entropix-frog", "fixed"}));
  EXPECT_EQ(response.default_profile(), "entropix");
}

TEST_P(ServerTest, SampleOnceAnswersEveryStepInOrder) {
  v1::SampleRequest request;
  for (int i = 0; i < 6; ++i) *request.add_steps() = MakeStep("once-" + std::to_string(i), i, 11);
  request.mutable_steps(2)->clear_attention();
  request.mutable_steps(3)->set_top_logprobs(5);
  request.mutable_steps(4)->set_profile("fixed");

  grpc::ClientContext context;
  v1::SampleResponse response;
  const grpc::Status status = stub_->SampleOnce(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.results_size(), 6);
  for (int i = 0; i < 6; ++i) ExpectValidResult(response.results(i), request.steps(i));
  EXPECT_FALSE(response.results(2).metrics().has_attn_entropy());
  ASSERT_EQ(response.results(3).top_size(), 5);
  EXPECT_GE(response.results(3).top(0).logprob(), response.results(3).top(4).logprob());
  EXPECT_EQ(response.results(4).profile(), "fixed");
  EXPECT_EQ(response.results(4).regime(), v1::REGIME_FIXED);
  EXPECT_EQ(response.results(0).profile(), "entropix");
  EXPECT_EQ(response.results(0).seed(), 11u);
}

TEST_P(ServerTest, SampleStreamAnswersEveryRequestInOrder) {
  // Requests are written from another thread without waiting for answers, so several are in flight.
  constexpr int kRequests = 24;
  Stream stream(stub_.get());
  std::vector<v1::SampleRequest> requests(kRequests);
  for (int r = 0; r < kRequests; ++r) {
    for (int s = 0; s < 3; ++s) *requests[r].add_steps() = MakeStep("stream-" + std::to_string(s), r, 5);
  }
  std::thread writer([&] {
    for (const v1::SampleRequest& request : requests) {
      if (!stream.rw->Write(request)) return;
    }
    stream.rw->WritesDone();
  });
  v1::SampleResponse response;
  int received = 0;
  while (stream.rw->Read(&response)) {
    ASSERT_LT(received, kRequests);
    ASSERT_EQ(response.results_size(), 3);
    for (int s = 0; s < 3; ++s) ExpectValidResult(response.results(s), requests[received].steps(s));
    ++received;
  }
  writer.join();
  EXPECT_EQ(received, kRequests);
  EXPECT_TRUE(stream.rw->Finish().ok());
}

struct BadStep {
  std::string name;
  std::function<void(v1::Step*)> mutate;
  std::string field;
  std::string received;  // the offending value, as the message must show it
};

std::vector<BadStep> BadSteps() {
  // The mutations outlive this function: they capture by value.
  auto set_logit = [](v1::Step* s, int index, float value) {
    std::string* data = s->mutable_logits()->mutable_data();
    std::memcpy(data->data() + index * sizeof(float), &value, sizeof(float));
  };
  const float inf = std::numeric_limits<float>::infinity();
  return {
      {"wrong dtype", [](v1::Step* s) { s->mutable_logits()->set_dtype(static_cast<v1::DType>(9)); }, "logits.dtype",
       "9"},
      {"data length mismatch", [](v1::Step* s) { s->mutable_logits()->mutable_data()->resize(3999); }, "logits.data",
       "3999"},
      {"empty logits",
       [](v1::Step* s) {
         s->mutable_logits()->set_shape(0, 0);
         s->mutable_logits()->clear_data();
       },
       "logits.shape", "[0]"},
      {"NaN logit", [=](v1::Step* s) { set_logit(s, 17, std::nanf("")); }, "logits.data", "NaN"},
      {"+inf logit", [=](v1::Step* s) { set_logit(s, 3, inf); }, "logits.data", "+inf"},
      {"all logits -inf",
       [=](v1::Step* s) {
         for (int i = 0; i < kVocab; ++i) set_logit(s, i, -inf);
       },
       "logits.data", "-inf"},
      {"attention rank 1",
       [](v1::Step* s) {
         s->mutable_attention()->clear_shape();
         s->mutable_attention()->add_shape(80);
       },
       "attention.shape", "[80]"},
      {"top_p 1.5", [](v1::Step* s) { s->mutable_params()->set_top_p(1.5f); }, "params.top_p", "1.5"},
      {"top_k -1", [](v1::Step* s) { s->mutable_params()->set_top_k(-1); }, "params.top_k", "-1"},
      {"temperature -1", [](v1::Step* s) { s->mutable_params()->set_temperature(-1.0f); }, "params.temperature", "-1"},
      {"n_adaptive_samples 65", [](v1::Step* s) { s->mutable_params()->set_n_adaptive_samples(65); },
       "params.n_adaptive_samples", "65"},
      {"top_logprobs 21", [](v1::Step* s) { s->set_top_logprobs(21); }, "top_logprobs", "21"},
      {"recent token out of vocab", [](v1::Step* s) { s->add_recent_tokens(kVocab); }, "recent_tokens[3]", "1000"},
      {"shape product overflows",
       [](v1::Step* s) {
         s->mutable_attention()->set_shape(0, int64_t{1} << 40);
         s->mutable_attention()->set_shape(1, int64_t{1} << 40);
       },
       "attention.shape", "1099511627776"},
  };
}

TEST_P(ServerTest, InvalidStepsGetTheirOwnErrorsAndTheStreamKeepsServing) {
  const std::vector<BadStep> bad = BadSteps();
  v1::SampleRequest request;
  std::vector<int> bad_index;  // per result: index into `bad`, or -1 for a valid step
  for (size_t i = 0; i < bad.size(); ++i) {
    *request.add_steps() = MakeStep("valid-" + std::to_string(i), i, 3);
    bad_index.push_back(-1);
    v1::Step* step = request.add_steps();
    *step = MakeStep("bad-" + std::to_string(i), i, 3);
    bad[i].mutate(step);
    bad_index.push_back(static_cast<int>(i));
  }

  Stream stream(stub_.get());
  v1::SampleResponse response;
  ASSERT_TRUE(stream.RoundTrip(request, &response));
  ASSERT_EQ(response.results_size(), request.steps_size());
  for (int i = 0; i < response.results_size(); ++i) {
    const v1::StepResult& r = response.results(i);
    EXPECT_EQ(r.sequence_id(), request.steps(i).sequence_id());
    if (bad_index[i] < 0) {
      ExpectValidResult(r, request.steps(i));
      continue;
    }
    const BadStep& b = bad[bad_index[i]];
    ASSERT_TRUE(r.has_error()) << b.name << " was accepted";
    EXPECT_EQ(r.error().code(), 3) << b.name;
    EXPECT_EQ(r.error().field(), b.field) << b.name;
    EXPECT_THAT(r.error().message(), HasSubstr(b.received)) << b.name;
    EXPECT_THAT(r.error().message(), HasSubstr(b.field)) << b.name;
  }

  // The same stream still answers.
  v1::SampleRequest after;
  *after.add_steps() = MakeStep("after", 0, 3);
  ASSERT_TRUE(stream.RoundTrip(after, &response));
  ASSERT_EQ(response.results_size(), 1);
  ExpectValidResult(response.results(0), after.steps(0));
  stream.rw->WritesDone();
  EXPECT_TRUE(stream.rw->Finish().ok());
}

TEST_P(ServerTest, UnknownProfileIsNotFound) {
  v1::SampleRequest request;
  *request.add_steps() = MakeStep("p", 0, 1);
  request.mutable_steps(0)->set_profile("no-such-profile");
  *request.add_steps() = MakeStep("q", 0, 1);
  grpc::ClientContext context;
  v1::SampleResponse response;
  ASSERT_TRUE(stub_->SampleOnce(&context, request, &response).ok());
  ASSERT_EQ(response.results_size(), 2);
  EXPECT_EQ(response.results(0).error().code(), 5);
  EXPECT_EQ(response.results(0).error().field(), "profile");
  EXPECT_THAT(response.results(0).error().message(), HasSubstr("no-such-profile"));
  ExpectValidResult(response.results(1), request.steps(1));
}

TEST_P(ServerTest, SameSeedSequenceAndStepGiveTheSameTokenInAnyBatch) {
  const v1::Step target = MakeRandomDrawStep("det", 7, 1234);
  v1::SampleRequest alone;
  *alone.add_steps() = target;
  v1::SampleRequest mixed;
  *mixed.add_steps() = MakeRandomDrawStep("other", 7, 1234);
  *mixed.add_steps() = MakeRandomDrawStep("det", 6, 1234);
  *mixed.add_steps() = target;
  *mixed.add_steps() = MakeRandomDrawStep("det", 7, 99);

  Stream stream(stub_.get());
  v1::SampleResponse first;
  v1::SampleResponse second;
  ASSERT_TRUE(stream.RoundTrip(alone, &first));
  ASSERT_TRUE(stream.RoundTrip(mixed, &second));
  ASSERT_EQ(first.results_size(), 1);
  ASSERT_EQ(second.results_size(), 4);
  ExpectValidResult(first.results(0), target);
  EXPECT_EQ(first.results(0).regime(), v1::REGIME_FIXED);
  EXPECT_EQ(second.results(2).token(), first.results(0).token());
  EXPECT_EQ(second.results(2).logprob(), first.results(0).logprob());

  // The draw really is random: over 16 seeds the token varies.
  v1::SampleRequest seeds;
  for (uint64_t seed = 1; seed <= 16; ++seed) *seeds.add_steps() = MakeRandomDrawStep("det", 7, seed);
  v1::SampleResponse by_seed;
  ASSERT_TRUE(stream.RoundTrip(seeds, &by_seed));
  std::set<int32_t> tokens;
  for (const v1::StepResult& r : by_seed.results()) tokens.insert(r.token());
  EXPECT_GT(tokens.size(), 4u);
}

TEST_P(ServerTest, SeedZeroIsReplacedByARememberedSeedThatReproducesTheToken) {
  Stream stream(stub_.get());
  v1::SampleRequest request;
  *request.add_steps() = MakeRandomDrawStep("seedless", 0, 0);
  v1::SampleResponse response;
  ASSERT_TRUE(stream.RoundTrip(request, &response));
  ExpectValidResult(response.results(0), request.steps(0));
  const uint64_t picked = response.results(0).seed();
  const int32_t token = response.results(0).token();
  ASSERT_NE(picked, 0u);

  // The stream remembers the seed for the sequence.
  v1::SampleRequest next;
  *next.add_steps() = MakeRandomDrawStep("seedless", 1, 0);
  ASSERT_TRUE(stream.RoundTrip(next, &response));
  EXPECT_EQ(response.results(0).seed(), picked);
  stream.rw->WritesDone();
  EXPECT_TRUE(stream.rw->Finish().ok());

  // The reported seed reproduces the step elsewhere, here through SampleOnce.
  v1::SampleRequest replay;
  *replay.add_steps() = MakeRandomDrawStep("seedless", 0, picked);
  grpc::ClientContext context;
  v1::SampleResponse replayed;
  ASSERT_TRUE(stub_->SampleOnce(&context, replay, &replayed).ok());
  EXPECT_EQ(replayed.results(0).token(), token);
  EXPECT_EQ(replayed.results(0).seed(), picked);

  // Another stream picks its own seed for the same sequence.
  Stream other(stub_.get());
  ASSERT_TRUE(other.RoundTrip(request, &response));
  EXPECT_NE(response.results(0).seed(), 0u);
  EXPECT_NE(response.results(0).seed(), picked);
  other.rw->WritesDone();
  EXPECT_TRUE(other.rw->Finish().ok());
}

TEST_P(ServerTest, SeedZeroInSampleOnceIsSharedBySameSequenceSteps) {
  v1::SampleRequest request;
  *request.add_steps() = MakeRandomDrawStep("a", 0, 0);
  *request.add_steps() = MakeRandomDrawStep("a", 1, 0);
  *request.add_steps() = MakeRandomDrawStep("b", 0, 0);
  grpc::ClientContext context;
  v1::SampleResponse response;
  ASSERT_TRUE(stub_->SampleOnce(&context, request, &response).ok());
  ASSERT_EQ(response.results_size(), 3);
  EXPECT_NE(response.results(0).seed(), 0u);
  EXPECT_EQ(response.results(1).seed(), response.results(0).seed());
  EXPECT_NE(response.results(2).seed(), response.results(0).seed());

  v1::SampleRequest replay;
  *replay.add_steps() = MakeRandomDrawStep("a", 1, response.results(1).seed());
  grpc::ClientContext replay_context;
  v1::SampleResponse replayed;
  ASSERT_TRUE(stub_->SampleOnce(&replay_context, replay, &replayed).ok());
  EXPECT_EQ(replayed.results(0).token(), response.results(1).token());
}

TEST_P(ServerTest, SlowReaderStallsTheWriterInsteadOfBeingBuffered) {
  // 200 requests of 512 KiB (100 MiB). A server that kept reading while nobody takes its answers would
  // accept them all; with at most a few responses queued per stream, gRPC's flow control stops the writer.
  constexpr int kRequests = 200;
  constexpr int kStepsPerRequest = 32;
  constexpr int kBigVocab = 4096;
  v1::SampleRequest request;
  for (int s = 0; s < kStepsPerRequest; ++s) {
    v1::Step* step = request.add_steps();
    *step = MakeStep("slow-" + std::to_string(s), 0, 1, kBigVocab);
    step->set_top_logprobs(20);  // fattens the answers, which fill the client's receive window sooner
  }
  auto stub = v1::Sampler::NewStub(Connect(target_, /*adaptive_window=*/false));
  Stream stream(stub.get());
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (int i = 0; i < kRequests; ++i) {
      if (!stream.rw->Write(request)) return;
      written.fetch_add(1);
    }
    stream.rw->WritesDone();
  });

  // Wait until the writer makes no progress for a second (or, wrongly, finishes).
  int last = -1;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (written.load() != last && written.load() < kRequests && std::chrono::steady_clock::now() < give_up) {
    last = written.load();
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  EXPECT_LT(written.load(), kRequests) << "the server accepted every request while nothing was read";

  v1::SampleResponse response;
  int received = 0;
  while (stream.rw->Read(&response)) {
    ASSERT_EQ(response.results_size(), kStepsPerRequest);
    EXPECT_FALSE(response.results(0).has_error());
    ++received;
  }
  writer.join();
  EXPECT_EQ(received, kRequests);
  EXPECT_TRUE(stream.rw->Finish().ok());
}

// ---------------------------------------------------------------------------------------------------------------
// Tests that need their own server: other flags, a second process, or a signal.

TEST(ServerDeterminism, SecondProcessDrawsTheSameTokens) {
  std::unique_ptr<ServerProcess> first = ServerProcess::Start();
  std::unique_ptr<ServerProcess> second = ServerProcess::Start();
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  v1::SampleRequest request;
  for (int i = 0; i < 8; ++i) *request.add_steps() = MakeRandomDrawStep("cross-" + std::to_string(i), i, 77 + i);
  for (int i = 0; i < 4; ++i) *request.add_steps() = MakeStep("entropix-" + std::to_string(i), i, 5 + i);

  v1::SampleResponse responses[2];
  ServerProcess* servers[2] = {first.get(), second.get()};
  for (int k = 0; k < 2; ++k) {
    auto stub = v1::Sampler::NewStub(Connect(k == 0 ? servers[k]->tcp_target() : servers[k]->unix_target()));
    grpc::ClientContext context;
    ASSERT_TRUE(stub->SampleOnce(&context, request, &responses[k]).ok());
    ASSERT_EQ(responses[k].results_size(), request.steps_size());
  }
  for (int i = 0; i < request.steps_size(); ++i) {
    ExpectValidResult(responses[0].results(i), request.steps(i));
    EXPECT_EQ(responses[0].results(i).token(), responses[1].results(i).token()) << "step " << i;
    EXPECT_EQ(responses[0].results(i).regime(), responses[1].results(i).regime()) << "step " << i;
  }
}

class LimitedServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = ServerProcess::Start(
        {"--max_steps_per_request", "4", "--max_vocab", "2000", "--max_streams", "2", "--max_message_bytes", "100000"});
    ASSERT_NE(server_, nullptr);
    stub_ = v1::Sampler::NewStub(Connect(server_->tcp_target()));
  }
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::Sampler::Stub> stub_;
};

TEST_F(LimitedServerTest, TooManyStepsEndTheStreamAfterEarlierAnswers) {
  Stream stream(stub_.get());
  v1::SampleRequest ok;
  *ok.add_steps() = MakeStep("a", 0, 1);
  v1::SampleResponse response;
  ASSERT_TRUE(stream.RoundTrip(ok, &response));
  ExpectValidResult(response.results(0), ok.steps(0));

  v1::SampleRequest big;
  for (int i = 0; i < 5; ++i) *big.add_steps() = MakeStep("a", i, 1);
  ASSERT_TRUE(stream.rw->Write(big));
  EXPECT_FALSE(stream.rw->Read(&response));
  const grpc::Status status = stream.rw->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("at most 4 steps"));
  EXPECT_THAT(status.error_message(), HasSubstr("got more than 4"));

  grpc::ClientContext context;
  EXPECT_EQ(stub_->SampleOnce(&context, big, &response).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(LimitedServerTest, OversizeVocabIsAStepErrorOversizeMessageAStreamError) {
  v1::SampleRequest request;
  *request.add_steps() = MakeStep("big", 0, 1, /*vocab=*/3000);
  *request.add_steps() = MakeStep("small", 0, 1);
  grpc::ClientContext context;
  v1::SampleResponse response;
  ASSERT_TRUE(stub_->SampleOnce(&context, request, &response).ok());
  EXPECT_EQ(response.results(0).error().code(), 8);  // RESOURCE_EXHAUSTED
  EXPECT_EQ(response.results(0).error().field(), "logits.shape");
  EXPECT_THAT(response.results(0).error().message(), HasSubstr("3000"));
  ExpectValidResult(response.results(1), request.steps(1));

  // A message over --max_message_bytes is refused before it is parsed, ending the stream.
  v1::SampleRequest huge;
  v1::Step* step = huge.add_steps();
  step->mutable_logits()->set_dtype(v1::DTYPE_F32);
  step->mutable_logits()->add_shape(30000);
  step->mutable_logits()->set_data(std::string(120000, '\0'));
  ASSERT_GT(huge.ByteSizeLong(), 100000u);
  Stream stream(stub_.get());
  EXPECT_FALSE(stream.RoundTrip(huge, &response));
  EXPECT_EQ(stream.rw->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

// A request under --max_message_bytes whose answer is over it (many steps, each with a top list) is refused with
// the reason, after the stream's earlier answers: gRPC itself would fail the call on the write, and answers the
// client had not read yet would go with it.
TEST(ServerLimits, AnAnswerOverTheMessageLimitEndsTheStreamAfterTheEarlierAnswers) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start({"--max_message_bytes", "4096"});
  ASSERT_NE(server, nullptr);
  auto stub = v1::Sampler::NewStub(Connect(server->tcp_target()));
  v1::SampleRequest small, wide;
  for (int i = 0; i < 32; ++i) {
    v1::Step step = MakeStep("wide" + std::to_string(i), 0, 1, /*vocab=*/16);
    step.clear_attention();
    step.set_top_logprobs(16);
    if (i == 0) *small.add_steps() = step;
    *wide.add_steps() = step;
  }
  ASSERT_LT(wide.ByteSizeLong(), 4096u);

  Stream stream(stub.get());
  ASSERT_TRUE(stream.rw->Write(small));
  ASSERT_TRUE(stream.rw->Write(wide));
  v1::SampleResponse response;
  ASSERT_TRUE(stream.rw->Read(&response)) << "the answer before the refused one was lost";
  ASSERT_EQ(response.results_size(), 1);
  ExpectValidResult(response.results(0), small.steps(0));
  EXPECT_FALSE(stream.rw->Read(&response));
  const grpc::Status status = stream.rw->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("--max_message_bytes 4096; send fewer steps per request"));

  grpc::ClientContext context;
  const grpc::Status once = stub->SampleOnce(&context, wide, &response);
  EXPECT_EQ(once.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // The same message but for the answer's size, whose server_micros vary by a byte.
  EXPECT_THAT(once.error_message(), HasSubstr("over --max_message_bytes 4096; send fewer steps per request"));
}

TEST_F(LimitedServerTest, StreamsPastMaxStreamsAreRefusedUntilOneCloses) {
  v1::SampleRequest request;
  *request.add_steps() = MakeStep("s", 0, 1);
  v1::SampleResponse response;
  auto first = std::make_unique<Stream>(stub_.get());
  Stream second(stub_.get());
  ASSERT_TRUE(first->RoundTrip(request, &response));
  ASSERT_TRUE(second.RoundTrip(request, &response));

  Stream third(stub_.get());
  EXPECT_FALSE(third.RoundTrip(request, &response));
  const grpc::Status refused = third.rw->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("--max_streams"));

  first->rw->WritesDone();
  ASSERT_TRUE(first->rw->Finish().ok());
  first.reset();
  // The slot is released when the server's reactor is done, shortly after the client sees the status.
  bool admitted = false;
  for (int attempt = 0; attempt < 100 && !admitted; ++attempt) {
    Stream fourth(stub_.get());
    admitted = fourth.RoundTrip(request, &response);
    fourth.rw->WritesDone();
    fourth.rw->Finish();
    if (!admitted) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(admitted);
}

std::string WriteTempFile(const std::string& name, const std::string& contents) {
  const std::string path = "/tmp/samplerd-test-" + std::to_string(getpid()) + "-" + name;
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return path;
  std::fwrite(contents.data(), 1, contents.size(), f);
  std::fclose(f);
  return path;
}

TEST(ServerFlags, ConfigFileAddsProfilesAndSetsTheDefault) {
  const std::string path = WriteTempFile("profiles.json", R"({
    "profiles": [{"name": "cautious", "params": {"temperature": 0.5, "topK": 20, "topP": 0.9, "minP": 0.05},
                  "regimes": [{"regime": "REGIME_ARGMAX",
                               "bounds": [{"metric": "METRIC_LOGITS_ENTROPY", "op": "OP_LT", "value": 0.1}]}],
                  "defaultRegime": "REGIME_ADAPTIVE"}],
    "defaultProfile": "cautious"})");
  std::unique_ptr<ServerProcess> server = ServerProcess::Start({"--config", path});
  ASSERT_NE(server, nullptr);
  auto stub = v1::Sampler::NewStub(Connect(server->tcp_target()));
  grpc::ClientContext list_context;
  v1::ListProfilesResponse profiles;
  ASSERT_TRUE(stub->ListProfiles(&list_context, v1::ListProfilesRequest(), &profiles).ok());
  EXPECT_EQ(profiles.default_profile(), "cautious");
  EXPECT_EQ(profiles.profiles_size(), 4);

  v1::SampleRequest request;
  *request.add_steps() = MakeStep("configured", 0, 1);
  grpc::ClientContext context;
  v1::SampleResponse response;
  ASSERT_TRUE(stub->SampleOnce(&context, request, &response).ok());
  EXPECT_EQ(response.results(0).profile(), "cautious");
  unlink(path.c_str());
}

TEST(ServerFlags, BadConfigFileExitsTwoNamingTheFile) {
  const std::string path = WriteTempFile("bad.json", R"({"profiles": [{"name": "x", "temperature": 1}]})");
  std::string output;
  EXPECT_EQ(ServerProcess::RunToExit("--listen 127.0.0.1:0 --config " + path, &output), 2);
  EXPECT_THAT(output, HasSubstr(path));
  EXPECT_EQ(ServerProcess::RunToExit("--listen 127.0.0.1:0 --config /nonexistent/profiles.json", &output), 2);
  EXPECT_THAT(output, HasSubstr("/nonexistent/profiles.json"));
  unlink(path.c_str());
}

// SAMPLERD_SIMD pins the kernels so that replicas are bit-identical: a value this CPU cannot run stops the server
// at start, naming it, instead of running the widest kernels it has.
TEST(ServerFlags, AKernelPinThisCpuCannotRunExitsTwoNamingIt) {
  setenv("SAMPLERD_SIMD", "avx1024", 1);
  std::string output;
  const int exit_code = ServerProcess::RunToExit("--listen 127.0.0.1:0 --metrics_listen ''", &output);
  unsetenv("SAMPLERD_SIMD");
  EXPECT_EQ(exit_code, 2);
  EXPECT_THAT(output, HasSubstr("SAMPLERD_SIMD=\"avx1024\""));
  EXPECT_THAT(output, HasSubstr("sse2"));
}

TEST(ServerFlags, BadFlagsExitTwoAndHelpListsEveryFlag) {
  std::string output;
  EXPECT_EQ(ServerProcess::RunToExit("--max_vocab 0", &output), 2);
  EXPECT_THAT(output, HasSubstr("--max_vocab"));
  EXPECT_EQ(ServerProcess::RunToExit("--listen nonsense", &output), 2);
  EXPECT_THAT(output, HasSubstr("nonsense"));
  EXPECT_EQ(ServerProcess::RunToExit("--no_such_flag", &output), 2);
  ASSERT_EQ(ServerProcess::RunToExit("--help", &output), 0);
  for (const char* flag : {"--listen", "--config", "--max_message_bytes", "--max_vocab", "--max_attention_elements",
                           "--max_steps_per_request", "--max_streams", "--drain_seconds", "--log_level"}) {
    EXPECT_THAT(output, HasSubstr(flag));
  }
}

TEST(ServerFlags, PortAlreadyInUseFailsToStartNamingTheAddress) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start();
  ASSERT_NE(server, nullptr);
  std::string output;
  EXPECT_EQ(ServerProcess::RunToExit("--listen " + server->tcp_target(), &output), 1);
  EXPECT_THAT(output, HasSubstr("cannot listen on " + server->tcp_target()));
}

TEST(ServerShutdown, IdleServerExitsZeroOnSigterm) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start();
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(server->Stop(SIGTERM, std::chrono::seconds(20)), 0);
}

TEST(ServerShutdown, SigtermTurnsHealthNotServingAndLetsOpenStreamsFinish) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start({"--drain_seconds", "5"});
  ASSERT_NE(server, nullptr);
  auto channel = Connect(server->unix_target());
  auto stub = v1::Sampler::NewStub(channel);
  auto health = grpc::health::v1::Health::NewStub(channel);

  grpc::ClientContext watch_context;
  grpc::health::v1::HealthCheckRequest watch_request;
  auto watch = health->Watch(&watch_context, watch_request);
  grpc::health::v1::HealthCheckResponse status;
  ASSERT_TRUE(watch->Read(&status));
  EXPECT_EQ(status.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  Stream stream(stub.get());
  v1::SampleRequest request;
  *request.add_steps() = MakeStep("drain", 0, 1);
  v1::SampleResponse response;
  ASSERT_TRUE(stream.RoundTrip(request, &response));

  kill(server->pid(), SIGTERM);
  ASSERT_TRUE(watch->Read(&status));
  EXPECT_EQ(status.status(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);

  // The open stream is still served during the drain, then closes cleanly.
  *request.mutable_steps(0) = MakeStep("drain", 1, 1);
  ASSERT_TRUE(stream.RoundTrip(request, &response));
  ExpectValidResult(response.results(0), request.steps(0));
  stream.rw->WritesDone();
  EXPECT_TRUE(stream.rw->Finish().ok());
  watch_context.TryCancel();
  watch->Finish();

  EXPECT_EQ(server->Stop(/*signal=*/0, std::chrono::seconds(20)), 0);  // already signalled: just wait
}

TEST(ServerShutdown, StreamsStillOpenAfterTheDrainPeriodAreCancelledAndTheExitIsZero) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start({"--drain_seconds", "1"});
  ASSERT_NE(server, nullptr);
  auto stub = v1::Sampler::NewStub(Connect(server->tcp_target()));
  Stream stream(stub.get());
  v1::SampleRequest request;
  *request.add_steps() = MakeStep("lingering", 0, 1);
  v1::SampleResponse response;
  ASSERT_TRUE(stream.RoundTrip(request, &response));

  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(server->Stop(SIGTERM, std::chrono::seconds(20)), 0);
  // The open stream held the server for the whole drain period.
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(900));
  EXPECT_FALSE(stream.rw->Read(&response));
  EXPECT_FALSE(stream.rw->Finish().ok());
}

}  // namespace
}  // namespace samplerd
