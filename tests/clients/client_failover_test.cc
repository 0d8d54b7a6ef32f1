// Pins the C++ client's failover: a session given several endpoints whose server dies (SIGKILL) or drains
// (SIGTERM) mid-generation resumes on another, and because the session owns the seed, the step index and the
// recent tokens, the tokens equal those of an uninterrupted run.
#include <csignal>
#include <functional>
#include <memory>
#include <random>
#include <vector>

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

}  // namespace
}  // namespace samplerd::client
