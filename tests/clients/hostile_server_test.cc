// The C++ client against servers that misbehave: answers that belong to no step, answers that never come, a peer
// that stops reading, a shared-memory control socket that never answers. Each must end in a status, with the
// sessions unchanged, never in a wrong token, a crash or a host held for good.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "clients/cpp/samplerd_client.h"
#include "clients/cpp/shm_plane.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "samplerd/v1/sampler.grpc.pb.h"
#include "tests/service/server_process.h"

namespace samplerd::client {
namespace {

using ::samplerd::testing::ServerProcess;

// How the fake answers.
enum class Misbehaviour {
  kAnswerTheNextStep,     // echoes step + 1
  kAnswerTwice,           // every answer is sent twice
  kRefuseWithCodeZero,    // a refusal whose code is OK
  kNeverAnswer,           // reads every request, answers none
  kNeverRead,             // reads nothing: the client's writes stop on flow control
  kSwapTheLastTwoResults  // SampleOnce answers a batch with its last two results swapped
};

v1::StepResult AnswerTo(const v1::Step& step) {
  v1::StepResult r;
  r.set_sequence_id(step.sequence_id());
  r.set_step(step.step());
  r.set_token(static_cast<int32_t>(step.step() + 7));
  r.set_seed(step.seed() == 0 ? 99 : step.seed());
  return r;
}

class FakeSampler final : public v1::Sampler::Service {
 public:
  explicit FakeSampler(Misbehaviour how) : how_(how) {}

  grpc::Status Sample(grpc::ServerContext* context,
                      grpc::ServerReaderWriter<v1::SampleResponse, v1::SampleRequest>* stream) override {
    if (how_ == Misbehaviour::kNeverRead) {
      while (!context->IsCancelled()) usleep(10 * 1000);
      return grpc::Status::CANCELLED;
    }
    v1::SampleRequest request;
    while (stream->Read(&request)) {
      if (how_ == Misbehaviour::kNeverAnswer) continue;
      v1::SampleResponse response;
      for (const v1::Step& step : request.steps()) {
        v1::StepResult* r = response.add_results();
        *r = AnswerTo(step);
        if (how_ == Misbehaviour::kAnswerTheNextStep) r->set_step(step.step() + 1);
        if (how_ == Misbehaviour::kRefuseWithCodeZero) {
          r->mutable_error()->set_code(0);
          r->mutable_error()->set_message("not an error");
        }
      }
      if (!stream->Write(response)) break;
      if (how_ == Misbehaviour::kAnswerTwice && !stream->Write(response)) break;
    }
    return grpc::Status::OK;
  }

  grpc::Status SampleOnce(grpc::ServerContext*, const v1::SampleRequest* request,
                          v1::SampleResponse* response) override {
    for (const v1::Step& step : request->steps()) *response->add_results() = AnswerTo(step);
    if (how_ == Misbehaviour::kSwapTheLastTwoResults && response->results_size() >= 2) {
      response->mutable_results()->SwapElements(response->results_size() - 2, response->results_size() - 1);
    }
    return grpc::Status::OK;
  }

 private:
  const Misbehaviour how_;
};

// A FakeSampler on a loopback port of its own.
class FakeServer {
 public:
  explicit FakeServer(Misbehaviour how) : service_(how) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
  }
  ~FakeServer() { server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1)); }

  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  FakeSampler service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

std::vector<float> Logits(size_t vocab) {
  std::vector<float> logits(vocab, 0.0f);
  logits[3] = 40.0f;  // every profile draws token 3
  return logits;
}

TEST(HostileServer, AnAnswerForAnotherStepIsAnErrorAndTheSessionDoesNotAdvance) {
  FakeServer fake(Misbehaviour::kAnswerTheNextStep);
  Client client(fake.target());
  std::unique_ptr<Session> session = client.OpenSession({});
  absl::StatusOr<StepResult> r = session->Step(Logits(100));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal) << r.status();
  EXPECT_EQ(session->step(), 0u);
  EXPECT_TRUE(session->recent_tokens().empty());
}

TEST(HostileServer, ADuplicatedAnswerIsNotTakenForTheNextStepAndCloseReturns) {
  FakeServer fake(Misbehaviour::kAnswerTwice);
  Client client(fake.target());
  std::unique_ptr<Session> session = client.OpenSession({});
  absl::StatusOr<StepResult> first = session->Step(Logits(100));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->token, 7);
  // The stream now holds step 0's answer a second time: it must not become step 1's.
  absl::StatusOr<StepResult> second = session->Step(Logits(100));
  EXPECT_EQ(second.status().code(), absl::StatusCode::kInternal) << second.status();
  EXPECT_EQ(session->step(), 1u);
  EXPECT_EQ(session->recent_tokens(), std::vector<int32_t>{7});
  // A fresh stream answers the step again.
  absl::StatusOr<StepResult> again = session->Step(Logits(100));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->token, 8);
  // Its duplicate is unread when the session closes: Close must report it, not wait on it.
  EXPECT_EQ(session->Close().code(), absl::StatusCode::kInternal);
}

TEST(HostileServer, ARefusalWithoutAnErrorCodeIsAnError) {
  FakeServer fake(Misbehaviour::kRefuseWithCodeZero);
  Client client(fake.target());
  std::unique_ptr<Session> session = client.OpenSession({});
  absl::StatusOr<StepResult> r = session->Step(Logits(100));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal) << r.status();
  EXPECT_EQ(session->step(), 0u);
}

// One step of a session whose endpoints are a fake that behaves as `how`, then a real samplerd, with a 1 s step
// timeout: the real server must answer it, after at least one failover.
void ExpectTheStepToFailOverFrom(Misbehaviour how, const TensorRef& logits,
                                 const std::optional<TensorRef>& attention = std::nullopt) {
  FakeServer fake(how);
  std::unique_ptr<ServerProcess> real = ServerProcess::Start();
  ASSERT_NE(real, nullptr);
  ClientOptions options;
  options.step_timeout = absl::Seconds(1);
  Client client(std::vector<std::string>{fake.target(), real->tcp_target()}, options);
  std::unique_ptr<Session> session = client.OpenSession({});
  absl::StatusOr<StepResult> r = session->Step(logits, attention);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->token, 3);
  EXPECT_GE(session->failovers(), 1);
}

TEST(HostileServer, AServerThatNeverAnswersTimesOutAndTheStepMovesToTheNextEndpoint) {
  ExpectTheStepToFailOverFrom(Misbehaviour::kNeverAnswer, Logits(100));
}

TEST(HostileServer, AServerThatStopsReadingTimesOutTheBlockedWrite) {
  // 20 MB: more than any flow-control window lets through unread.
  const std::vector<float> attention(32 * 131072, 0.0f);
  const std::vector<int64_t> shape = {32, 131072};
  ExpectTheStepToFailOverFrom(Misbehaviour::kNeverRead, Logits(1 << 20), TensorRef(attention, shape));
}

TEST(HostileServer, EveryAttemptTimingOutIsDeadlineExceeded) {
  FakeServer fake(Misbehaviour::kNeverAnswer);
  ClientOptions options;
  options.step_timeout = absl::Milliseconds(200);
  options.failover_timeout = absl::Milliseconds(500);
  Client client(fake.target(), options);
  std::unique_ptr<Session> session = client.OpenSession({});
  absl::StatusOr<StepResult> r = session->Step(Logits(100));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_GE(session->failovers(), 1);
  EXPECT_EQ(session->step(), 0u);
}

TEST(HostileServer, ABatchWithAnAnswerOutOfPlaceAdvancesNoSession) {
  FakeServer fake(Misbehaviour::kSwapTheLastTwoResults);
  Client client(fake.target());
  std::vector<std::unique_ptr<Session>> sessions;
  std::vector<float> logits = Logits(100);
  std::vector<BatchItem> items;
  for (int i = 0; i < 3; ++i) {
    SessionOptions options;
    options.sequence_id = "s" + std::to_string(i);
    sessions.push_back(client.OpenSession(options));
    items.push_back({sessions.back().get(), logits});
  }
  absl::StatusOr<std::vector<absl::StatusOr<StepResult>>> batch = client.SampleBatch(items);
  EXPECT_EQ(batch.status().code(), absl::StatusCode::kInternal) << batch.status();
  for (const auto& s : sessions) {
    EXPECT_EQ(s->step(), 0u) << s->sequence_id();
    EXPECT_TRUE(s->recent_tokens().empty()) << s->sequence_id();
  }
}

TEST(HostileServer, AControlSocketThatNeverAnswersTimesOut) {
  const std::string path = ::testing::TempDir() + "/hostile-shm-" + std::to_string(getpid()) + ".sock";
  unlink(path.c_str());
  const int listener = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  struct sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.data(), path.size());
  ASSERT_EQ(bind(listener, reinterpret_cast<const struct sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(listener, 4), 0);

  // Connected (the kernel accepts into the backlog) and never answered.
  absl::StatusOr<int> sock = ShmConnect(path, absl::Milliseconds(300));
  ASSERT_TRUE(sock.ok()) << sock.status();
  v1::ShmControlRequest request;
  request.mutable_register_()->set_name("held");
  absl::StatusOr<v1::ShmControlResponse> answer = ShmControlExchange(*sock, request, -1);
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kDeadlineExceeded) << answer.status();
  close(*sock);
  close(listener);
  unlink(path.c_str());
}

}  // namespace
}  // namespace samplerd::client
