// `samplerctl record` against one samplerd process and `samplerctl replay` against others (issue 7): a fresh
// server answers a recording identically; a tampered recording, or a server with other profiles, is reported
// with a diff and exit code 1.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "clients/cpp/record_replay.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/service/server_process.h"

namespace samplerd::client {
namespace {

using ::samplerd::testing::CommandResult;
using ::samplerd::testing::RunCommand;
using ::samplerd::testing::ServerProcess;
using ::testing::HasSubstr;

// Runs samplerctl with `args`; returns its exit code and puts stdout + stderr in `*output`.
int Samplerctl(const std::string& args, std::string* output) {
  CommandResult result = RunCommand(SAMPLERCTL_BINARY, args);
  *output = std::move(result.output);
  return result.exit_code;
}

std::string TempPath(const std::string& name) {
  return "/tmp/samplerd-replay-test-" + std::to_string(getpid()) + "-" + name;
}

class RecordReplayTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (const std::string& f : files_) unlink(f.c_str());
  }
  std::string Temp(const std::string& name) {
    files_.push_back(TempPath(name));
    return files_.back();
  }
  std::vector<std::string> files_;
};

TEST_F(RecordReplayTest, RecordingReplaysIdenticallyOnAFreshServer) {
  const std::string file = Temp("gen.rec");
  std::string output;
  {
    std::unique_ptr<ServerProcess> recorder = ServerProcess::Start();
    ASSERT_NE(recorder, nullptr);
    ASSERT_EQ(Samplerctl("--target " + recorder->tcp_target() + " record --out " + file +
                             " --steps 60 --sequences 3 --seed 11",
                         &output),
              0)
        << output;
    EXPECT_THAT(output, HasSubstr("recorded 60 requests"));
  }  // the recording server is gone

  absl::StatusOr<std::vector<Exchange>> recording = ReadRecording(file);
  ASSERT_TRUE(recording.ok()) << recording.status();
  ASSERT_EQ(recording->size(), 60u);
  std::set<int> regimes;
  for (const auto& [request, response] : *recording) {
    ASSERT_EQ(request.steps_size(), 3);
    ASSERT_EQ(response.results_size(), 3);
    for (const v1::StepResult& r : response.results()) {
      EXPECT_FALSE(r.has_error());
      regimes.insert(r.regime());
    }
  }
  EXPECT_GE(regimes.size(), 3u) << "the synthetic model visits several regimes";

  std::unique_ptr<ServerProcess> fresh = ServerProcess::Start();
  ASSERT_NE(fresh, nullptr);
  EXPECT_EQ(Samplerctl("--target " + fresh->unix_target() + " replay " + file, &output), 0) << output;
  EXPECT_THAT(output, HasSubstr("60 requests, 180 step results identical"));
}

TEST_F(RecordReplayTest, ServerPickedSeedsReplayToo) {
  const std::string file = Temp("seedless.rec");
  std::string output;
  std::unique_ptr<ServerProcess> recorder = ServerProcess::Start();
  ASSERT_NE(recorder, nullptr);
  ASSERT_EQ(Samplerctl("--target " + recorder->tcp_target() + " record --out " + file +
                           " --steps 20 --sequences 2 --seed 0 --profile fixed",
                       &output),
            0)
      << output;
  absl::StatusOr<std::vector<Exchange>> recording = ReadRecording(file);
  ASSERT_TRUE(recording.ok()) << recording.status();
  EXPECT_EQ(recording->front().first.steps(0).seed(), 0u);
  EXPECT_NE(recording->front().second.results(0).seed(), 0u);

  std::unique_ptr<ServerProcess> fresh = ServerProcess::Start();
  ASSERT_NE(fresh, nullptr);
  EXPECT_EQ(Samplerctl("--target " + fresh->tcp_target() + " replay " + file, &output), 0) << output;
}

TEST_F(RecordReplayTest, ATamperedRecordingFailsWithADiffNamingTheField) {
  const std::string file = Temp("orig.rec");
  const std::string tampered = Temp("tampered.rec");
  std::string output;
  std::unique_ptr<ServerProcess> server = ServerProcess::Start();
  ASSERT_NE(server, nullptr);
  ASSERT_EQ(
      Samplerctl("--target " + server->tcp_target() + " record --out " + file + " --steps 10 --sequences 2", &output),
      0)
      << output;
  absl::StatusOr<std::vector<Exchange>> recording = ReadRecording(file);
  ASSERT_TRUE(recording.ok()) << recording.status();
  v1::StepResult* r = (*recording)[7].second.mutable_results(1);
  r->set_token(r->token() + 1);
  ASSERT_TRUE(WriteRecording(tampered, *recording).ok());

  EXPECT_EQ(Samplerctl("--target " + server->tcp_target() + " replay " + tampered, &output), 1) << output;
  EXPECT_THAT(output, HasSubstr("request 7, step result 1"));
  EXPECT_THAT(output, HasSubstr("token"));
  EXPECT_THAT(output, HasSubstr("1 of 20 step results differ"));
}

TEST_F(RecordReplayTest, AServerWithOtherProfilesIsReportedAsDifferent) {
  const std::string file = Temp("default.rec");
  const std::string config = Temp("profiles.json");
  std::string output;
  {
    std::unique_ptr<ServerProcess> server = ServerProcess::Start();
    ASSERT_NE(server, nullptr);
    ASSERT_EQ(Samplerctl("--target " + server->tcp_target() + " record --out " + file + " --steps 15", &output), 0)
        << output;
  }
  // The same built-ins, but "fixed" is the default: the recording used the server's default profile.
  FILE* f = std::fopen(config.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs(R"({"profiles": [], "defaultProfile": "fixed"})", f);
  std::fclose(f);
  std::unique_ptr<ServerProcess> other = ServerProcess::Start({"--config", config});
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(Samplerctl("--target " + other->tcp_target() + " replay " + file, &output), 1) << output;
  EXPECT_THAT(output, HasSubstr("profile"));
}

TEST_F(RecordReplayTest, UnreadableRecordingsExitTwo) {
  const std::string garbage = Temp("garbage.rec");
  FILE* f = std::fopen(garbage.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("not a recording", f);
  std::fclose(f);
  std::string output;
  EXPECT_EQ(Samplerctl("--target 127.0.0.1:1 replay " + garbage, &output), 2) << output;
  EXPECT_THAT(output, HasSubstr("not a samplerd recording"));

  // A valid header followed by a truncated record.
  const std::string truncated = Temp("truncated.rec");
  f = std::fopen(truncated.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("samplerd-rec-v1\n\x7f\x0a", f);
  std::fclose(f);
  EXPECT_EQ(Samplerctl("--target 127.0.0.1:1 replay " + truncated, &output), 2) << output;
  EXPECT_THAT(output, HasSubstr("request 0 is truncated"));
}

}  // namespace
}  // namespace samplerd::client
