// Pins the C++ client's failover: a session given several endpoints whose server dies (SIGKILL) or drains
// (SIGTERM) mid-generation resumes on another, and because the session owns the seed, the step index and the
// recent tokens, the tokens equal those of an uninterrupted run. A step or batch whose only replica is down waits for
// it to come back within ClientOptions::failover_timeout, and gives up with UNAVAILABLE after it.
#include <unistd.h>

#include <csignal>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"

#include "clients/cpp/samplerd_client.h"
#include "gtest/gtest.h"
#include "tests/service/server_process.h"

namespace samplerd::client {
namespace {

using ::samplerd::testing::ServerProcess;

std::vector<float> Logits(uint64_t step) {
  std::mt19937 rng(static_cast<uint32_t>(step * 7919 + 1));
  std::normal_distribution<float> normal(0.0f, 1.5f);
  std::vector<float> logits(3000);
  for (float& z : logits) z = normal(rng);
  return logits;
}

// 60 steps of one sequence; `fault` (if set) runs before step 25.
std::vector<int32_t> Generate(Client* client, const std::function<void()>& fault, int* failovers) {
  SessionOptions options;
  options.sequence_id = "failover-seq";
  options.seed = 4242;
  options.profile = "fixed";
  options.prompt_tail = {5, 6, 7};
  std::unique_ptr<Session> session = client->OpenSession(options);
  StepOptions step_options;
  v1::SamplingParams params;
  params.set_temperature(1.0f);
  params.set_repetition_penalty(1.3f);  // recent tokens matter: they must survive the failover
  step_options.params = params;
  std::vector<int32_t> tokens;
  for (uint64_t step = 0; step < 60; ++step) {
    if (step == 25 && fault) fault();
    absl::StatusOr<StepResult> r = session->Step(Logits(step), std::nullopt, step_options);
    EXPECT_TRUE(r.ok()) << "step " << step << ": " << r.status();
    if (!r.ok()) break;
    tokens.push_back(r->token);
  }
  *failovers = session->failovers();
  return tokens;
}

class ClientFailoverTest : public ::testing::TestWithParam<int> {};

TEST_P(ClientFailoverTest, SessionResumesOnAnotherEndpointWithIdenticalTokens) {
  std::unique_ptr<ServerProcess> reference_server = ServerProcess::Start();
  ASSERT_NE(reference_server, nullptr);
  Client reference_client(reference_server->tcp_target());
  int unused = 0;
  const std::vector<int32_t> expected = Generate(&reference_client, nullptr, &unused);
  ASSERT_EQ(expected.size(), 60u);

  std::unique_ptr<ServerProcess> first = ServerProcess::Start({"--drain_seconds", "1"});
  std::unique_ptr<ServerProcess> second = ServerProcess::Start();
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  Client client(std::vector<std::string>{first->tcp_target(), second->unix_target()});
  int failovers = 0;
  const int signal = GetParam();
  const std::vector<int32_t> got = Generate(
      &client, [&] { first->Stop(signal, std::chrono::seconds(20)); }, &failovers);
  EXPECT_EQ(got, expected);
  EXPECT_GE(failovers, 1) << "the first server was stopped: the session must have moved";
}

INSTANTIATE_TEST_SUITE_P(Signals, ClientFailoverTest, ::testing::Values(SIGKILL, SIGTERM),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return info.param == SIGKILL ? std::string("Killed") : std::string("Drained");
                         });

TEST(ClientFailoverTest, RejectedStepsAreNotRetriedAndKeepTheirField) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start();
  ASSERT_NE(server, nullptr);
  Client client(std::vector<std::string>{server->tcp_target(), server->unix_target()});
  std::unique_ptr<Session> session = client.OpenSession({});
  StepOptions options;
  v1::SamplingParams params;
  params.set_top_p(1.5f);
  options.params = params;
  absl::StatusOr<StepResult> r = session->Step(Logits(0), std::nullopt, options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RejectedField(r.status()), "params.top_p");
  EXPECT_EQ(session->failovers(), 0);
}

// A unix socket path nothing listens on yet, for a replica that starts while a call waits for it.
std::string RestartingReplicaSocket(const std::string& name) {
  return "/tmp/samplerd-failover-" + name + "-" + std::to_string(getpid()) + ".sock";
}

// 3 s of failover for a replica back after 0.7 s: the client must take up the new connection during its backoff,
// not when gRPC's backup poller (every 5 s) would.
ClientOptions RestartOptions() {
  ClientOptions options;
  options.failover_timeout = absl::Seconds(3);
  return options;
}

// `call` runs in its own thread against a replica that is down when it starts and comes up (listening on
// `socket_path`) a moment later: the replica restarting within the failover timeout. The server starts in this
// thread because the child dies with the thread that forked it (PR_SET_PDEATHSIG).
void CallWhileTheReplicaRestarts(const std::string& socket_path, const std::function<void()>& call) {
  unlink(socket_path.c_str());
  std::thread caller(call);
  absl::SleepFor(absl::Milliseconds(700));
  std::unique_ptr<ServerProcess> replica = ServerProcess::Start({"--listen", "unix:" + socket_path});
  caller.join();
  ASSERT_NE(replica, nullptr);
  unlink(socket_path.c_str());
}

TEST(ClientFailoverTest, AStepWaitsForAReplicaThatRestartsWithinTheFailoverTimeout) {
  const std::string socket_path = RestartingReplicaSocket("step");
  Client client("unix:" + socket_path, RestartOptions());
  std::unique_ptr<Session> session = client.OpenSession({});
  absl::StatusOr<StepResult> r;
  CallWhileTheReplicaRestarts(socket_path, [&] { r = session->Step(Logits(0)); });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(session->step(), 1u);
  EXPECT_GE(session->failovers(), 1) << "the first attempts found no server";
}

TEST(ClientFailoverTest, ABatchWaitsForAReplicaThatRestartsWithinTheFailoverTimeout) {
  const std::string socket_path = RestartingReplicaSocket("batch");
  Client client("unix:" + socket_path, RestartOptions());
  std::unique_ptr<Session> a = client.OpenSession({});
  std::unique_ptr<Session> b = client.OpenSession({});
  const std::vector<float> logits = Logits(1);
  const BatchItem items[] = {{a.get(), logits}, {b.get(), logits}};
  absl::StatusOr<std::vector<absl::StatusOr<StepResult>>> batch;
  CallWhileTheReplicaRestarts(socket_path, [&] { batch = client.SampleBatch(items); });
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->size(), 2u);
  EXPECT_TRUE((*batch)[0].ok() && (*batch)[1].ok());
  EXPECT_EQ(a->step(), 1u);
  EXPECT_EQ(b->step(), 1u);
}

TEST(ClientFailoverTest, EveryEndpointDownIsUnavailableOnceTheFailoverTimeoutHasPassed) {
  ClientOptions options;
  options.failover_timeout = absl::Milliseconds(300);
  Client client(std::vector<std::string>{"unix:" + RestartingReplicaSocket("none-a"),
                                         "unix:" + RestartingReplicaSocket("none-b")},
                options);
  std::unique_ptr<Session> session = client.OpenSession({});
  const absl::Time start = absl::Now();
  absl::StatusOr<StepResult> r = session->Step(Logits(0));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_GE(absl::Now() - start, options.failover_timeout) << "given up before the failover timeout";
  EXPECT_GE(session->failovers(), 2) << "each endpoint fails at once, so both were tried again";
  EXPECT_EQ(session->step(), 0u);
}

}  // namespace
}  // namespace samplerd::client
