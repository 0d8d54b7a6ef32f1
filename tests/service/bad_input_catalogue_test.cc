// The bad-input catalogue (issue 7): malformed inputs sent to a real samplerd process, each answered with the
// code docs/contract.md section 6 documents, with the server healthy afterwards and valid steps sharing the stream
// answered exactly as when sent alone.
//
// Step-level problems (kCatalogue below) must come back as that step's StepResult.error: INVALID_ARGUMENT (3)
// for a bad dtype, shape, byte length, value or parameter, RESOURCE_EXHAUSTED (8) over a size limit, NOT_FOUND
// (5) for an unknown profile, naming the field. Stream-level problems end the call with a grpc::Status: a
// message over --max_message_bytes or a request over --max_steps_per_request (RESOURCE_EXHAUSTED), bytes that
// are not a SampleRequest, a cancelled or expired call. Connection-level garbage (non-HTTP/2 bytes, malformed
// HTTP/2 frames from a raw TCP socket) is never served and affects no other connection.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "clients/cpp/samplerd_client.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "samplerd/v1/sampler.grpc.pb.h"
#include "tests/service/http2_frames.h"
#include "tests/service/server_process.h"

namespace samplerd {
namespace {

using ::samplerd::client::FillF32Tensor;
using ::samplerd::testing::Http2Frame;
using ::samplerd::testing::Http2Preface;
using ::samplerd::testing::ServerProcess;
using ::testing::HasSubstr;

constexpr int kVocab = 1000;
constexpr int kMaxVocab = 2000;
constexpr int kMaxAttentionElements = 4096;
constexpr int kMaxMessageBytes = 200000;
constexpr int kMaxStepsPerRequest = 64;
constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> Gaussian(int n, uint32_t key) {
  std::mt19937 rng(key);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = normal(rng);
  return v;
}

// A valid step: N(0, 2) logits over kVocab tokens and [4, 20] attention, fixed by (sequence_id, step).
v1::Step ValidStep(const std::string& sequence_id, uint64_t step, int vocab = kVocab) {
  const uint32_t key = static_cast<uint32_t>(std::hash<std::string>()(sequence_id) + step * 7919);
  v1::Step s;
  s.set_sequence_id(sequence_id);
  s.set_step(step);
  s.set_seed(1234 + step);
  const int64_t logits_shape[] = {vocab};
  FillF32Tensor(Gaussian(vocab, key), logits_shape, s.mutable_logits());
  const int64_t attention_shape[] = {4, 20};
  FillF32Tensor(Gaussian(80, key + 1), attention_shape, s.mutable_attention());
  for (int32_t t : {5, 17, 17, 900}) s.add_recent_tokens(t);
  return s;
}

void SetF32(v1::Tensor* t, int index, float value) {
  std::memcpy(t->mutable_data()->data() + index * sizeof(float), &value, sizeof(float));
}

// One catalogue entry: how to break a valid step and what the server must answer.
struct BadStep {
  std::string name;
  std::function<void(v1::Step*)> mutate;
  int code;           // google.rpc.Code of StepResult.error
  std::string field;  // StepResult.error.field
  std::string shows;  // a substring of the message: the value received
};

std::vector<BadStep> Catalogue() {
  constexpr int kInvalid = 3, kNotFound = 5, kExhausted = 8;
  auto params = [](v1::Step* s) { return s->mutable_params(); };
  return {
      // dtype
      {"logits dtype unspecified", [](v1::Step* s) { s->mutable_logits()->set_dtype(v1::DTYPE_UNSPECIFIED); }, kInvalid,
       "logits.dtype", "got 0"},
      {"logits dtype 9", [](v1::Step* s) { s->mutable_logits()->set_dtype(static_cast<v1::DType>(9)); }, kInvalid,
       "logits.dtype", "got 9"},
      {"attention dtype -3", [](v1::Step* s) { s->mutable_attention()->set_dtype(static_cast<v1::DType>(-3)); },
       kInvalid, "attention.dtype", "got -3"},
      // dtype / length mismatches
      {"f16 logits with f32 bytes", [](v1::Step* s) { s->mutable_logits()->set_dtype(v1::DTYPE_F16); }, kInvalid,
       "logits.data", "got 4000"},
      {"bf16 attention with f32 bytes", [](v1::Step* s) { s->mutable_attention()->set_dtype(v1::DTYPE_BF16); },
       kInvalid, "attention.data", "got 320"},
      {"logits one byte short", [](v1::Step* s) { s->mutable_logits()->mutable_data()->pop_back(); }, kInvalid,
       "logits.data", "got 3999"},
      {"logits one byte long", [](v1::Step* s) { s->mutable_logits()->mutable_data()->push_back('\0'); }, kInvalid,
       "logits.data", "got 4001"},
      {"attention data empty", [](v1::Step* s) { s->mutable_attention()->clear_data(); }, kInvalid, "attention.data",
       "got 0"},
      // shapes
      {"logits rank 2",
       [](v1::Step* s) {
         s->mutable_logits()->set_shape(0, 2);
         s->mutable_logits()->add_shape(500);
       },
       kInvalid, "logits.shape", "[2, 500]"},
      {"logits without shape", [](v1::Step* s) { s->mutable_logits()->clear_shape(); }, kInvalid, "logits.shape", "[]"},
      {"empty logits",
       [](v1::Step* s) {
         s->mutable_logits()->set_shape(0, 0);
         s->mutable_logits()->clear_data();
       },
       kInvalid, "logits.shape", "[0]"},
      {"negative vocab", [](v1::Step* s) { s->mutable_logits()->set_shape(0, -1000); }, kInvalid, "logits.shape",
       "[-1000]"},
      {"no logits at all", [](v1::Step* s) { s->clear_logits(); }, kInvalid, "logits", "is missing"},
      {"attention kv_len 0", [](v1::Step* s) { s->mutable_attention()->set_shape(1, 0); }, kInvalid, "attention.shape",
       "[4, 0]"},
      {"attention rank 4",
       [](v1::Step* s) {
         s->mutable_attention()->set_shape(0, 1);
         s->mutable_attention()->set_shape(1, 2);
         s->mutable_attention()->add_shape(2);
         s->mutable_attention()->add_shape(20);
       },
       kInvalid, "attention.shape", "[1, 2, 2, 20]"},
      {"attention shape product overflows int64",
       [](v1::Step* s) {
         s->mutable_attention()->set_shape(0, int64_t{1} << 40);
         s->mutable_attention()->set_shape(1, int64_t{1} << 40);
       },
       kInvalid, "attention.shape", "overflows"},
      {"attention shape 3 x 2^62 overflows",
       [](v1::Step* s) {
         s->mutable_attention()->set_shape(0, 3);
         s->mutable_attention()->set_shape(1, int64_t{1} << 62);
       },
       kInvalid, "attention.shape", "overflows"},
      // an oversize vocab (docs/contract.md section 6): more tokens than int32 ids can name
      {"vocab 2^62, beyond int32 token ids", [](v1::Step* s) { s->mutable_logits()->set_shape(0, int64_t{1} << 62); },
       kInvalid, "logits.shape", "4611686018427387904"},
      {"vocab 2^31, beyond int32 token ids", [](v1::Step* s) { s->mutable_logits()->set_shape(0, int64_t{1} << 31); },
       kInvalid, "logits.shape", "2147483648"},
      // size limits
      {"vocab 2^31 - 1 over --max_vocab",
       [](v1::Step* s) { s->mutable_logits()->set_shape(0, (int64_t{1} << 31) - 1); }, kExhausted, "logits.shape",
       "2147483647"},
      {"vocab 3000 over --max_vocab 2000", [](v1::Step* s) { *s = ValidStep(s->sequence_id(), s->step(), 3000); },
       kExhausted, "logits.shape", "3000"},
      {"attention [8, 1024] over --max_attention_elements 4096",
       [](v1::Step* s) {
         const int64_t shape[] = {8, 1024};
         FillF32Tensor(Gaussian(8 * 1024, 3), shape, s->mutable_attention());
       },
       kExhausted, "attention.shape", "8192"},
      // values
      {"NaN logit", [](v1::Step* s) { SetF32(s->mutable_logits(), 10, std::nanf("")); }, kInvalid, "logits.data",
       "NaN"},
      {"+inf logit", [](v1::Step* s) { SetF32(s->mutable_logits(), 999, kInf); }, kInvalid, "logits.data", "+inf"},
      {"every logit -inf",
       [](v1::Step* s) {
         for (int i = 0; i < kVocab; ++i) SetF32(s->mutable_logits(), i, -kInf);
       },
       kInvalid, "logits.data", "-inf"},
      {"NaN attention", [](v1::Step* s) { SetF32(s->mutable_attention(), 41, std::nanf("")); }, kInvalid,
       "attention.data", "NaN"},
      {"+inf attention", [](v1::Step* s) { SetF32(s->mutable_attention(), 0, kInf); }, kInvalid, "attention.data",
       "+inf"},
      {"bf16 NaN logit",
       [](v1::Step* s) {
         v1::Tensor* t = s->mutable_logits();
         t->set_dtype(v1::DTYPE_BF16);
         t->set_data(std::string(2 * kVocab, '\0'));
         (*t->mutable_data())[2 * 7] = static_cast<char>(0xc0);  // 0x7fc0: quiet NaN
         (*t->mutable_data())[2 * 7 + 1] = static_cast<char>(0x7f);
       },
       kInvalid, "logits.data", "NaN"},
      {"f16 +inf logit",
       [](v1::Step* s) {
         v1::Tensor* t = s->mutable_logits();
         t->set_dtype(v1::DTYPE_F16);
         t->set_data(std::string(2 * kVocab, '\0'));
         (*t->mutable_data())[2 * 3 + 1] = static_cast<char>(0x7c);  // 0x7c00: +inf
       },
       kInvalid, "logits.data", "+inf"},
      // parameters out of range
      {"temperature -1", [=](v1::Step* s) { params(s)->set_temperature(-1.0f); }, kInvalid, "params.temperature", "-1"},
      {"temperature NaN", [=](v1::Step* s) { params(s)->set_temperature(std::nanf("")); }, kInvalid,
       "params.temperature", "nan"},
      {"temperature +inf", [=](v1::Step* s) { params(s)->set_temperature(kInf); }, kInvalid, "params.temperature",
       "inf"},
      {"top_k -1", [=](v1::Step* s) { params(s)->set_top_k(-1); }, kInvalid, "params.top_k", "-1"},
      {"top_p 0", [=](v1::Step* s) { params(s)->set_top_p(0.0f); }, kInvalid, "params.top_p", "got 0"},
      {"top_p 1.5", [=](v1::Step* s) { params(s)->set_top_p(1.5f); }, kInvalid, "params.top_p", "1.5"},
      {"min_p -0.25", [=](v1::Step* s) { params(s)->set_min_p(-0.25f); }, kInvalid, "params.min_p", "-0.25"},
      {"min_p 2", [=](v1::Step* s) { params(s)->set_min_p(2.0f); }, kInvalid, "params.min_p", "2"},
      {"repetition_penalty 0", [=](v1::Step* s) { params(s)->set_repetition_penalty(0.0f); }, kInvalid,
       "params.repetition_penalty", "got 0"},
      {"frequency_penalty NaN", [=](v1::Step* s) { params(s)->set_frequency_penalty(std::nanf("")); }, kInvalid,
       "params.frequency_penalty", "nan"},
      {"logit_bias token -5", [=](v1::Step* s) { (*params(s)->mutable_logit_bias())[-5] = 1.0f; }, kInvalid,
       "params.logit_bias", "-5"},
      {"logit_bias token out of vocab", [=](v1::Step* s) { (*params(s)->mutable_logit_bias())[kVocab] = 1.0f; },
       kInvalid, "params.logit_bias", "1000"},
      {"logit_bias +inf", [=](v1::Step* s) { (*params(s)->mutable_logit_bias())[3] = kInf; }, kInvalid,
       "params.logit_bias", "inf"},
      {"logit_bias masks every token",
       [=](v1::Step* s) {
         for (int i = 0; i < kVocab; ++i) (*params(s)->mutable_logit_bias())[i] = -kInf;
       },
       kInvalid, "params.logit_bias", "-inf"},
      {"n_adaptive_samples 0", [=](v1::Step* s) { params(s)->set_n_adaptive_samples(0); }, kInvalid,
       "params.n_adaptive_samples", "got 0"},
      {"n_adaptive_samples 65", [=](v1::Step* s) { params(s)->set_n_adaptive_samples(65); }, kInvalid,
       "params.n_adaptive_samples", "65"},
      {"clarifying_token -2", [=](v1::Step* s) { params(s)->set_clarifying_token(-2); }, kInvalid,
       "params.clarifying_token", "-2"},
      {"top_logprobs -1", [](v1::Step* s) { s->set_top_logprobs(-1); }, kInvalid, "top_logprobs", "-1"},
      {"top_logprobs 21", [](v1::Step* s) { s->set_top_logprobs(21); }, kInvalid, "top_logprobs", "21"},
      {"recent token -1", [](v1::Step* s) { s->add_recent_tokens(-1); }, kInvalid, "recent_tokens[4]", "-1"},
      {"recent token == vocab", [](v1::Step* s) { s->add_recent_tokens(kVocab); }, kInvalid, "recent_tokens[4]",
       "1000"},
      {"unknown profile", [](v1::Step* s) { s->set_profile("no-such-profile"); }, kNotFound, "profile",
       "no-such-profile"},
  };
}

std::shared_ptr<grpc::Channel> Connect(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);  // the client may send what the server must refuse
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

// The result of `step` sent alone through SampleOnce, without server_micros: what a step must be answered
// with whatever shares its request or stream.
v1::StepResult Alone(v1::Sampler::Stub* stub, const v1::Step& step) {
  v1::SampleRequest request;
  *request.add_steps() = step;
  grpc::ClientContext context;
  v1::SampleResponse response;
  const grpc::Status status = stub->SampleOnce(&context, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  if (response.results_size() != 1) return v1::StepResult();
  v1::StepResult r = response.results(0);
  r.clear_server_micros();
  return r;
}

void ExpectSameResult(v1::StepResult got, const v1::StepResult& want, const std::string& what) {
  got.clear_server_micros();
  EXPECT_FALSE(got.has_error()) << what << ": " << got.error().message();
  std::string diff;
  google::protobuf::util::MessageDifferencer differ;
  differ.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differ.Compare(got, want)) << what << ":\n" << diff;
}

class BadInputCatalogueTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = ServerProcess::Start({"--max_vocab", std::to_string(kMaxVocab), "--max_attention_elements",
                                    std::to_string(kMaxAttentionElements), "--max_message_bytes",
                                    std::to_string(kMaxMessageBytes), "--max_steps_per_request",
                                    std::to_string(kMaxStepsPerRequest)})
                  .release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(server_, nullptr) << "samplerd did not start";
    channel_ = Connect(server_->tcp_target());
    stub_ = v1::Sampler::NewStub(channel_);
  }

  // Health is SERVING and, on a fresh connection and stream, a valid step gets the same answer as before the
  // test ran (the reference is taken from a second samplerd process that saw no bad input).
  void ExpectHealthyAndCorrect(const std::string& after) {
    auto channel = Connect(server_->tcp_target());
    auto health = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext health_context;
    health_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::health::v1::HealthCheckResponse status;
    const grpc::Status s = health->Check(&health_context, grpc::health::v1::HealthCheckRequest(), &status);
    ASSERT_TRUE(s.ok()) << after << ": " << s.error_message();
    EXPECT_EQ(status.status(), grpc::health::v1::HealthCheckResponse::SERVING) << after;

    static const v1::StepResult reference = [] {
      std::unique_ptr<ServerProcess> clean = ServerProcess::Start();
      auto stub = v1::Sampler::NewStub(Connect(clean->tcp_target()));
      return Alone(stub.get(), ValidStep("health-probe", 3));
    }();
    auto stub = v1::Sampler::NewStub(channel);
    grpc::ClientContext context;
    auto stream = stub->Sample(&context);
    v1::SampleRequest request;
    *request.add_steps() = ValidStep("health-probe", 3);
    v1::SampleResponse response;
    ASSERT_TRUE(stream->Write(request)) << after;
    ASSERT_TRUE(stream->Read(&response)) << after;
    ASSERT_EQ(response.results_size(), 1) << after;
    ExpectSameResult(response.results(0), reference, after + ": probe step");
    stream->WritesDone();
    EXPECT_TRUE(stream->Finish().ok()) << after;
  }

  static ServerProcess* server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Sampler::Stub> stub_;
};

ServerProcess* BadInputCatalogueTest::server_ = nullptr;

TEST_F(BadInputCatalogueTest, CatalogueHasAtLeastThirtyStepLevelEntriesWithDistinctNames) {
  const std::vector<BadStep> catalogue = Catalogue();
  EXPECT_GE(catalogue.size(), 30u);
  std::set<std::string> names;
  for (const BadStep& b : catalogue) EXPECT_TRUE(names.insert(b.name).second) << b.name;
}

TEST_F(BadInputCatalogueTest, EveryBadStepInOneBatchGetsItsCodeAndTheValidStepsBetweenAreUnaffected) {
  const std::vector<BadStep> catalogue = Catalogue();
  v1::SampleRequest request;
  std::vector<v1::StepResult> want_valid;
  for (size_t i = 0; i < catalogue.size(); ++i) {
    const v1::Step valid = ValidStep("valid-" + std::to_string(i), i);
    want_valid.push_back(Alone(stub_.get(), valid));
    *request.add_steps() = valid;
    v1::Step* bad = request.add_steps();
    *bad = ValidStep("bad-" + std::to_string(i), i);
    catalogue[i].mutate(bad);
  }
  ASSERT_LE(request.steps_size(), kMaxStepsPerRequest * 2);
  // Split into requests the server accepts (--max_steps_per_request steps and --max_message_bytes bytes each),
  // all on one stream, pipelined.
  grpc::ClientContext context;
  auto stream = stub_->Sample(&context);
  std::vector<v1::SampleRequest> parts(1);
  for (const v1::Step& step : request.steps()) {
    v1::SampleRequest* part = &parts.back();
    const size_t grown = part->ByteSizeLong() + step.ByteSizeLong() + 8;  // + field tag and length
    if (part->steps_size() > 0 &&
        (part->steps_size() == kMaxStepsPerRequest || grown >= static_cast<size_t>(kMaxMessageBytes) - 1024)) {
      parts.emplace_back();
      part = &parts.back();
    }
    *part->add_steps() = step;
  }
  for (const v1::SampleRequest& part : parts) {
    ASSERT_LT(part.ByteSizeLong(), static_cast<size_t>(kMaxMessageBytes));
  }
  for (const v1::SampleRequest& part : parts) ASSERT_TRUE(stream->Write(part));
  stream->WritesDone();
  int index = 0;
  v1::SampleResponse response;
  for (const v1::SampleRequest& part : parts) {
    ASSERT_TRUE(stream->Read(&response));
    ASSERT_EQ(response.results_size(), part.steps_size());
    for (const v1::StepResult& r : response.results()) {
      const size_t entry = static_cast<size_t>(index / 2);
      EXPECT_EQ(r.sequence_id(), request.steps(index).sequence_id());
      if (index % 2 == 0) {
        ExpectSameResult(r, want_valid[entry], "the valid step next to \"" + catalogue[entry].name + "\"");
      } else {
        const BadStep& b = catalogue[entry];
        ASSERT_TRUE(r.has_error()) << b.name << " was accepted";
        EXPECT_EQ(r.error().code(), b.code) << b.name << ": " << r.error().message();
        EXPECT_EQ(r.error().field(), b.field) << b.name << ": " << r.error().message();
        EXPECT_THAT(r.error().message(), HasSubstr(b.shows)) << b.name;
        EXPECT_THAT(r.error().message(), HasSubstr(b.field)) << b.name;
        EXPECT_EQ(r.token(), 0) << b.name << ": a rejected step carries no token";
        EXPECT_FALSE(r.has_metrics()) << b.name;
      }
      ++index;
    }
  }
  EXPECT_EQ(index, request.steps_size());
  EXPECT_FALSE(stream->Read(&response));
  EXPECT_TRUE(stream->Finish().ok());
  ExpectHealthyAndCorrect("after the catalogue batch");
}

TEST_F(BadInputCatalogueTest, EveryBadStepAloneOnOneStreamLeavesTheStreamServing) {
  grpc::ClientContext context;
  auto stream = stub_->Sample(&context);
  const std::vector<BadStep> catalogue = Catalogue();
  const v1::Step valid = ValidStep("between", 1);
  const v1::StepResult want = Alone(stub_.get(), valid);
  for (const BadStep& b : catalogue) {
    v1::SampleRequest bad;
    *bad.add_steps() = ValidStep("alone", 0);
    b.mutate(bad.mutable_steps(0));
    v1::SampleResponse response;
    ASSERT_TRUE(stream->Write(bad)) << b.name;
    ASSERT_TRUE(stream->Read(&response)) << b.name;
    ASSERT_EQ(response.results_size(), 1);
    EXPECT_EQ(response.results(0).error().code(), b.code) << b.name;
    v1::SampleRequest good;
    *good.add_steps() = valid;
    ASSERT_TRUE(stream->Write(good)) << b.name;
    ASSERT_TRUE(stream->Read(&response)) << b.name;
    ExpectSameResult(response.results(0), want, "after \"" + b.name + "\"");
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(BadInputCatalogueTest, SampleOnceAnswersBadStepsTheSameWay) {
  for (const BadStep& b : Catalogue()) {
    v1::SampleRequest request;
    *request.add_steps() = ValidStep("once", 2);
    b.mutate(request.mutable_steps(0));
    grpc::ClientContext context;
    v1::SampleResponse response;
    ASSERT_TRUE(stub_->SampleOnce(&context, request, &response).ok()) << b.name;
    ASSERT_EQ(response.results_size(), 1);
    EXPECT_EQ(response.results(0).error().code(), b.code) << b.name;
    EXPECT_EQ(response.results(0).error().field(), b.field) << b.name;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Stream-level problems.

TEST_F(BadInputCatalogueTest, MessageOverMaxMessageBytesEndsTheStreamWithResourceExhausted) {
  grpc::ClientContext context;
  auto stream = stub_->Sample(&context);
  v1::SampleRequest ok;
  *ok.add_steps() = ValidStep("before-huge", 0);
  v1::SampleResponse response;
  ASSERT_TRUE(stream->Write(ok));
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_FALSE(response.results(0).has_error());

  v1::SampleRequest huge;
  for (int i = 0; i < 60; ++i) *huge.add_steps() = ValidStep("huge", i);  // 60 x ~4.4 KB = ~264 KB
  ASSERT_GT(huge.ByteSizeLong(), static_cast<size_t>(kMaxMessageBytes));
  ASSERT_LE(huge.steps_size(), kMaxStepsPerRequest);
  stream->Write(huge);
  EXPECT_FALSE(stream->Read(&response));
  const grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();

  grpc::ClientContext once_context;
  EXPECT_EQ(stub_->SampleOnce(&once_context, huge, &response).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  ExpectHealthyAndCorrect("after a message over --max_message_bytes");
}

TEST_F(BadInputCatalogueTest, TooManyStepsInOneRequestEndTheStreamWithResourceExhausted) {
  grpc::ClientContext context;
  auto stream = stub_->Sample(&context);
  v1::SampleRequest big;
  for (int i = 0; i <= kMaxStepsPerRequest; ++i) {
    v1::Step* s = big.add_steps();
    s->set_sequence_id("many");
    s->mutable_logits()->set_dtype(v1::DTYPE_F32);
    s->mutable_logits()->add_shape(1);
    s->mutable_logits()->set_data(std::string(4, '\0'));
  }
  v1::SampleResponse response;
  ASSERT_TRUE(stream->Write(big));
  EXPECT_FALSE(stream->Read(&response));
  const grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("got more than " + std::to_string(kMaxStepsPerRequest)));
  ExpectHealthyAndCorrect("after too many steps");
}

// A raw grpc::ByteBuffer of `bytes`.
grpc::ByteBuffer Buffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

// Sends `messages` (arbitrary bytes, not necessarily a SampleRequest) on a Sample stream through the generic
// stub, half-closes, and returns how many responses came back and the final status.
struct RawStreamResult {
  int responses = 0;
  grpc::Status status;
};
RawStreamResult RawSampleStream(grpc::Channel* channel, const std::vector<std::string>& messages) {
  class Reactor : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
   public:
    explicit Reactor(const std::vector<std::string>& messages) {
      for (const std::string& m : messages) buffers_.push_back(Buffer(m));
    }
    void Start() {
      StartRead(&incoming_);
      WriteNext();
      StartCall();
    }
    void OnWriteDone(bool ok) override {
      if (ok) WriteNext();
    }
    void OnReadDone(bool ok) override {
      if (!ok) return;
      ++result_.responses;
      StartRead(&incoming_);
    }
    void OnDone(const grpc::Status& status) override {
      std::lock_guard<std::mutex> lock(mu_);
      result_.status = status;
      done_ = true;
      cv_.notify_all();
    }
    RawStreamResult Wait() {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return done_; });
      return result_;
    }
    grpc::ClientContext context;

   private:
    void WriteNext() {
      if (next_ < buffers_.size()) {
        StartWrite(&buffers_[next_++]);
      } else {
        StartWritesDone();
      }
    }
    std::vector<grpc::ByteBuffer> buffers_;
    size_t next_ = 0;
    grpc::ByteBuffer incoming_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool done_ = false;
    RawStreamResult result_;
  };
  grpc::GenericStub stub(std::shared_ptr<grpc::Channel>(channel, [](grpc::Channel*) {}));
  Reactor reactor(messages);
  reactor.context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  stub.PrepareBidiStreamingCall(&reactor.context, "/samplerd.v1.Sampler/Sample", grpc::StubOptions(), &reactor);
  reactor.Start();
  return reactor.Wait();
}

TEST_F(BadInputCatalogueTest, BytesThatAreNotASampleRequestEndTheStreamAfterEarlierAnswers) {
  v1::SampleRequest ok;
  *ok.add_steps() = ValidStep("before-garbage", 0);
  // 0xff... is an invalid tag/wire type; a truncated length-delimited field; a field-1 length past the end.
  for (const std::string& garbage :
       {std::string(64, '\xff'), std::string("\x0a\x80\x80\x80\x80\x10", 6), std::string("\x0a\x05\x12\x01", 4)}) {
    const RawStreamResult r =
        RawSampleStream(channel_.get(), {ok.SerializeAsString(), garbage, ok.SerializeAsString()});
    EXPECT_EQ(r.responses, 1) << "the request before the garbage is answered, nothing after it";
    // docs/contract.md section 6: an unparseable frame ends the stream with its status, naming the message.
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << r.status.error_message();
    EXPECT_THAT(r.status.error_message(), HasSubstr("message 2 of the call"));
    EXPECT_THAT(r.status.error_message(), HasSubstr("is not a samplerd.v1.SampleRequest"));
  }
  // Garbage first: nothing answered, the same error for message 1.
  const RawStreamResult first = RawSampleStream(channel_.get(), {std::string(8, '\xff'), ok.SerializeAsString()});
  EXPECT_EQ(first.responses, 0);
  EXPECT_EQ(first.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << first.status.error_message();
  EXPECT_THAT(first.status.error_message(), HasSubstr("message 1 of the call is not"));
  // An empty message is a valid SampleRequest with no steps: answered with no results.
  const RawStreamResult empty = RawSampleStream(channel_.get(), {std::string()});
  EXPECT_EQ(empty.responses, 1);
  EXPECT_TRUE(empty.status.ok()) << empty.status.error_message();
  ExpectHealthyAndCorrect("after unparseable messages");
}

TEST_F(BadInputCatalogueTest, HalfClosedStreamGetsEveryAnswerThenOk) {
  grpc::ClientContext context;
  auto stream = stub_->Sample(&context);
  std::vector<v1::StepResult> want;
  for (int i = 0; i < 12; ++i) {
    v1::SampleRequest request;
    *request.add_steps() = ValidStep("half-closed", i);
    want.push_back(Alone(stub_.get(), request.steps(0)));
    ASSERT_TRUE(stream->Write(request));
  }
  stream->WritesDone();  // half-close before reading anything
  v1::SampleResponse response;
  for (int i = 0; i < 12; ++i) {
    ASSERT_TRUE(stream->Read(&response)) << "answer " << i;
    ExpectSameResult(response.results(0), want[static_cast<size_t>(i)], "answer " + std::to_string(i));
  }
  EXPECT_FALSE(stream->Read(&response));
  EXPECT_TRUE(stream->Finish().ok());

  // Half-closed with nothing sent: no answers, OK.
  grpc::ClientContext empty_context;
  auto empty = stub_->Sample(&empty_context);
  empty->WritesDone();
  EXPECT_FALSE(empty->Read(&response));
  EXPECT_TRUE(empty->Finish().ok());
  ExpectHealthyAndCorrect("after half-closed streams");
}

TEST_F(BadInputCatalogueTest, CancellationMidBatchLeavesOtherStreamsOnTheSameConnectionCorrect) {
  // A neighbour stream on the same channel (so the same HTTP/2 connection) runs through the cancellation.
  grpc::ClientContext neighbour_context;
  auto neighbour = stub_->Sample(&neighbour_context);
  v1::SampleResponse response;

  for (int round = 0; round < 5; ++round) {
    grpc::ClientContext context;
    auto stream = stub_->Sample(&context);
    v1::SampleRequest batch;
    for (int i = 0; i < 32; ++i) *batch.add_steps() = ValidStep("cancelled-" + std::to_string(i), round);
    std::atomic<int> written{0};
    std::thread writer([&] {
      for (int i = 0; i < 50; ++i) {
        if (!stream->Write(batch)) return;
        written.fetch_add(1);
      }
    });
    // Read a few answers, then cancel with requests still in flight.
    for (int i = 0; i < 2 + round; ++i) ASSERT_TRUE(stream->Read(&response));
    context.TryCancel();
    writer.join();
    while (stream->Read(&response)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);

    v1::SampleRequest request;
    *request.add_steps() = ValidStep("neighbour", round);
    const v1::StepResult want = Alone(stub_.get(), request.steps(0));
    ASSERT_TRUE(neighbour->Write(request));
    ASSERT_TRUE(neighbour->Read(&response));
    ExpectSameResult(response.results(0), want, "neighbour round " + std::to_string(round));
  }
  neighbour->WritesDone();
  EXPECT_TRUE(neighbour->Finish().ok());
  ExpectHealthyAndCorrect("after cancellations");
}

TEST_F(BadInputCatalogueTest, ExpiredDeadlineMidStreamIsDeadlineExceeded) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  auto stream = stub_->Sample(&context);
  v1::SampleRequest request;
  *request.add_steps() = ValidStep("deadline", 0);
  v1::SampleResponse response;
  ASSERT_TRUE(stream->Write(request));
  ASSERT_TRUE(stream->Read(&response));
  std::this_thread::sleep_for(std::chrono::milliseconds(800));  // the stream stays open past its deadline
  EXPECT_FALSE(stream->Read(&response));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  ExpectHealthyAndCorrect("after an expired deadline");
}

// A unary call of `method` with `bytes` as its request, through the generic stub.
grpc::Status RawUnaryCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                          const std::string& bytes) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  grpc::ByteBuffer request = Buffer(bytes);
  grpc::ByteBuffer response;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status status;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response, [&](grpc::Status s) {
    std::lock_guard<std::mutex> lock(mu);
    status = s;
    done = true;
    cv.notify_all();
  });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done; });
  return status;
}

TEST_F(BadInputCatalogueTest, UnknownMethodIsUnimplemented) {
  EXPECT_EQ(RawUnaryCall(channel_, "/samplerd.v1.Sampler/NoSuchMethod", "").error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(BadInputCatalogueTest, BytesThatAreNotASampleRequestFailSampleOnce) {
  for (const std::string& garbage : {std::string(64, '\xff'), std::string("\x0a\x05\x12\x01", 4)}) {
    const grpc::Status status = RawUnaryCall(channel_, "/samplerd.v1.Sampler/SampleOnce", garbage);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr("is not a samplerd.v1.SampleRequest"));
  }
  ExpectHealthyAndCorrect("after unparseable SampleOnce requests");
}

TEST_F(BadInputCatalogueTest, BytesThatAreNotAListProfilesRequestFailListProfiles) {
  for (const std::string& garbage : {std::string("\xff\xff", 2), std::string("\x08", 1)}) {
    const grpc::Status status = RawUnaryCall(channel_, "/samplerd.v1.Sampler/ListProfiles", garbage);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr("is not a samplerd.v1.ListProfilesRequest"));
  }
  // An empty message is a valid ListProfilesRequest.
  EXPECT_TRUE(RawUnaryCall(channel_, "/samplerd.v1.Sampler/ListProfiles", "").ok());
  ExpectHealthyAndCorrect("after unparseable ListProfiles requests");
}

// ---------------------------------------------------------------------------------------------------------------
// Raw TCP: bytes that are not gRPC at all.

class RawSocket {
 public:
  explicit RawSocket(const std::string& target) {
    const size_t colon = target.rfind(':');
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(std::stoi(target.substr(colon + 1))));
    inet_pton(AF_INET, target.substr(0, colon).c_str(), &addr.sin_addr);
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ >= 0 && connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  ~RawSocket() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  bool Send(const std::string& bytes) {
    return send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
  }
  // Reads until the server closes the connection (true) or `timeout` passes (false); `*received` gets the bytes.
  bool ReadUntilClosed(std::chrono::milliseconds timeout, std::string* received) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    char buffer[4096];
    while (true) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      const ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
      if (n <= 0) return true;  // EOF or reset
      received->append(buffer, static_cast<size_t>(n));
    }
  }

 private:
  int fd_ = -1;
};

// The types of the HTTP/2 frames in `bytes` (the server's side of a connection), in order.
std::vector<int> FrameTypes(const std::string& bytes) {
  std::vector<int> types;
  size_t pos = 0;
  while (pos + 9 <= bytes.size()) {
    const uint32_t len = (static_cast<uint8_t>(bytes[pos]) << 16) | (static_cast<uint8_t>(bytes[pos + 1]) << 8) |
                         static_cast<uint8_t>(bytes[pos + 2]);
    types.push_back(static_cast<uint8_t>(bytes[pos + 3]));
    pos += 9 + len;
  }
  return types;
}

struct RawCase {
  std::string name;
  std::string bytes;
  // Without a valid HTTP/2 preface the server must close the connection. After one, gRPC 1.51 closes it for
  // most malformed frames (without a GOAWAY), but ignores a DATA frame on stream 0 and a SETTINGS frame of a
  // bad length and keeps the connection open; either is fine as long as nothing is served.
  bool must_close;
};

std::vector<RawCase> RawCases() {
  const std::string preface = Http2Preface();
  const std::string settings = Http2Frame(4, 0, 0, "");
  std::mt19937 rng(7);
  std::string random_bytes(4096, '\0');
  for (char& c : random_bytes) c = static_cast<char>(rng());
  return {
      {"an HTTP/1.1 request", "GET / HTTP/1.1\r\nHost: samplerd\r\n\r\n", true},
      {"a TLS ClientHello on the plaintext port",
       std::string("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 11) + std::string(160, '\x42'), true},
      {"4 KiB of random bytes", random_bytes, true},
      {"a wrong preface", "PRI * HTTP/3.0\r\n\r\nSM\r\n\r\n", true},
      {"preface then 64 bytes of 0xff", preface + std::string(64, '\xff'), true},
      {"preface then a DATA frame on stream 0", preface + settings + Http2Frame(0, 0, 0, "hello"), false},
      {"preface then HEADERS with invalid HPACK",
       preface + settings + Http2Frame(1, 0x4 | 0x1, 1, std::string(16, '\xff')), true},
      {"preface then a SETTINGS frame of 5 bytes", preface + Http2Frame(4, 0, 0, "\x00\x01\x00\x00\x00"), false},
      {"preface then a frame over the max frame size",
       preface + settings + Http2Frame(0, 0, 1, std::string(20000, 'x')), true},
      {"preface then a WINDOW_UPDATE of 0 on the connection",
       preface + settings + Http2Frame(8, 0, 0, std::string(4, '\0')), true},
  };
}

TEST_F(BadInputCatalogueTest, GarbageFromARawTcpSocketIsNeverServedAndLeavesOtherConnectionsAlone) {
  // A healthy stream stays open on its own connection throughout.
  grpc::ClientContext context;
  auto stream = stub_->Sample(&context);
  v1::SampleResponse response;
  int step = 0;
  for (const RawCase& c : RawCases()) {
    RawSocket socket(server_->tcp_target());
    ASSERT_TRUE(socket.ok()) << c.name;
    socket.Send(c.bytes);  // the server may close before it has read everything
    std::string received;
    const bool closed = socket.ReadUntilClosed(std::chrono::seconds(c.must_close ? 15 : 3), &received);
    if (c.must_close) {
      EXPECT_TRUE(closed) << c.name << ": connection left open";
    }
    // Whatever the server answers (its SETTINGS, a PING, an error trailer for a broken stream), it never sends
    // a message: garbage runs no RPC.
    for (int type : FrameTypes(received)) EXPECT_NE(type, 0) << c.name << ": the server sent a DATA frame";
    v1::SampleRequest request;
    *request.add_steps() = ValidStep("beside-raw", step++);
    ASSERT_TRUE(stream->Write(request)) << c.name;
    ASSERT_TRUE(stream->Read(&response)) << c.name;
    EXPECT_FALSE(response.results(0).has_error()) << c.name;
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  ExpectHealthyAndCorrect("after raw TCP garbage");
}

TEST_F(BadInputCatalogueTest, IdleAndHalfOpenRawConnectionsDoNotBlockService) {
  // Connections that send nothing, half a preface, or the preface and then nothing, held open while a client
  // is served; then dropped abruptly.
  std::vector<std::unique_ptr<RawSocket>> held;
  for (const std::string& start : {std::string(), Http2Preface().substr(0, 10), Http2Preface()}) {
    for (int i = 0; i < 8; ++i) {
      held.push_back(std::make_unique<RawSocket>(server_->tcp_target()));
      ASSERT_TRUE(held.back()->ok());
      if (!start.empty()) held.back()->Send(start);
    }
  }
  ExpectHealthyAndCorrect("with 24 idle or half-open raw connections");
  held.clear();
  ExpectHealthyAndCorrect("after dropping them");
}

}  // namespace
}  // namespace samplerd
