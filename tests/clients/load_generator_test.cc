// `samplerctl bench` (clients/cpp/load_generator.h): short runs that check what the benchmarks and the docs read
// (the --json keys, the step accounting, the no-compute switch), never how fast anything is.
#include "clients/cpp/load_generator.h"

#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/service/server_process.h"
#include "tests/service/test_certificates.h"

#ifndef SAMPLERCTL_BINARY
#error "SAMPLERCTL_BINARY must name the samplerctl executable"
#endif

namespace samplerd::client {
namespace {

using ::samplerd::testing::CommandResult;
using ::samplerd::testing::RunCommand;
using ::samplerd::testing::ServerProcess;
using ::samplerd::testing::TempDir;
using ::testing::HasSubstr;

CommandResult RunSamplerctl(const std::string& args) { return RunCommand(SAMPLERCTL_BINARY, args); }

// The keys issue 3 requires of --json, with their types.
void ExpectBenchJson(const std::string& out, const std::string& workload, const std::string& dtype, int streams,
                     const std::string& mode) {
  nlohmann::json j;
  ASSERT_NO_THROW(j = nlohmann::json::parse(out)) << out;
  ASSERT_TRUE(j.is_object()) << out;
  for (const char* key :
       {"workload", "dtype", "streams", "steps", "steps_per_sec", "p50_us", "p99_us", "core_us_p50"}) {
    EXPECT_TRUE(j.contains(key)) << "missing " << key << " in " << out;
  }
  EXPECT_EQ(j.value("workload", ""), workload);
  EXPECT_EQ(j.value("dtype", ""), dtype);
  EXPECT_EQ(j.value("streams", 0), streams);
  EXPECT_EQ(j.value("mode", ""), mode);
  EXPECT_TRUE(j["steps"].is_number_integer());
  EXPECT_GT(j.value("steps", 0), 0);
  EXPECT_GT(j.value("steps_per_sec", 0.0), 0.0);
  EXPECT_GT(j.value("p50_us", 0.0), 0.0);
  EXPECT_GE(j.value("p99_us", 0.0), j.value("p50_us", 0.0));
  EXPECT_TRUE(j["core_us_p50"].is_number());
}

TEST(SamplerctlBench, InProcessJsonHasTheKeys) {
  const CommandResult r = RunSamplerctl("bench --in-process --workload S --steps 8 --warmup 1 --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ExpectBenchJson(r.out, "S", "f32", 1, "in-process");
  EXPECT_GT(nlohmann::json::parse(r.out).value("core_us_p50", 0.0), 0.0);
}

TEST(SamplerctlBench, TextOutputNamesTheFigures) {
  const CommandResult r = RunSamplerctl("bench --in-process --workload S --dtype bf16 --steps 4 --warmup 0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.out, HasSubstr("workload S"));
  EXPECT_THAT(r.out, HasSubstr("bf16"));
  EXPECT_THAT(r.out, HasSubstr("steps/s"));
  EXPECT_THAT(r.out, HasSubstr("p50"));
  EXPECT_THAT(r.out, HasSubstr("p99"));
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr("\r["))) << "no progress bar when stderr is not a terminal";
}

TEST(SamplerctlBench, BadWorkloadOrDtypeIsAUsageError) {
  CommandResult r = RunSamplerctl("bench --in-process --workload M --steps 1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("--workload"));
  r = RunSamplerctl("bench --in-process --dtype f16 --steps 1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("--dtype"));
  r = RunSamplerctl("bench --in-process --no-compute --steps 1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("--no-compute"));
}

class SamplerctlBenchServer : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = ServerProcess::Start({"--allow_no_compute", "--metrics_listen", ""});
    ASSERT_NE(server_, nullptr);
  }
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(SamplerctlBenchServer, GrpcJsonHasTheKeysAndTheServersCoreTime) {
  const CommandResult r = RunSamplerctl("bench --target " + server_->tcp_target() +
                                        " --workload S --streams 2 --steps 6 --warmup 1 --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ExpectBenchJson(r.out, "S", "f32", 2, "grpc");
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.value("steps", 0), 6);  // 2 streams x 3 requests x 1 step
  EXPECT_GT(j.value("core_us_p50", 0.0), 0.0) << "server_micros of a computed step";
}

TEST_F(SamplerctlBenchServer, BatchedWorkloadCountsStepsNotRequests) {
  const CommandResult r = RunSamplerctl("bench --target " + server_->unix_target() +
                                        " --workload B --dtype bf16 --steps 1 --warmup 0 --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ExpectBenchJson(r.out, "B", "bf16", 1, "grpc");
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.value("steps", 0), 32);  // rounded up to one whole request
  EXPECT_EQ(j.value("requests", 0), 1);
  EXPECT_EQ(j.value("steps_per_request", 0), 32);
}

TEST_F(SamplerctlBenchServer, NoComputeSkipsCore) {
  const CommandResult r = RunSamplerctl("bench --target " + server_->tcp_target() +
                                        " --workload S --steps 5 --warmup 1 --no-compute --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ExpectBenchJson(r.out, "S", "f32", 1, "grpc-no-compute");
  EXPECT_EQ(nlohmann::json::parse(r.out).value("core_us_p50", -1.0), 0.0);
}

TEST(SamplerctlBenchShm, StepsOnAStreamOrOnTheControlSocketRunCore) {
  const std::string shm_socket = "/tmp/samplerctl-bench-shm-" + std::to_string(getpid()) + ".sock";
  std::unique_ptr<ServerProcess> server = ServerProcess::Start({"--metrics_listen", "", "--shm_socket", shm_socket});
  ASSERT_NE(server, nullptr);
  for (const char* steps : {"stream", "control"}) {
    const CommandResult r = RunSamplerctl("bench --target " + server->unix_target() + " --shm " + shm_socket +
                                          " --shm-steps " + steps + " --workload B --steps 1 --warmup 1 --json");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    ExpectBenchJson(r.out, "B", "f32", 1, std::string(steps) == "control" ? "shm-control" : "grpc-shm");
    const nlohmann::json j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j.value("steps", 0), 32);
    EXPECT_GT(j.value("core_us_p50", 0.0), 0.0) << "server_micros of a computed step";
  }
  const CommandResult no_plane =
      RunSamplerctl("bench --target " + server->unix_target() + " --shm-steps control --steps 1 --json");
  EXPECT_EQ(no_plane.exit_code, 2) << no_plane.output;
  EXPECT_THAT(no_plane.output, HasSubstr("--shm"));
}

TEST(SamplerctlBenchSecurity, TlsAndTheTokenReachAServerThatRequiresThem) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  ASSERT_TRUE(testing::MakeCertificates(dir));
  std::ofstream(dir.File("tokens")) << "bench-secret\n";
  const std::string shm_socket = dir.File("shm.sock");
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(
      {"--metrics_listen", "", "--tls_cert", dir.File("server.pem"), "--tls_key", dir.File("server.key"),
       "--auth_token_file", dir.File("tokens"), "--shm_socket", shm_socket});
  ASSERT_NE(server, nullptr);
  const std::string tls = " --target " + server->tcp_target() + " --tls_ca " + dir.File("ca.pem");
  const std::string run = " bench --workload S --steps 2 --warmup 1 --json";

  const CommandResult both = RunSamplerctl(tls + " --token bench-secret" + run);
  ASSERT_EQ(both.exit_code, 0) << both.output;
  ExpectBenchJson(both.out, "S", "f32", 1, "grpc");
  const CommandResult no_token = RunSamplerctl(tls + run);
  EXPECT_EQ(no_token.exit_code, 1) << no_token.output;
  EXPECT_THAT(no_token.output, HasSubstr("UNAUTHENTICATED"));
  const CommandResult plaintext = RunSamplerctl(" --target " + server->tcp_target() + " --token bench-secret" + run);
  EXPECT_EQ(plaintext.exit_code, 1) << plaintext.output << " (a plaintext client cannot talk to a TLS listener)";

  // The control socket takes the same token.
  const std::string shm = " --target " + server->unix_target() + run + " --shm " + shm_socket + " --shm-steps control";
  const CommandResult control = RunSamplerctl(" --token bench-secret" + shm);
  ASSERT_EQ(control.exit_code, 0) << control.output;
  ExpectBenchJson(control.out, "S", "f32", 1, "shm-control");
  const CommandResult control_no_token = RunSamplerctl(shm);
  EXPECT_EQ(control_no_token.exit_code, 1) << control_no_token.output;
  EXPECT_THAT(control_no_token.output, HasSubstr("UNAUTHENTICATED"));
}

TEST(SamplerctlBenchRefused, NoComputeNeedsTheServersPermission) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start({"--metrics_listen", ""});
  ASSERT_NE(server, nullptr);
  const CommandResult r =
      RunSamplerctl("bench --target " + server->tcp_target() + " --workload S --steps 2 --no-compute --json");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("FAILED_PRECONDITION"));
  EXPECT_THAT(r.output, HasSubstr("--allow_no_compute"));
}

TEST(LoadGenerator, ParsesWorkloadsAndDtypes) {
  EXPECT_EQ(*ParseWorkload("xl"), Workload::kXL);
  EXPECT_EQ(*ParseWorkload("B"), Workload::kB);
  EXPECT_EQ(ShapeOf(Workload::kB).steps_per_request, 32);
  EXPECT_EQ(ShapeOf(Workload::kL).vocab, 128256);
  EXPECT_EQ(ShapeOf(Workload::kXL).heads * ShapeOf(Workload::kXL).kv_len, 64 * 8192);
  EXPECT_EQ(*ParseDType("BF16"), v1::DTYPE_BF16);
  EXPECT_FALSE(ParseDType("f16").ok());
}

TEST(LoadGenerator, InProcessReportsCoreTimePerStep) {
  LoadOptions options;
  options.in_process = true;
  options.workload = Workload::kS;
  options.streams = 2;
  options.steps = 3;  // rounded up to 2 requests per stream
  options.warmup_requests = 0;
  int64_t last_progress = -1;
  options.progress = [&](int64_t done, int64_t total) {
    EXPECT_EQ(total, 4);
    last_progress = done;
  };
  absl::StatusOr<LoadReport> report = RunLoad(options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->steps, 4);
  EXPECT_EQ(report->requests, 4);
  EXPECT_EQ(last_progress, 4);
  EXPECT_GT(report->core_us_p50, 0.0);
  EXPECT_GT(report->request_bytes, 32000 * 4);
  EXPECT_THAT(ReportJson(*report), HasSubstr("\"mode\": \"in-process\""));
}

}  // namespace
}  // namespace samplerd::client
