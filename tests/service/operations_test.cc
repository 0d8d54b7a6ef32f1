// Operations of the real samplerd binary: TLS and mutual TLS, bearer tokens, Prometheus metrics, JSON logs with
// trace context, SIGHUP reloads, connection aging, the drain on SIGTERM and the release of cancelled streams.
// Certificates are made with the openssl command at test time (tests/service/test_certificates.h).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "samplerd/v1/sampler.grpc.pb.h"
#include "service/logging.h"
#include "tests/service/http2_frames.h"
#include "tests/service/server_process.h"
#include "tests/service/test_certificates.h"

namespace samplerd {
namespace {

using ::samplerd::testing::ConnectTcp;
using ::samplerd::testing::GrpcCallHeaders;
using ::samplerd::testing::Http2Frame;
using ::samplerd::testing::Http2Preface;
using ::samplerd::testing::Http2Reader;
using ::samplerd::testing::kHttp2Data;
using ::samplerd::testing::kHttp2EndHeaders;
using ::samplerd::testing::kHttp2EndStream;
using ::samplerd::testing::kHttp2Headers;
using ::samplerd::testing::kHttp2Settings;
using ::samplerd::testing::ListProfilesOnANewConnection;
using ::samplerd::testing::LiteralHeaderBlock;
using ::samplerd::testing::MakeCertificates;
using ::samplerd::testing::ServerProcess;
using ::samplerd::testing::TempDir;
using ::testing::HasSubstr;
using SampleStream = grpc::ClientReaderWriter<v1::SampleRequest, v1::SampleResponse>;
using Clock = std::chrono::steady_clock;

constexpr char kTraceparent[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

// ---------------------------------------------------------------------------------------------------------------
// Helpers

std::string ReadFile(const std::string& path) {
  std::ifstream file(path);
  std::stringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

void WriteFile(const std::string& path, const std::string& contents) {
  // Written aside and renamed, so a reload never sees half a file.
  const std::string staging = path + ".new";
  std::ofstream(staging) << contents;
  std::filesystem::rename(staging, path);
}

void FillF32(const std::vector<float>& values, v1::Tensor* tensor) {
  tensor->set_dtype(v1::DTYPE_F32);
  tensor->clear_shape();
  tensor->add_shape(static_cast<int64_t>(values.size()));
  tensor->set_data(values.data(), values.size() * sizeof(float));
}

// A valid step: N(0, 1) logits over `vocab` tokens, fixed by (sequence_id, step).
v1::Step MakeStep(const std::string& sequence_id, uint64_t step, int vocab = 1000, const std::string& profile = "") {
  std::mt19937 rng(static_cast<uint32_t>(std::hash<std::string>()(sequence_id) ^ (step * 2654435761u)));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> logits(static_cast<size_t>(vocab));
  for (float& z : logits) z = normal(rng);
  v1::Step s;
  s.set_sequence_id(sequence_id);
  s.set_step(step);
  s.set_seed(7);
  s.set_profile(profile);
  FillF32(logits, s.mutable_logits());
  return s;
}

v1::SampleRequest OneStepRequest(const std::string& sequence_id = "ops") {
  v1::SampleRequest request;
  *request.add_steps() = MakeStep(sequence_id, 0);
  return request;
}

std::shared_ptr<grpc::Channel> Plaintext(const std::string& target) {
  return grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
}

// A TLS channel trusting `ca`; with a client certificate when `cert` is given.
std::shared_ptr<grpc::Channel> Tls(const std::string& target, const TempDir& dir, const std::string& ca,
                                   const std::string& cert = "") {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = ReadFile(dir.File(ca + ".pem"));
  if (!cert.empty()) {
    options.pem_cert_chain = ReadFile(dir.File(cert + ".pem"));
    options.pem_private_key = ReadFile(dir.File(cert + ".key"));
  }
  return grpc::CreateChannel(target, grpc::SslCredentials(options));
}

// SampleOnce with one valid step; `token` non-empty adds the bearer token, `traceparent` the trace context.
grpc::Status CallSampleOnce(grpc::Channel* channel, const std::string& token = "", const std::string& traceparent = "",
                            v1::SampleResponse* response = nullptr) {
  auto stub = v1::Sampler::NewStub(std::shared_ptr<grpc::Channel>(channel, [](grpc::Channel*) {}));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  if (!traceparent.empty()) context.AddMetadata("traceparent", traceparent);
  v1::SampleResponse local;
  return stub->SampleOnce(&context, OneStepRequest(), response != nullptr ? response : &local);
}

grpc::Status CallHealth(grpc::Channel* channel, grpc::health::v1::HealthCheckResponse* response) {
  auto stub = grpc::health::v1::Health::NewStub(std::shared_ptr<grpc::Channel>(channel, [](grpc::Channel*) {}));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return stub->Check(&context, grpc::health::v1::HealthCheckRequest(), response);
}

// GET http://<address><path> over a plain socket (HTTP/1.0, so the server closes when done). The body, or empty
// when the request failed or a read waited longer than `timeout`.
std::string HttpGet(const std::string& address, const std::string& path,
                    std::chrono::seconds timeout = std::chrono::seconds(30)) {
  const int fd = ConnectTcp(address, timeout);
  if (fd < 0) return "";
  std::string reply;
  {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: " + address + "\r\n\r\n";
    if (write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buffer[8192];
      ssize_t n;
      while ((n = read(fd, buffer, sizeof(buffer))) > 0) reply.append(buffer, static_cast<size_t>(n));
      if (n < 0) reply.clear();  // timed out
    }
  }
  close(fd);
  const size_t body = reply.find("\r\n\r\n");
  if (reply.rfind("HTTP/1.", 0) != 0 || reply.find(" 200 ") == std::string::npos || body == std::string::npos) {
    return "";
  }
  return reply.substr(body + 4);
}

// The value of the first sample of `name` whose labels include `labels`, in Prometheus text format; NaN when
// there is none.
double MetricValue(const std::string& exposition, const std::string& name,
                   const std::map<std::string, std::string>& labels = {}) {
  std::istringstream lines(exposition);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t name_end = line.find_first_of("{ ");
    if (name_end == std::string::npos || line.substr(0, name_end) != name) continue;
    bool match = true;
    for (const auto& [key, value] : labels) {
      match = match && line.find(key + "=\"" + value + "\"") != std::string::npos;
    }
    if (!match) continue;
    return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return std::nan("");
}

// Polls `condition` every 20 ms until it holds or `timeout` passes; whether it held.
bool WaitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return condition();
}

// ---------------------------------------------------------------------------------------------------------------
// TLS

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    ASSERT_TRUE(MakeCertificates(dir_));
  }
  TempDir dir_;
};

TEST_F(TlsTest, TlsPortServesTlsClientsAndRefusesPlaintextOnes) {
  const std::string log = dir_.File("samplerd.log");
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(
      {"--tls_cert", dir_.File("server.pem"), "--tls_key", dir_.File("server.key"), "--log_format", "json"}, log);
  ASSERT_NE(server, nullptr);

  v1::SampleResponse response;
  const grpc::Status tls = CallSampleOnce(Tls(server->tcp_target(), dir_, "ca").get(), "", "", &response);
  ASSERT_TRUE(tls.ok()) << tls.error_message();
  EXPECT_EQ(response.results_size(), 1);
  EXPECT_FALSE(response.results(0).has_error());

  // The TCP port speaks only TLS.
  const grpc::Status plaintext = CallSampleOnce(Plaintext(server->tcp_target()).get());
  EXPECT_EQ(plaintext.error_code(), grpc::StatusCode::UNAVAILABLE) << plaintext.error_message();
  // A client that does not trust the server's CA refuses it.
  const grpc::Status untrusted = CallSampleOnce(Tls(server->tcp_target(), dir_, "other-ca").get());
  EXPECT_EQ(untrusted.error_code(), grpc::StatusCode::UNAVAILABLE) << untrusted.error_message();
  // The unix socket stays plaintext.
  EXPECT_TRUE(CallSampleOnce(Plaintext(server->unix_target()).get()).ok());

  // gRPC's own report of the failed handshakes went through the JSON log too.
  ASSERT_EQ(server->Terminate(), 0);
  std::istringstream lines(ReadFile(log));
  std::string line;
  int handshake_errors = 0;
  while (std::getline(lines, line)) {
    nlohmann::json entry;
    ASSERT_NO_THROW(entry = nlohmann::json::parse(line)) << line;
    if (entry.value("msg", "").find("Handshake failed") != std::string::npos) ++handshake_errors;
  }
  EXPECT_GE(handshake_errors, 1) << ReadFile(log);
}

TEST_F(TlsTest, MutualTlsRefusesClientsWithoutACertificateFromTheClientCa) {
  std::unique_ptr<ServerProcess> server =
      ServerProcess::Start({"--tls_cert", dir_.File("server.pem"), "--tls_key", dir_.File("server.key"),
                            "--tls_client_ca", dir_.File("ca.pem")});
  ASSERT_NE(server, nullptr);

  const grpc::Status no_certificate = CallSampleOnce(Tls(server->tcp_target(), dir_, "ca").get());
  EXPECT_EQ(no_certificate.error_code(), grpc::StatusCode::UNAVAILABLE) << no_certificate.error_message();
  const grpc::Status rogue = CallSampleOnce(Tls(server->tcp_target(), dir_, "ca", "rogue").get());
  EXPECT_EQ(rogue.error_code(), grpc::StatusCode::UNAVAILABLE) << rogue.error_message();
  grpc::health::v1::HealthCheckResponse health;
  EXPECT_FALSE(CallHealth(Tls(server->tcp_target(), dir_, "ca").get(), &health).ok());

  const grpc::Status good = CallSampleOnce(Tls(server->tcp_target(), dir_, "ca", "client").get());
  EXPECT_TRUE(good.ok()) << good.error_message();
}

TEST_F(TlsTest, UnusableCertificateFilesExitTwoNamingTheFlag) {
  std::string output;
  // The key of another certificate.
  EXPECT_EQ(ServerProcess::RunToExit("--listen 127.0.0.1:0 --metrics_listen '' --tls_cert " + dir_.File("server.pem") +
                                         " --tls_key " + dir_.File("client.key"),
                                     &output),
            2);
  EXPECT_THAT(output, HasSubstr("--tls_key " + dir_.File("client.key")));
  EXPECT_THAT(output, HasSubstr("is not the private key"));
  // Not a certificate.
  EXPECT_EQ(ServerProcess::RunToExit("--listen 127.0.0.1:0 --metrics_listen '' --tls_cert " + dir_.File("server.key") +
                                         " --tls_key " + dir_.File("server.key"),
                                     &output),
            2);
  EXPECT_THAT(output, HasSubstr("--tls_cert"));
  EXPECT_EQ(ServerProcess::RunToExit("--listen 127.0.0.1:0 --metrics_listen '' --tls_cert " + dir_.File("server.pem") +
                                         " --tls_key " + dir_.File("server.key") + " --tls_client_ca /nonexistent.pem",
                                     &output),
            2);
  EXPECT_THAT(output, HasSubstr("--tls_client_ca /nonexistent.pem: cannot be read"));
  EXPECT_EQ(ServerProcess::RunToExit("--listen 127.0.0.1:0 --tls_key " + dir_.File("server.key"), &output), 2);
  EXPECT_THAT(output, HasSubstr("--tls_cert: is required with --tls_key"));
}

// ---------------------------------------------------------------------------------------------------------------
// Bearer tokens

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    WriteFile(dir_.File("tokens"), "right-token\n");
    server_ = ServerProcess::Start({"--auth_token_file", dir_.File("tokens")});
    ASSERT_NE(server_, nullptr);
    channel_ = Plaintext(server_->tcp_target());
  }
  double StepsRun() {
    return MetricValue(HttpGet(server_->metrics_address(), "/metrics"), "samplerd_step_core_seconds_count");
  }
  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(AuthTest, RightTokenWorksWrongOrMissingTokenIsUnauthenticated) {
  v1::SampleResponse response;
  const grpc::Status right = CallSampleOnce(channel_.get(), "right-token", "", &response);
  ASSERT_TRUE(right.ok()) << right.error_message();
  EXPECT_EQ(response.results_size(), 1);
  const double steps_after_right = StepsRun();
  EXPECT_EQ(steps_after_right, 1);

  for (const std::string& token :
       {std::string(), std::string("wrong-token"), std::string("right-toke"), std::string("right-token-and-more")}) {
    const grpc::Status refused = CallSampleOnce(channel_.get(), token);
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAUTHENTICATED) << "token \"" << token << "\"";
    EXPECT_THAT(refused.error_message(), HasSubstr("authorization: Bearer"));
  }
  // A refused SampleOnce did not run its step.
  EXPECT_EQ(StepsRun(), steps_after_right);

  // Another scheme, or the token without one.
  auto stub = v1::Sampler::NewStub(channel_);
  for (const std::string& header : {std::string("Basic right-token"), std::string("right-token")}) {
    grpc::ClientContext context;
    context.AddMetadata("authorization", header);
    v1::ListProfilesResponse profiles;
    EXPECT_EQ(stub->ListProfiles(&context, v1::ListProfilesRequest(), &profiles).error_code(),
              grpc::StatusCode::UNAUTHENTICATED)
        << header;
  }
  // The scheme is case-insensitive.
  grpc::ClientContext lower;
  lower.AddMetadata("authorization", "bearer right-token");
  v1::ListProfilesResponse profiles;
  EXPECT_TRUE(stub->ListProfiles(&lower, v1::ListProfilesRequest(), &profiles).ok());
}

TEST_F(AuthTest, StreamsAndReflectionNeedTheTokenHealthDoesNot) {
  auto stub = v1::Sampler::NewStub(channel_);
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer wrong-token");
    std::unique_ptr<SampleStream> stream = stub->Sample(&context);
    v1::SampleResponse response;
    stream->Write(OneStepRequest());
    EXPECT_FALSE(stream->Read(&response));
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer right-token");
    std::unique_ptr<SampleStream> stream = stub->Sample(&context);
    v1::SampleResponse response;
    ASSERT_TRUE(stream->Write(OneStepRequest()));
    ASSERT_TRUE(stream->Read(&response));
    EXPECT_EQ(response.results_size(), 1);
    stream->WritesDone();
    EXPECT_TRUE(stream->Finish().ok());
  }
  {
    auto reflection = grpc::reflection::v1alpha::ServerReflection::NewStub(channel_);
    grpc::ClientContext context;
    auto stream = reflection->ServerReflectionInfo(&context);
    grpc::reflection::v1alpha::ServerReflectionRequest list;
    list.set_list_services("");
    grpc::reflection::v1alpha::ServerReflectionResponse listed;
    stream->Write(list);
    EXPECT_FALSE(stream->Read(&listed));
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  // Load balancers and the kubelet probe health without credentials, over TCP and the unix socket.
  for (const std::string& target : {server_->tcp_target(), server_->unix_target()}) {
    grpc::health::v1::HealthCheckResponse health;
    const grpc::Status status = CallHealth(Plaintext(target).get(), &health);
    ASSERT_TRUE(status.ok()) << target << ": " << status.error_message();
    EXPECT_EQ(health.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
  // The unix socket checks the token too.
  EXPECT_EQ(CallSampleOnce(Plaintext(server_->unix_target()).get()).error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

// A samplerd with `flags`, logging at info to `log` in a directory of its own; with kToken its only token is
// "right-token".
struct LoggedServer {
  enum Auth { kNoToken, kToken };
  explicit LoggedServer(std::vector<std::string> flags = {}, Auth auth = kNoToken) : log(dir.File("samplerd.log")) {
    if (!dir.ok()) return;
    if (auth == kToken) {
      WriteFile(dir.File("tokens"), "right-token\n");
      flags.insert(flags.end(), {"--auth_token_file", dir.File("tokens")});
    }
    flags.insert(flags.end(), {"--log_level", "info"});
    server = ServerProcess::Start(flags, log);
  }
  TempDir dir;
  std::string log;
  std::unique_ptr<ServerProcess> server;
};

// The lines of `log` that `matches`, and the sum of the "(N similar lines held back)" notes they carry.
struct BudgetedLines {
  int lines = 0;
  int64_t held_back = 0;
};
BudgetedLines CountBudgetedLines(const std::string& log, const std::function<bool(const std::string&)>& matches) {
  BudgetedLines counted;
  std::istringstream lines(log);
  std::string line;
  while (std::getline(lines, line)) {
    if (!matches(line)) continue;
    ++counted.lines;
    const size_t note = line.find(" similar lines held back)");
    if (note != std::string::npos) {
      const size_t open = line.rfind('(', note);
      counted.held_back += std::stoll(line.substr(open + 1, note - open - 1));
    }
  }
  return counted;
}

TEST(RefusalLog, AFloodOfRefusedCallsWritesABoundedLogThatCountsTheRest) {
  LoggedServer logged({}, LoggedServer::kToken);
  ASSERT_NE(logged.server, nullptr);
  std::shared_ptr<grpc::Channel> channel = Plaintext(logged.server->tcp_target());
  constexpr int kRefused = 600;
  for (int i = 0; i < kRefused; ++i) {
    ASSERT_EQ(CallSampleOnce(channel.get(), "wrong-token").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  // The next refusal after the budget's second reports what was held back.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  ASSERT_EQ(CallSampleOnce(channel.get(), "wrong-token").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  ASSERT_EQ(logged.server->Terminate(), 0);
  const BudgetedLines refusals = CountBudgetedLines(ReadFile(logged.log), [](const std::string& line) {
    return line.find("wrong") != std::string::npos || line.find("refused") != std::string::npos ||
           line.find("UNAUTHENTICATED") != std::string::npos;
  });
  // Two lines per refused call without the budget; with it, at most 20 a second.
  EXPECT_LT(refusals.lines, kRefused);
  EXPECT_GT(refusals.lines, 0);
  EXPECT_GT(refusals.held_back, 0) << "the lines held back are counted in the next line written";
}

// Streams refused over --max_streams are logged by the call log within its budget, not once more each.
TEST(RefusalLog, AFloodOfStreamsOverTheLimitWritesABoundedLog) {
  LoggedServer logged({"--max_streams", "1"});
  ASSERT_NE(logged.server, nullptr);
  auto stub = v1::Sampler::NewStub(Plaintext(logged.server->tcp_target()));
  grpc::ClientContext holder_context;
  std::unique_ptr<SampleStream> holder = stub->Sample(&holder_context);
  v1::SampleResponse response;
  ASSERT_TRUE(holder->Write(OneStepRequest()));
  ASSERT_TRUE(holder->Read(&response));
  constexpr int kRefused = 300;
  for (int i = 0; i < kRefused; ++i) {
    grpc::ClientContext context;
    std::unique_ptr<SampleStream> refused = stub->Sample(&context);
    ASSERT_EQ(refused->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  holder->WritesDone();
  EXPECT_TRUE(holder->Finish().ok());
  holder.reset();
  stub.reset();
  ASSERT_EQ(logged.server->Terminate(), 0);
  std::istringstream lines(ReadFile(logged.log));
  std::string line;
  int refusal_lines = 0;
  while (std::getline(lines, line)) {
    if (line.find("RESOURCE_EXHAUSTED") != std::string::npos || line.find("refused") != std::string::npos) {
      ++refusal_lines;
    }
  }
  EXPECT_GT(refusal_lines, 0);
  EXPECT_LT(refusal_lines, kRefused / 2) << ReadFile(logged.log).substr(0, 4000);
}

TEST_F(AuthTest, SighupRotatesTheTokensAndAnEmptyFileKeepsThem) {
  // Rotation: both tokens for a while, then only the new one.
  WriteFile(dir_.File("tokens"), "right-token\nnext-token\n");
  kill(server_->pid(), SIGHUP);
  EXPECT_TRUE(WaitFor([&] { return CallSampleOnce(channel_.get(), "next-token").ok(); }, std::chrono::seconds(10)));
  EXPECT_TRUE(CallSampleOnce(channel_.get(), "right-token").ok());

  WriteFile(dir_.File("tokens"), "next-token\n");
  kill(server_->pid(), SIGHUP);
  EXPECT_TRUE(WaitFor([&] { return !CallSampleOnce(channel_.get(), "right-token").ok(); }, std::chrono::seconds(10)));
  EXPECT_EQ(CallSampleOnce(channel_.get(), "right-token").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(CallSampleOnce(channel_.get(), "next-token").ok());

  // A file without a token is refused; the tokens in force stay.
  WriteFile(dir_.File("tokens"), "\n");
  kill(server_->pid(), SIGHUP);
  EXPECT_TRUE(WaitFor(
      [&] {
        return MetricValue(HttpGet(server_->metrics_address(), "/metrics"), "samplerd_config_reloads_total",
                           {{"result", "failure"}}) == 1;
      },
      std::chrono::seconds(10)));
  EXPECT_TRUE(CallSampleOnce(channel_.get(), "next-token").ok());
}

TEST(AuthFlags, MissingOrEmptyTokenFileExitsTwoNamingTheFlag) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  std::string output;
  EXPECT_EQ(ServerProcess::RunToExit("--listen 127.0.0.1:0 --metrics_listen '' --auth_token_file /nonexistent/token",
                                     &output),
            2);
  EXPECT_THAT(output, HasSubstr("--auth_token_file /nonexistent/token: cannot be read"));
  WriteFile(dir.File("empty"), "  \n\n");
  EXPECT_EQ(ServerProcess::RunToExit("--listen 127.0.0.1:0 --metrics_listen '' --auth_token_file " + dir.File("empty"),
                                     &output),
            2);
  EXPECT_THAT(output, HasSubstr("holds no token"));
  WriteFile(dir.File("spaced"), "two words\n");
  EXPECT_EQ(ServerProcess::RunToExit("--listen 127.0.0.1:0 --metrics_listen '' --auth_token_file " + dir.File("spaced"),
                                     &output),
            2);
  EXPECT_THAT(output, HasSubstr("line 1"));
  EXPECT_THAT(output, ::testing::Not(HasSubstr("two words")));  // a token is never printed
}

// ---------------------------------------------------------------------------------------------------------------
// Metrics

TEST(Metrics, CountersMoveAfterSteps) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start();
  ASSERT_NE(server, nullptr);
  ASSERT_FALSE(server->metrics_address().empty());
  const std::string before = HttpGet(server->metrics_address(), "/metrics");
  ASSERT_FALSE(before.empty()) << "no /metrics on " << server->metrics_address();
  EXPECT_EQ(MetricValue(before, "samplerd_build_info", {{"version", "0.1.0"}}), 1);
  EXPECT_EQ(MetricValue(before, "samplerd_request_bytes_total"), 0);
  EXPECT_EQ(MetricValue(before, "samplerd_step_core_seconds_count"), 0);
  EXPECT_EQ(MetricValue(before, "samplerd_active_streams"), 0);
  EXPECT_EQ(MetricValue(before, "samplerd_max_streams"), 1024);  // the --max_streams default
  EXPECT_EQ(MetricValue(before, "samplerd_pending_request_bytes"), 0);
  EXPECT_EQ(MetricValue(before, "samplerd_max_pending_request_bytes"), 512 << 20);  // the flag's default
  EXPECT_THAT(before, HasSubstr("# TYPE samplerd_step_core_seconds histogram"));

  // 3 steps under "fixed", 2 under the default profile, 1 rejected (top_p 1.5).
  v1::SampleRequest request;
  for (int i = 0; i < 3; ++i) *request.add_steps() = MakeStep("f" + std::to_string(i), 0, 1000, "fixed");
  for (int i = 0; i < 2; ++i) *request.add_steps() = MakeStep("e" + std::to_string(i), 0, 1000);
  *request.add_steps() = MakeStep("bad", 0);
  request.mutable_steps(5)->mutable_params()->set_top_p(1.5f);
  auto stub = v1::Sampler::NewStub(Plaintext(server->tcp_target()));
  grpc::ClientContext context;
  v1::SampleResponse response;
  ASSERT_TRUE(stub->SampleOnce(&context, request, &response).ok());
  ASSERT_EQ(response.results_size(), 6);
  ASSERT_TRUE(response.results(5).has_error());

  // And a stream, open while we scrape.
  grpc::ClientContext stream_context;
  std::unique_ptr<SampleStream> stream = stub->Sample(&stream_context);
  ASSERT_TRUE(stream->Write(OneStepRequest()));
  ASSERT_TRUE(stream->Read(&response));

  const std::string after = HttpGet(server->metrics_address(), "/metrics");
  EXPECT_EQ(MetricValue(after, "samplerd_steps_total", {{"profile", "fixed"}, {"regime", "fixed"}}), 3);
  double entropix_steps = 0;  // whichever regimes the default profile chose
  for (const char* regime : {"argmax", "clarify", "explore", "resample", "adaptive"}) {
    const double v = MetricValue(after, "samplerd_steps_total", {{"profile", "entropix"}, {"regime", regime}});
    if (!std::isnan(v)) entropix_steps += v;
  }
  EXPECT_EQ(entropix_steps, 3);  // 2 from SampleOnce, 1 from the stream
  EXPECT_EQ(MetricValue(after, "samplerd_step_errors_total", {{"code", "INVALID_ARGUMENT"}}), 1);
  EXPECT_EQ(MetricValue(after, "samplerd_step_core_seconds_count"), 7);
  EXPECT_GT(MetricValue(after, "samplerd_step_core_seconds_sum"), 0);
  EXPECT_GE(MetricValue(after, "samplerd_request_bytes_total"),
            static_cast<double>(request.ByteSizeLong() + OneStepRequest().ByteSizeLong()));
  EXPECT_EQ(MetricValue(after, "samplerd_active_streams"), 1);

  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_TRUE(WaitFor(
      [&] { return MetricValue(HttpGet(server->metrics_address(), "/metrics"), "samplerd_active_streams") == 0; },
      std::chrono::seconds(5)));
}

// samplerd_pending_request_bytes shows the requests waiting for (or on) the worker, and the budget comes back whole
// once they are answered: a request charged and never released would leave the gauge above 0 for good.
TEST(Metrics, PendingRequestBytesRiseWhileARequestIsWorkedOnAndReturnToZero) {
  std::unique_ptr<ServerProcess> server =
      ServerProcess::Start({"--workers", "1", "--max_pending_request_bytes", "100000000"});
  ASSERT_NE(server, nullptr);
  auto pending = [&] {
    return MetricValue(HttpGet(server->metrics_address(), "/metrics"), "samplerd_pending_request_bytes");
  };
  EXPECT_EQ(MetricValue(HttpGet(server->metrics_address(), "/metrics"), "samplerd_max_pending_request_bytes"), 1e8);

  // 16 steps of 128,000 logits (8 MB): each request keeps the one worker busy for milliseconds.
  v1::SampleRequest request;
  for (int i = 0; i < 16; ++i) *request.add_steps() = MakeStep("p" + std::to_string(i), 0, 128000);
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::thread caller([&] {
    auto stub = v1::Sampler::NewStub(Plaintext(server->tcp_target()));
    while (!stop.load()) {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
      v1::SampleResponse response;
      const grpc::Status status = stub->SampleOnce(&context, request, &response);
      if (!status.ok() || response.results_size() != 16 || response.results(15).has_error()) ++failures;
    }
  });
  double seen = 0;
  EXPECT_TRUE(WaitFor(
      [&] {
        seen = pending();
        return seen > 0;
      },
      std::chrono::seconds(20)));
  stop = true;
  caller.join();
  EXPECT_EQ(failures.load(), 0);
  // At least the request's parsed logits (SpaceUsedLong counts them), and never more than the budget.
  EXPECT_GE(seen, 16 * 128000 * 4.0);
  EXPECT_LE(seen, 1e8);
  EXPECT_TRUE(WaitFor([&] { return pending() == 0; }, std::chrono::seconds(10)));
}

// docs/contract.md section 7's flag: --metrics_port serves the same /metrics on every interface; with --metrics_listen
// or outside 0..65535 it is a usage error.
TEST(Metrics, MetricsPortServesOnEveryInterface) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start({"--metrics_port", "0"});
  ASSERT_NE(server, nullptr);
  ASSERT_THAT(server->metrics_address(), ::testing::StartsWith("0.0.0.0:"));
  const std::string port = server->metrics_address().substr(sizeof("0.0.0.0:") - 1);
  const std::string body = HttpGet("127.0.0.1:" + port, "/metrics");
  EXPECT_EQ(MetricValue(body, "samplerd_build_info", {{"version", "0.1.0"}}), 1);
  std::string output;
  EXPECT_EQ(ServerProcess::RunToExit("--listen 127.0.0.1:0 --metrics_port 0 --metrics_listen 127.0.0.1:0", &output), 2);
  EXPECT_THAT(output, HasSubstr("--metrics_port"));
  EXPECT_EQ(ServerProcess::RunToExit("--listen 127.0.0.1:0 --metrics_port 70000", &output), 2);
  EXPECT_THAT(output, HasSubstr("--metrics_port"));
}

TEST(Metrics, ExplicitMetricsAddressInUseFailsToStartDefaultOneOnlyLogs) {
  std::unique_ptr<ServerProcess> first = ServerProcess::Start();
  ASSERT_NE(first, nullptr);
  std::string output;
  EXPECT_EQ(ServerProcess::RunToExit("--listen 127.0.0.1:0 --metrics_listen " + first->metrics_address(), &output), 1);
  EXPECT_THAT(output, HasSubstr("cannot serve metrics on " + first->metrics_address()));
  EXPECT_EQ(ServerProcess::RunToExit("--listen 127.0.0.1:0 --metrics_listen nonsense", &output), 2);
  EXPECT_THAT(output, HasSubstr("--metrics_listen"));
}

// A client that connects and sends nothing, and one that stops in the middle of its request header, must not
// keep Prometheus out: a scrape made meanwhile is answered within Prometheus' default scrape timeout (10 s),
// and the server closes the stalled connections itself rather than holding them open.
TEST(Metrics, IdleAndHalfSentConnectionsDoNotBlockScrapes) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start();
  ASSERT_NE(server, nullptr);
  const std::string& address = server->metrics_address();
  std::vector<int> stalled;
  for (int i = 0; i < 2; ++i) {
    const int idle = ConnectTcp(address, std::chrono::seconds(30));
    ASSERT_GE(idle, 0);
    stalled.push_back(idle);
    const int half = ConnectTcp(address, std::chrono::seconds(30));
    ASSERT_GE(half, 0);
    const std::string partial = "GET /metrics HTTP/1.1\r\nHost: " + address + "\r\nUser-Ag";
    ASSERT_EQ(write(half, partial.data(), partial.size()), static_cast<ssize_t>(partial.size()));
    stalled.push_back(half);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let the server pick the stalled ones up first

  for (int scrape = 0; scrape < 3; ++scrape) {
    const std::string body = HttpGet(address, "/metrics", std::chrono::seconds(10));
    EXPECT_EQ(MetricValue(body, "samplerd_build_info", {{"version", "0.1.0"}}), 1) << "scrape " << scrape;
  }
  for (const int fd : stalled) {
    char byte;
    ssize_t n;
    do {  // the half-sent request may be answered with an error before the close; the close is what counts
      n = read(fd, &byte, 1);
    } while (n > 0);
    EXPECT_EQ(n, 0) << "a stalled connection was still open after 30 s (errno " << errno << ")";
    close(fd);
  }
}

// Connections to the metrics port beyond those it serves or queues are closed as they are accepted: a flood of
// idle ones would otherwise hold a descriptor each, and once an accept fails for lack of one, gRPC 1.51's listener
// stops for good. So with the descriptors scarce, gRPC still accepts during and after the flood, and scrapes work
// again once it ends.
TEST(Metrics, AFloodOfConnectionsLeavesTheGrpcListenersTheirDescriptors) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start({}, "", {"/usr/bin/prlimit", "--nofile=192:192", "--"});
  ASSERT_NE(server, nullptr);
  const std::string& address = server->metrics_address();
  std::vector<int> flood;
  for (int i = 0; i < 150; ++i) {
    const int fd = ConnectTcp(address, std::chrono::seconds(30));
    ASSERT_GE(fd, 0) << "connection " << i;
    flood.push_back(fd);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // every connection accepted
  const std::string fd_dir = "/proc/" + std::to_string(server->pid()) + "/fd";
  const auto held = std::distance(std::filesystem::directory_iterator(fd_dir), std::filesystem::directory_iterator());
  EXPECT_LT(held, 100) << "descriptors the server holds with 150 idle connections to its metrics port";
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(ListProfilesOnANewConnection(server->tcp_target()), "") << "during the flood, connection " << i;
  }
  for (const int fd : flood) close(fd);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(ListProfilesOnANewConnection(server->tcp_target()), "") << "after the flood, connection " << i;
  }
  const std::string body = HttpGet(address, "/metrics", std::chrono::seconds(20));
  EXPECT_EQ(MetricValue(body, "samplerd_build_info", {{"version", "0.1.0"}}), 1);
  EXPECT_EQ(server->Terminate(), 0);
}

// A Range header would make the HTTP library build every listed range, overlaps included, in memory: it is
// ignored, and the whole answer served once.
TEST(Metrics, RangeHeadersAreIgnoredNotBuilt) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start();
  ASSERT_NE(server, nullptr);
  const std::string& address = server->metrics_address();
  std::string ranges = "bytes=0-";
  for (int i = 0; i < 2000; ++i) ranges += ",0-";
  for (const std::string path : {"/metrics", "/live/steps", "/"}) {
    const int fd = ConnectTcp(address, std::chrono::seconds(30));
    ASSERT_GE(fd, 0);
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: " + address + "\r\nRange: " + ranges + "\r\n\r\n";
    ASSERT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
    std::string reply;
    char buffer[8192];
    ssize_t n;
    while ((n = read(fd, buffer, sizeof(buffer))) > 0) reply.append(buffer, static_cast<size_t>(n));
    close(fd);
    EXPECT_THAT(reply, ::testing::StartsWith("HTTP/1.1 200")) << path;
    EXPECT_LT(reply.size(), 256u * 1024) << path << ": one copy of the answer, not one per range";
    EXPECT_THAT(reply, ::testing::Not(HasSubstr("multipart/byteranges"))) << path;
  }
  EXPECT_EQ(MetricValue(HttpGet(address, "/metrics"), "samplerd_build_info", {{"version", "0.1.0"}}), 1);
}

// A request that never ends, in its request line, its header lines or a chunked body, is cut off after a few KB:
// the server closes the connection rather than buffer what it is sent.
TEST(Metrics, EndlessRequestsAreCutOffNotBuffered) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start();
  ASSERT_NE(server, nullptr);
  const std::string& address = server->metrics_address();
  const std::string pad(8192, 'a');
  struct Endless {
    std::string name, head, repeat;
  };
  const Endless kinds[] = {
      {"request line", "GET /metrics?", pad},
      {"header lines", "GET /metrics HTTP/1.1\r\nHost: " + address + "\r\n", "X-Pad: " + pad + "\r\n"},
      {"chunked body", "POST /metrics HTTP/1.1\r\nHost: " + address + "\r\nTransfer-Encoding: chunked\r\n\r\n",
       "2000\r\n" + pad + "\r\n"},
  };
  constexpr int64_t kEnough = int64_t{64} << 20;
  for (const Endless& kind : kinds) {
    const int fd = ConnectTcp(address, std::chrono::seconds(10));
    ASSERT_GE(fd, 0);
    int64_t sent = 0;
    bool refused = false;
    for (const std::string* data = &kind.head; sent < kEnough; data = &kind.repeat) {
      const ssize_t n = send(fd, data->data(), data->size(), MSG_NOSIGNAL);
      if (n < 0) {  // reset or closed by the server (or a send that waited 10 s: the server stopped reading)
        refused = true;
        break;
      }
      sent += n;
    }
    close(fd);
    EXPECT_TRUE(refused) << kind.name << ": the server took " << kEnough << " bytes of one request";
  }
  EXPECT_EQ(MetricValue(HttpGet(address, "/metrics"), "samplerd_build_info", {{"version", "0.1.0"}}), 1);
  const int64_t peak_kib = server->StatusKiB("VmHWM");
  ASSERT_GT(peak_kib, 0);
  EXPECT_LT(peak_kib, 64 * 1024) << "peak RSS in KiB: what the server was sent stayed in its memory";
}

// Clients that trickle their requests a byte at a time, one on each of the server's threads, must not keep
// Prometheus out: a request has 2 s to arrive whole, then its connection is closed, and a scrape made meanwhile is
// answered within Prometheus' default scrape timeout.
TEST(Metrics, TricklingRequestsAreClosedAndDoNotBlockScrapes) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start();
  ASSERT_NE(server, nullptr);
  const std::string& address = server->metrics_address();
  std::vector<int> tricklers;
  for (int i = 0; i < 16; ++i) {  // ServerMetrics::kHttpThreads
    const int fd = ConnectTcp(address, std::chrono::seconds(10));
    ASSERT_GE(fd, 0);
    tricklers.push_back(fd);
  }
  std::atomic<bool> stop{false};
  std::thread trickle([&] {
    const std::string head = "GET /metrics HTTP/1.1\r\nHost: " + address + "\r\nX-Slow: ";
    for (const int fd : tricklers) send(fd, head.data(), head.size(), MSG_NOSIGNAL);
    while (!stop) {  // a byte well within each read's timeout, and never the end of the header
      for (const int fd : tricklers) send(fd, "a", 1, MSG_NOSIGNAL);
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  });
  std::this_thread::sleep_for(std::chrono::seconds(2));  // the tricklers hold every thread by now
  const std::string body = HttpGet(address, "/metrics", std::chrono::seconds(10));
  stop = true;
  trickle.join();
  EXPECT_EQ(MetricValue(body, "samplerd_build_info", {{"version", "0.1.0"}}), 1);
  for (const int fd : tricklers) {
    char buffer[4096];
    ssize_t n;
    do {  // an error answer may come before the close; the close is what counts
      n = read(fd, buffer, sizeof(buffer));
    } while (n > 0);
    EXPECT_TRUE(n == 0 || errno == ECONNRESET) << "a trickling connection was still open (errno " << errno << ")";
    close(fd);
  }
}

// /live/steps is rendered at most once per 500 ms however many ask, so a loop of requests costs the server one
// render per interval (64 full rings: 1.2 MB and 46 ms each) rather than one each: while steps keep changing the
// data, requests in a row get at most one new answer per interval, and a later one sees the new steps.
TEST(Metrics, LiveStepsAreRenderedAtMostOncePerIntervalWhateverTheRequests) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start();
  ASSERT_NE(server, nullptr);
  auto stub = v1::Sampler::NewStub(Plaintext(server->tcp_target()));
  std::atomic<bool> stop{false};
  std::atomic<int> steps{0};
  std::thread stepper([&] {
    for (int i = 0; !stop.load(); ++i) {
      v1::SampleRequest request;
      *request.add_steps() = MakeStep("live-" + std::to_string(i), 0, 1000);
      grpc::ClientContext context;
      v1::SampleResponse response;
      if (stub->SampleOnce(&context, request, &response).ok()) steps.fetch_add(1);
    }
  });
  ASSERT_TRUE(WaitFor([&] { return steps.load() > 0; }, std::chrono::seconds(20)));
  std::set<std::string> answers;
  const auto start = Clock::now();
  for (int i = 0; i < 20; ++i) answers.insert(HttpGet(server->metrics_address(), "/live/steps"));
  const auto elapsed = Clock::now() - start;
  const int before = steps.load();
  ASSERT_TRUE(WaitFor([&] { return steps.load() > before; }, std::chrono::seconds(20)));
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  const std::string later = HttpGet(server->metrics_address(), "/live/steps");
  stop.store(true);
  stepper.join();
  const auto intervals = std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count() / 500;
  EXPECT_LE(static_cast<int64_t>(answers.size()), intervals + 2)
      << answers.size() << " different answers in "
      << std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count() << " ms while steps ran";
  EXPECT_EQ(answers.count(later), 0u) << "an answer 600 ms later still showed the older steps";
  EXPECT_EQ(server->Terminate(), 0);
}

// The live page's data: per profile the steps by regime and the recent points, nothing that names a sequence
// or a token.
TEST(Metrics, LiveStepsCountStepsByProfileWithoutSequenceIds) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start();
  ASSERT_NE(server, nullptr);
  v1::SampleRequest request;
  for (int i = 0; i < 3; ++i) *request.add_steps() = MakeStep("secret-f" + std::to_string(i), 0, 1000, "fixed");
  for (int i = 0; i < 2; ++i) *request.add_steps() = MakeStep("secret-e" + std::to_string(i), 0, 1000);
  *request.add_steps() = MakeStep("secret-bad", 0);
  request.mutable_steps(5)->mutable_params()->set_top_p(1.5f);
  auto stub = v1::Sampler::NewStub(Plaintext(server->tcp_target()));
  grpc::ClientContext context;
  v1::SampleResponse response;
  ASSERT_TRUE(stub->SampleOnce(&context, request, &response).ok());

  const std::string body = HttpGet(server->metrics_address(), "/live/steps");
  ASSERT_FALSE(body.empty());
  EXPECT_THAT(body, ::testing::Not(HasSubstr("secret")));
  const nlohmann::json data = nlohmann::json::parse(body);
  std::map<std::string, nlohmann::json> profiles;
  for (const nlohmann::json& p : data.at("profiles")) profiles[p.at("name").get<std::string>()] = p;
  ASSERT_EQ(profiles.count("fixed"), 1u);
  ASSERT_EQ(profiles.count("entropix"), 1u);
  EXPECT_EQ(profiles["fixed"].at("steps"), 3);
  EXPECT_EQ(profiles["fixed"].at("counts").at("fixed"), 3);
  EXPECT_EQ(profiles["fixed"].at("points").size(), 3u);
  EXPECT_EQ(profiles["entropix"].at("steps"), 2);  // the rejected step is not a step of any profile
  EXPECT_EQ(profiles["entropix"].at("points").size(), 2u);
  EXPECT_FALSE(profiles["entropix"].at("rules").empty());  // the bounds the page draws the regions from
  EXPECT_EQ(profiles["entropix-frog"].at("steps"), 0);     // a profile without steps is listed too
  for (const nlohmann::json& point : profiles["entropix"].at("points")) {
    ASSERT_EQ(point.size(), 3u);
    EXPECT_GE(point[0].get<double>(), 0);
    EXPECT_GE(point[1].get<double>(), 0);
  }
  const std::string page = HttpGet(server->metrics_address(), "/");
  EXPECT_THAT(page, HasSubstr("<script src=\"live.js\">"));
  EXPECT_THAT(HttpGet(server->metrics_address(), "/live.js"), HasSubstr("live/steps"));
}

// ---------------------------------------------------------------------------------------------------------------
// Lifecycle

// Request r of a pipelined run: kPipelinedSteps steps "pipe-<s>" at step r over a 4096-token vocabulary, each
// asking for 20 top logprobs, so that an answer (~8 KiB) is large next to the client's 64 KiB window.
constexpr int kPipelinedSteps = 32;

v1::SampleRequest PipelinedRequest(int r) {
  static const v1::SampleRequest* const base = [] {
    auto* request = new v1::SampleRequest();
    for (int s = 0; s < kPipelinedSteps; ++s) {
      *request->add_steps() = MakeStep("pipe-" + std::to_string(s), 0, 4096);
      request->mutable_steps(s)->set_top_logprobs(20);
    }
    return request;
  }();
  v1::SampleRequest request = *base;
  for (v1::Step& step : *request.mutable_steps()) step.set_step(static_cast<uint64_t>(r));
  return request;
}

// Writes PipelinedRequest(0 .. count-1) on `stream` from a thread, then half-closes; stops at a failed write.
class Writer {
 public:
  Writer(SampleStream* stream, int count)
      : count_(count), thread_([this, stream] {
          for (int r = 0; r < count_; ++r) {
            if (!stream->Write(PipelinedRequest(r))) return;
            written_.fetch_add(1);
          }
          stream->WritesDone();
        }) {}
  ~Writer() { thread_.join(); }
  int written() const { return written_.load(); }

  // Waits until no write completes for `quiet` (the server stopped reading) or every request is written.
  void WaitUntilStalled(std::chrono::milliseconds quiet) {
    int last = -1;
    const auto give_up = Clock::now() + std::chrono::seconds(60);
    while (written() != last && written() < count_ && Clock::now() < give_up) {
      last = written();
      std::this_thread::sleep_for(quiet);
    }
  }

 private:
  const int count_;
  std::atomic<int> written_{0};
  std::thread thread_;
};

std::shared_ptr<grpc::Channel> SmallWindowChannel(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  // No window growth: the client takes at most the initial 64 KiB of answers it has not read.
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

TEST(Lifecycle, EveryStepSentBeforeSigtermGetsItsResult) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start({"--drain_seconds", "30"});
  ASSERT_NE(server, nullptr);
  // 200 requests (100 MiB) and a client that does not read until the signal: the server stops reading when a
  // few answers wait, so at the signal most requests written so far wait unprocessed in the transport.
  constexpr int kRequests = 200;
  auto stub = v1::Sampler::NewStub(SmallWindowChannel(server->tcp_target()));
  grpc::ClientContext context;
  std::unique_ptr<SampleStream> stream = stub->Sample(&context);
  Writer writer(stream.get(), kRequests);
  writer.WaitUntilStalled(std::chrono::milliseconds(1000));
  const int written_before_signal = writer.written();
  ASSERT_GT(written_before_signal, 0);
  ASSERT_LT(written_before_signal, kRequests) << "the server took every request: nothing was pending";

  auto health = grpc::health::v1::Health::NewStub(Plaintext(server->unix_target()));
  grpc::ClientContext watch_context;
  auto watch = health->Watch(&watch_context, grpc::health::v1::HealthCheckRequest());
  grpc::health::v1::HealthCheckResponse status;
  ASSERT_TRUE(watch->Read(&status));
  ASSERT_EQ(status.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  const auto signalled = Clock::now();
  kill(server->pid(), SIGTERM);
  ASSERT_TRUE(watch->Read(&status));
  EXPECT_EQ(status.status(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  watch_context.TryCancel();  // the watch is a call too: it would hold the drain
  watch->Finish();

  // The server is draining: a new stream is refused...
  auto fresh = v1::Sampler::NewStub(Plaintext(server->tcp_target()));
  grpc::ClientContext fresh_context;
  fresh_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::SampleResponse ignored;
  EXPECT_FALSE(fresh->SampleOnce(&fresh_context, OneStepRequest(), &ignored).ok());

  // ...while the open one answers every request, in order, with a result for every step.
  v1::SampleResponse response;
  int received = 0;
  while (stream->Read(&response)) {
    ASSERT_LT(received, kRequests);
    ASSERT_EQ(response.results_size(), kPipelinedSteps) << "response " << received;
    for (int s = 0; s < kPipelinedSteps; ++s) {
      const v1::StepResult& result = response.results(s);
      ASSERT_FALSE(result.has_error()) << result.error().message();
      ASSERT_EQ(result.sequence_id(), "pipe-" + std::to_string(s));
      ASSERT_EQ(result.step(), static_cast<uint64_t>(received));
      ASSERT_EQ(result.top_size(), 20);
    }
    ++received;
  }
  const grpc::Status finished = stream->Finish();
  EXPECT_TRUE(finished.ok()) << finished.error_message();
  EXPECT_GE(received, written_before_signal);
  EXPECT_EQ(received, writer.written());
  // The server leaves as soon as the stream is done, not at the end of the drain period.
  EXPECT_EQ(server->Stop(/*signal=*/0, std::chrono::seconds(25)), 0);
  EXPECT_LT(Clock::now() - signalled, std::chrono::seconds(25));
}

// The metrics server stops before the process exits: scrapes that arrive during the exit must not find its
// threads parsing requests with cpp-httplib's statics already destroyed (ASan saw a heap-use-after-free in 5 of 6
// such exits; without ASan it is silent).
TEST(Lifecycle, ScrapesDuringTheExitEndBeforeTheMetricsServerGoes) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string log = dir.File("samplerd.log");
  std::unique_ptr<ServerProcess> server = ServerProcess::Start({}, log);
  ASSERT_NE(server, nullptr);
  std::atomic<bool> stop{false};
  std::atomic<int> answered{0};
  std::vector<std::thread> scrapers;
  for (int i = 0; i < 12; ++i) {
    scrapers.emplace_back([&] {
      while (!stop.load()) {
        if (!HttpGet(server->metrics_address(), "/metrics", std::chrono::seconds(2)).empty()) ++answered;
      }
    });
  }
  while (answered.load() < 50) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const int exit_code = server->Terminate();
  stop.store(true);
  for (std::thread& t : scrapers) t.join();
  EXPECT_EQ(exit_code, 0);
  EXPECT_THAT(ReadFile(log), ::testing::Not(HasSubstr("AddressSanitizer")));
}

TEST(Lifecycle, SigtermWithOnlyIdleConnectionsStopsAtOnce) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start({"--drain_seconds", "30"});
  ASSERT_NE(server, nullptr);
  // A gRPC client whose call is done (its connection stays open, idle) and a TCP connection that never spoke.
  std::shared_ptr<grpc::Channel> channel = Plaintext(server->tcp_target());
  ASSERT_TRUE(CallSampleOnce(channel.get()).ok());
  const int fd = ConnectTcp(server->tcp_target(), std::chrono::seconds(10));
  ASSERT_GE(fd, 0);
  // The drain waits for calls in flight only: with none, the server leaves well before --drain_seconds.
  const auto signalled = Clock::now();
  EXPECT_EQ(server->Stop(SIGTERM, std::chrono::seconds(25)), 0);
  EXPECT_LT(Clock::now() - signalled, std::chrono::seconds(3));
  close(fd);
}

// While a drain waits for a call, SIGHUP reloads nothing and says so, and a second SIGTERM ends the process at
// once (what an operator or a second Ctrl-C asks for), with the signal's exit code.
TEST(Lifecycle, WhileDrainingSighupIsIgnoredAndASecondSigtermExitsAtOnce) {
  LoggedServer logged({"--drain_seconds", "30"});
  ASSERT_NE(logged.server, nullptr);
  // An open stream is a call in flight: the drain waits for it.
  std::shared_ptr<grpc::Channel> channel = Plaintext(logged.server->tcp_target());
  auto stub = v1::Sampler::NewStub(channel);
  grpc::ClientContext context;
  std::unique_ptr<SampleStream> stream = stub->Sample(&context);
  ASSERT_TRUE(stream->Write(OneStepRequest()));
  v1::SampleResponse response;
  ASSERT_TRUE(stream->Read(&response));
  ASSERT_EQ(kill(logged.server->pid(), SIGTERM), 0);
  ASSERT_TRUE(WaitFor([&] { return ReadFile(logged.log).find("draining in-flight calls") != std::string::npos; },
                      std::chrono::seconds(10)));
  ASSERT_EQ(kill(logged.server->pid(), SIGHUP), 0);
  EXPECT_TRUE(WaitFor([&] { return ReadFile(logged.log).find("SIGHUP ignored") != std::string::npos; },
                      std::chrono::seconds(10)));
  const auto signalled = Clock::now();
  EXPECT_EQ(logged.server->Stop(SIGTERM, std::chrono::seconds(20)), 128 + SIGTERM);
  EXPECT_LT(Clock::now() - signalled, std::chrono::seconds(5)) << "the second SIGTERM waited for the drain";
  EXPECT_THAT(ReadFile(logged.log), HasSubstr("again while draining: exiting now"));
}

// A health Watch is told NOT_SERVING when the drain begins and has nothing else to finish: it does not hold the
// server for --drain_seconds, as every client that watches health would otherwise make every replica do.
TEST(Lifecycle, AnOpenHealthWatchDoesNotHoldTheDrain) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start({"--drain_seconds", "30"});
  ASSERT_NE(server, nullptr);
  std::shared_ptr<grpc::Channel> channel = Plaintext(server->tcp_target());
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<grpc::health::v1::HealthCheckResponse>> watch =
      health->Watch(&context, grpc::health::v1::HealthCheckRequest());
  grpc::health::v1::HealthCheckResponse response;
  ASSERT_TRUE(watch->Read(&response));
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  const auto signalled = Clock::now();
  EXPECT_EQ(server->Stop(SIGTERM, std::chrono::seconds(25)), 0);
  EXPECT_LT(Clock::now() - signalled, std::chrono::seconds(3));
  context.TryCancel();
  watch->Finish();
}

TEST(Lifecycle, AnOpenReflectionStreamDoesNotHoldTheDrain) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start({"--drain_seconds", "30"});
  ASSERT_NE(server, nullptr);
  auto reflection = grpc::reflection::v1alpha::ServerReflection::NewStub(Plaintext(server->tcp_target()));
  grpc::ClientContext context;
  auto stream = reflection->ServerReflectionInfo(&context);
  grpc::reflection::v1alpha::ServerReflectionRequest list;
  list.set_list_services("");
  grpc::reflection::v1alpha::ServerReflectionResponse listed;
  ASSERT_TRUE(stream->Write(list));
  ASSERT_TRUE(stream->Read(&listed));
  const auto signalled = Clock::now();
  EXPECT_EQ(server->Stop(SIGTERM, std::chrono::seconds(25)), 0);
  EXPECT_LT(Clock::now() - signalled, std::chrono::seconds(3));
  context.TryCancel();
  stream->Finish();
}

// One connection that opens Sample streams and sends nothing on them holds at most --max_streams_per_connection
// of the --max_streams slots (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS; the transport refuses the rest), so other
// clients still get streams.
TEST(Limits, OneConnectionCannotHoldEveryStreamSlot) {
  std::unique_ptr<ServerProcess> server =
      ServerProcess::Start({"--max_streams", "150", "--max_streams_per_connection", "100"});
  ASSERT_NE(server, nullptr);
  const int fd = ConnectTcp(server->tcp_target(), std::chrono::seconds(5));
  ASSERT_GE(fd, 0);
  const std::string headers = LiteralHeaderBlock({{":method", "POST"},
                                                  {":scheme", "http"},
                                                  {":path", "/samplerd.v1.Sampler/Sample"},
                                                  {":authority", "samplerd"},
                                                  {"content-type", "application/grpc"},
                                                  {"te", "trailers"}});
  const auto open_streams = [&](uint32_t first, uint32_t count, std::string bytes) {
    for (uint32_t stream = first; stream < first + 2 * count; stream += 2) {
      bytes += Http2Frame(kHttp2Headers, kHttp2EndHeaders, stream, headers);
    }
    return write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
  };
  auto active = [&] { return MetricValue(HttpGet(server->metrics_address(), "/metrics"), "samplerd_active_streams"); };
  // The limit holds once the client has acknowledged the server's SETTINGS, as any HTTP/2 client does.
  const std::string start = Http2Preface() + Http2Frame(kHttp2Settings, 0, 0, "");
  ASSERT_EQ(write(fd, start.data(), start.size()), static_cast<ssize_t>(start.size()));
  std::string received;
  bool got_settings = false;
  while (!got_settings) {
    char buffer[4096];
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    ASSERT_GT(n, 0) << "no SETTINGS from the server";
    received.append(buffer, static_cast<size_t>(n));
    for (size_t pos = 0; pos + 9 <= received.size();) {
      const size_t length = (static_cast<uint8_t>(received[pos]) << 16) |
                            (static_cast<uint8_t>(received[pos + 1]) << 8) | static_cast<uint8_t>(received[pos + 2]);
      if (received[pos + 3] == kHttp2Settings && (received[pos + 4] & 1) == 0) got_settings = true;
      pos += 9 + length;
    }
  }
  ASSERT_TRUE(open_streams(1, 100, Http2Frame(kHttp2Settings, 1, 0, "")));
  EXPECT_TRUE(WaitFor([&] { return active() == 100; }, std::chrono::seconds(10))) << active();
  // Past the limit the transport refuses the streams (or the connection): none reaches the service.
  open_streams(201, 50, "");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_LE(active(), 100);

  auto stub = v1::Sampler::NewStub(Plaintext(server->tcp_target()));
  grpc::ClientContext context;
  std::unique_ptr<SampleStream> stream = stub->Sample(&context);
  v1::SampleResponse response;
  ASSERT_TRUE(stream->Write(OneStepRequest()));
  EXPECT_TRUE(stream->Read(&response));
  stream->WritesDone();
  const grpc::Status status = stream->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  close(fd);
}

int ThreadCount(pid_t pid) {
  int threads = 0;
  for ([[maybe_unused]] const auto& entry :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    ++threads;
  }
  return threads;
}

// Server reflection is gRPC's synchronous service: each open stream holds a server thread while it waits for the
// client. Past a small pool they are refused, so open streams cannot take every thread the process may have.
TEST(Limits, ReflectionStreamsBeyondASmallPoolAreRefusedNotGivenAThreadEach) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start();
  ASSERT_NE(server, nullptr);
  const int threads_before = ThreadCount(server->pid());
  auto reflection = grpc::reflection::v1alpha::ServerReflection::NewStub(Plaintext(server->tcp_target()));
  constexpr int kStreams = 80;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReaderWriter<grpc::reflection::v1alpha::ServerReflectionRequest,
                                                       grpc::reflection::v1alpha::ServerReflectionResponse>>>
      open;
  int refused = 0;
  for (int i = 0; i < kStreams; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    auto stream = reflection->ServerReflectionInfo(contexts.back().get());
    grpc::reflection::v1alpha::ServerReflectionRequest list;
    list.set_list_services("");
    grpc::reflection::v1alpha::ServerReflectionResponse listed;
    if (stream->Write(list) && stream->Read(&listed)) {
      open.push_back(std::move(stream));  // answered, and left open: its handler waits for the next request
    } else {
      const grpc::Status status = stream->Finish();
      EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
      ++refused;
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_GT(open.size(), 0u);
  EXPECT_LT(ThreadCount(server->pid()), threads_before + kStreams / 2);
  // Neither the sampler nor health shares that pool.
  EXPECT_TRUE(CallSampleOnce(Plaintext(server->tcp_target()).get()).ok());
  grpc::health::v1::HealthCheckResponse health;
  EXPECT_TRUE(CallHealth(Plaintext(server->tcp_target()).get(), &health).ok());
  for (auto& stream : open) {
    stream->WritesDone();
    EXPECT_TRUE(stream->Finish().ok());
  }
  EXPECT_EQ(server->Terminate(), 0);
}

// Every connection holds a descriptor, and gRPC 1.51 stops accepting for good after an accept fails with EMFILE:
// samplerd runs with the soft limit on open files raised to the hard one.
TEST(Limits, TheSoftOpenFileLimitIsRaisedToTheHardOne) {
  struct rlimit mine;
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &mine), 0);
  ASSERT_GT(mine.rlim_max, rlim_t{256}) << "the hard limit leaves nothing to raise";
  const struct rlimit lowered = {256, mine.rlim_max};
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &lowered), 0);
  std::unique_ptr<ServerProcess> server = ServerProcess::Start();
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &mine), 0);
  ASSERT_NE(server, nullptr);
  struct rlimit its;
  ASSERT_EQ(prlimit(server->pid(), RLIMIT_NOFILE, nullptr, &its), 0);
  EXPECT_EQ(its.rlim_cur, mine.rlim_max);
  EXPECT_EQ(server->Terminate(), 0);
}

TEST(Lifecycle, CancelledStreamFreesItsSlotAtOnce) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start({"--max_streams", "1"});
  ASSERT_NE(server, nullptr);
  auto stub = v1::Sampler::NewStub(SmallWindowChannel(server->tcp_target()));
  auto active = [&] { return MetricValue(HttpGet(server->metrics_address(), "/metrics"), "samplerd_active_streams"); };
  {
    // A client that writes and never reads: the server holds queued answers and a blocked write for it.
    grpc::ClientContext context;
    std::unique_ptr<SampleStream> stream = stub->Sample(&context);
    Writer writer(stream.get(), 200);
    writer.WaitUntilStalled(std::chrono::milliseconds(1000));
    ASSERT_LT(writer.written(), 200);
    EXPECT_EQ(active(), 1);
    const auto cancelled = Clock::now();
    context.TryCancel();
    EXPECT_TRUE(WaitFor([&] { return active() == 0; }, std::chrono::seconds(5)));
    EXPECT_LT(Clock::now() - cancelled, std::chrono::seconds(2)) << "the stream's state outlived its client";
  }
  // Its --max_streams slot is free for the next client.
  grpc::ClientContext context;
  std::unique_ptr<SampleStream> next = stub->Sample(&context);
  v1::SampleResponse response;
  ASSERT_TRUE(next->Write(OneStepRequest()));
  EXPECT_TRUE(next->Read(&response));
  next->WritesDone();
  EXPECT_TRUE(next->Finish().ok());
}

TEST(Lifecycle, AgedConnectionsGetTheirGraceThenCloseAndClientsReconnect) {
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(
      {"--max_connection_age_seconds", "1", "--max_connection_age_grace_seconds", "2", "--drain_seconds", "1"});
  ASSERT_NE(server, nullptr);
  std::shared_ptr<grpc::Channel> channel = Plaintext(server->tcp_target());
  auto stub = v1::Sampler::NewStub(channel);
  // A stream kept busy across the age (1 s, +-10% jitter): it is served through the grace (2 s), then cut.
  grpc::ClientContext context;
  std::unique_ptr<SampleStream> stream = stub->Sample(&context);
  const auto opened = Clock::now();
  v1::SampleResponse response;
  int round_trips = 0;
  while (Clock::now() - opened < std::chrono::seconds(10) && stream->Write(OneStepRequest()) &&
         stream->Read(&response)) {
    ++round_trips;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const auto lived = Clock::now() - opened;
  EXPECT_FALSE(stream->Finish().ok());
  EXPECT_GT(round_trips, 10);
  EXPECT_GE(lived, std::chrono::milliseconds(2500)) << "cut before the grace ended";
  EXPECT_LT(lived, std::chrono::seconds(6)) << "not closed when the grace ended";
  // The channel reconnects for the next call.
  EXPECT_TRUE(CallSampleOnce(channel.get()).ok());
}

// ---------------------------------------------------------------------------------------------------------------
// Reloads and logs

constexpr char kProfileTemplate[] = R"({
  "profiles": [{"name": "NAME", "params": {"temperature": 0.5, "topK": 20, "topP": 0.9, "minP": 0.05},
                "regimes": [{"regime": "REGIME_ARGMAX",
                             "bounds": [{"metric": "METRIC_LOGITS_ENTROPY", "op": "OP_LT", "value": 0.1}]}],
                "defaultRegime": "REGIME_ADAPTIVE"}],
  "defaultProfile": "NAME"})";

std::string ProfileSet(const std::string& name) {
  std::string json = kProfileTemplate;
  for (size_t at; (at = json.find("NAME")) != std::string::npos;) json.replace(at, 4, name);
  return json;
}

TEST(Reload, SighupPicksUpAChangedConfigAndABadFileKeepsTheOldProfiles) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string config = dir.File("profiles.json");
  WriteFile(config, ProfileSet("cautious"));
  std::unique_ptr<ServerProcess> server = ServerProcess::Start({"--config", config});
  ASSERT_NE(server, nullptr);
  auto stub = v1::Sampler::NewStub(Plaintext(server->tcp_target()));
  auto default_profile = [&] {
    grpc::ClientContext context;
    v1::ListProfilesResponse profiles;
    return stub->ListProfiles(&context, v1::ListProfilesRequest(), &profiles).ok() ? profiles.default_profile()
                                                                                   : std::string("(error)");
  };
  auto reloads = [&](const std::string& result) {
    return MetricValue(HttpGet(server->metrics_address(), "/metrics"), "samplerd_config_reloads_total",
                       {{"result", result}});
  };
  ASSERT_EQ(default_profile(), "cautious");

  WriteFile(config, ProfileSet("bold"));
  kill(server->pid(), SIGHUP);
  ASSERT_TRUE(WaitFor([&] { return default_profile() == "bold"; }, std::chrono::seconds(10)));
  EXPECT_EQ(reloads("success"), 1);
  v1::SampleResponse response;
  ASSERT_TRUE(CallSampleOnce(Plaintext(server->tcp_target()).get(), "", "", &response).ok());
  EXPECT_EQ(response.results(0).profile(), "bold");

  // An unknown field, then a file that is not JSON: each reload fails and changes nothing.
  WriteFile(config, R"({"profiles": [{"name": "broken", "temperature": 1}]})");
  kill(server->pid(), SIGHUP);
  ASSERT_TRUE(WaitFor([&] { return reloads("failure") == 1; }, std::chrono::seconds(10)));
  EXPECT_EQ(default_profile(), "bold");
  WriteFile(config, "{ not json");
  kill(server->pid(), SIGHUP);
  ASSERT_TRUE(WaitFor([&] { return reloads("failure") == 2; }, std::chrono::seconds(10)));
  EXPECT_EQ(default_profile(), "bold");
  ASSERT_TRUE(CallSampleOnce(Plaintext(server->tcp_target()).get(), "", "", &response).ok());
  EXPECT_EQ(response.results(0).profile(), "bold");
  EXPECT_EQ(reloads("success"), 1);
  stub.reset();  // see Logging.JsonLinesCarryTheCallersTraceparent
  EXPECT_EQ(server->Terminate(), 0);
}

// `count` profiles named NAME-0, NAME-1, ...: a config that takes a second or more to load.
std::string ManyProfiles(const std::string& name, int count) {
  const std::string one = ProfileSet("@");
  const size_t begin = one.find('{', one.find('['));
  const size_t end = one.rfind(']');
  const std::string profile = one.substr(begin, end - begin);
  std::string json = "{\"profiles\": [";
  for (int i = 0; i < count; ++i) {
    std::string named = profile;
    named.replace(named.find('@'), 1, name + "-" + std::to_string(i));
    json += (i == 0 ? "" : ",\n") + named;
  }
  json += "], \"defaultProfile\": \"" + name + "-0\"}";
  return json;
}

// A SIGTERM sent while a large config reloads starts the drain at once: the reload runs on a thread of its own,
// not on the thread that waits for signals, and the process still exits 0 once both are done.
TEST(Reload, ASigtermDuringALongReloadStartsTheDrainAtOnce) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string config = dir.File("profiles.json");
  WriteFile(config, ProfileSet("small"));
  const std::string log = dir.File("samplerd.log");
  std::unique_ptr<ServerProcess> server = ServerProcess::Start({"--config", config, "--log_level", "info"}, log);
  ASSERT_NE(server, nullptr);
  WriteFile(config, ManyProfiles("large", 40000));
  ASSERT_EQ(kill(server->pid(), SIGHUP), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(server->Stop(SIGTERM, std::chrono::seconds(60)), 0);
  const std::string lines = ReadFile(log);
  const size_t drain = lines.find("draining in-flight calls");
  ASSERT_NE(drain, std::string::npos) << lines;
  // The reload that runs when the drain ends is waited for; one not yet begun is dropped.
  if (const size_t reloaded = lines.find("profiles reloaded from"); reloaded != std::string::npos) {
    EXPECT_LT(drain, reloaded) << "the SIGTERM waited for the reload:\n" << lines;
  }
}

// A reload that renames the config's profile drops the old name's step counters and its live ring, so a config
// renamed on every reload neither grows /metrics for good nor fills the live page's LiveSteps::kMaxProfiles rings
// with profiles no longer in force (after which a new profile's steps were not shown at all).
TEST(Reload, RenamedProfilesLeaveNoSeriesOrLiveRingBehind) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string config = dir.File("profiles.json");
  WriteFile(config, ProfileSet("name-0"));
  std::unique_ptr<ServerProcess> server = ServerProcess::Start({"--config", config});
  ASSERT_NE(server, nullptr);
  std::shared_ptr<grpc::Channel> channel = Plaintext(server->tcp_target());
  const auto reloads = [&] {
    return MetricValue(HttpGet(server->metrics_address(), "/metrics"), "samplerd_config_reloads_total",
                       {{"result", "success"}});
  };
  constexpr int kRenames = 70;  // more than LiveSteps::kMaxProfiles
  for (int i = 0; i <= kRenames; ++i) {
    if (i > 0) {
      WriteFile(config, ProfileSet("name-" + std::to_string(i)));
      kill(server->pid(), SIGHUP);
      ASSERT_TRUE(WaitFor([&] { return reloads() == i; }, std::chrono::seconds(10))) << "reload " << i;
    }
    v1::SampleResponse response;
    ASSERT_TRUE(CallSampleOnce(channel.get(), "", "", &response).ok());
    ASSERT_EQ(response.results(0).profile(), "name-" + std::to_string(i));
  }
  const std::string metrics = HttpGet(server->metrics_address(), "/metrics");
  EXPECT_THAT(metrics, ::testing::Not(HasSubstr("profile=\"name-0\"")));
  EXPECT_THAT(metrics, HasSubstr("profile=\"name-" + std::to_string(kRenames) + "\""));
  const nlohmann::json live = nlohmann::json::parse(HttpGet(server->metrics_address(), "/live/steps"));
  int with_steps = 0;
  for (const nlohmann::json& profile : live["profiles"]) {
    if (profile["steps"].get<int>() == 0) continue;
    ++with_steps;
    EXPECT_EQ(profile["name"], "name-" + std::to_string(kRenames));
  }
  EXPECT_EQ(with_steps, 1) << live.dump().substr(0, 2000);
  channel.reset();
  EXPECT_EQ(server->Terminate(), 0);
}

TEST(Logging, JsonLinesCarryTheCallersTraceparent) {
  LoggedServer logged({"--log_format", "json", "--max_steps_per_request", "1"}, LoggedServer::kToken);
  ASSERT_NE(logged.server, nullptr);
  std::shared_ptr<grpc::Channel> channel = Plaintext(logged.server->tcp_target());
  // Refused by the token check, with a trace context; then with a malformed one.
  EXPECT_EQ(CallSampleOnce(channel.get(), "wrong", kTraceparent).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(CallSampleOnce(channel.get(), "wrong", "00-not-a-trace-context").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  {
    // Refused by the service (2 steps > --max_steps_per_request), logged when its status is sent.
    auto stub = v1::Sampler::NewStub(channel);
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer right-token");
    context.AddMetadata("traceparent", kTraceparent);
    v1::SampleRequest two = OneStepRequest();
    *two.add_steps() = MakeStep("second", 0);
    v1::SampleResponse response;
    EXPECT_EQ(stub->SampleOnce(&context, two, &response).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  // A sync client with no call in flight reads its socket only every 5 s (gRPC's backup poller), so it would
  // see the server's GOAWAY late and hold the shutdown: close the connection first (a ClientContext holds its
  // channel too, hence the block above).
  channel.reset();
  ASSERT_EQ(logged.server->Terminate(), 0);

  std::istringstream lines(ReadFile(logged.log));
  std::string line;
  int parsed = 0;
  std::vector<nlohmann::json> refused;
  std::vector<nlohmann::json> exhausted;
  int unauthenticated = 0;
  while (std::getline(lines, line)) {
    nlohmann::json entry;
    ASSERT_NO_THROW(entry = nlohmann::json::parse(line)) << line;
    ++parsed;
    for (const char* key : {"time", "level", "logger", "msg"}) EXPECT_TRUE(entry.contains(key)) << line;
    const std::string msg = entry.value("msg", "");
    if (msg.find("refused") != std::string::npos) refused.push_back(entry);
    if (msg.find("RESOURCE_EXHAUSTED") != std::string::npos) exhausted.push_back(entry);
    // The call log reports the status the client got, not the handler's answer that went nowhere.
    if (msg.find("SampleOnce from") != std::string::npos &&
        msg.find("ended with UNAUTHENTICATED") != std::string::npos) {
      ++unauthenticated;
      EXPECT_EQ(entry.value("level", ""), "info") << line;
    }
  }
  EXPECT_EQ(unauthenticated, 2) << ReadFile(logged.log);
  EXPECT_GE(parsed, 3);
  ASSERT_EQ(refused.size(), 2u) << ReadFile(logged.log);
  EXPECT_EQ(refused[0].value("traceparent", ""), kTraceparent);
  EXPECT_EQ(refused[0].value("level", ""), "warning");
  EXPECT_THAT(refused[0].value("msg", ""), HasSubstr("/samplerd.v1.Sampler/SampleOnce"));
  EXPECT_FALSE(refused[1].contains("traceparent")) << "a malformed traceparent is dropped";
  ASSERT_EQ(exhausted.size(), 1u) << ReadFile(logged.log);
  EXPECT_EQ(exhausted[0].value("traceparent", ""), kTraceparent);
  EXPECT_THAT(ReadFile(logged.log), ::testing::Not(HasSubstr("right-token")));
}

// A message can quote text the server did not write (a name from a config or a request, a parser's multi-line
// error): in a text log it stays on its line, with its control characters escaped, and cannot pass for a line of
// its own.
TEST(Logging, TextLinesEscapeTheControlCharactersOfWhatTheyQuote) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  WriteFile(dir.File("profiles.json"),
            R"({"defaultProfile": "none\n[2026-01-01 00:00:00.000] [samplerd] [info] forged\u0007"})");
  std::string output;
  EXPECT_EQ(
      ServerProcess::RunToExit(
          "--listen 127.0.0.1:0 --metrics_listen '' --log_format text --config " + dir.File("profiles.json"), &output),
      2);
  EXPECT_THAT(output, HasSubstr(R"(none\n[2026-01-01 00:00:00.000] [samplerd] [info] forged\x07")"));
  std::istringstream lines(output);
  std::string line;
  while (std::getline(lines, line)) {
    EXPECT_NE(line.rfind("[2026-01-01", 0), 0u) << output;
    EXPECT_EQ(line.find('\a'), std::string::npos) << output;
  }
}

// Opens one call per path on a raw HTTP/2 connection to `target` (a gRPC client would not send such paths), each
// with `extra` headers and one empty message, and waits until the server has ended them all.
void CallRawPaths(const std::string& target, const std::vector<std::string>& paths,
                  const std::vector<std::pair<std::string, std::string>>& extra = {}) {
  const int fd = ConnectTcp(target, std::chrono::seconds(10));
  ASSERT_GE(fd, 0);
  std::string bytes = Http2Preface() + Http2Frame(kHttp2Settings, 0, 0, "");
  uint32_t stream = 1;
  for (const std::string& path : paths) {
    std::vector<std::pair<std::string, std::string>> fields = GrpcCallHeaders(path);
    fields.insert(fields.end(), extra.begin(), extra.end());
    bytes += Http2Frame(kHttp2Headers, kHttp2EndHeaders, stream, LiteralHeaderBlock(fields));
    bytes += Http2Frame(kHttp2Data, kHttp2EndStream, stream, std::string(5, '\0'));
    stream += 2;
  }
  ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  Http2Reader reader(fd);
  while (reader.ended_streams() < static_cast<int>(paths.size())) {
    ASSERT_GT(reader.ReadOnce(), 0) << "the server ended " << reader.ended_streams() << " of " << paths.size()
                                    << " calls";
  }
  close(fd);
}

// Paths no method has, as a client can send them: bytes that are not UTF-8, a NUL, and a path of 2,000 bytes.
std::string NulPath() { return std::string("/a\0hidden/x", 11); }
std::vector<std::string> StrangePaths() { return {"/\xff\xfe/x", NulPath(), "/" + std::string(1999, 'A')}; }

// Every line is one JSON object whatever bytes a client put where a line quotes them: in a path (the call log)
// or in a metadata value gRPC core rejects and quotes (hpack_parser.cc); bytes that are not UTF-8 become U+FFFD.
// The path is quoted up to a cap, and a NUL in it is escaped rather than ending it.
TEST(Logging, JsonLinesStayValidJsonWhateverBytesTheClientSent) {
  LoggedServer logged({"--log_format", "json"});
  ASSERT_NE(logged.server, nullptr);
  CallRawPaths(logged.server->tcp_target(), StrangePaths());
  CallRawPaths(logged.server->tcp_target(), {"/samplerd.v1.Sampler/ListProfiles"}, {{"grpc-status", "1\xc3\xff"}});
  ASSERT_EQ(logged.server->Terminate(), 0);

  std::istringstream lines(ReadFile(logged.log));
  std::string line;
  int not_utf8 = 0;
  int nul = 0;
  int long_path = 0;
  int bad_metadata = 0;
  while (std::getline(lines, line)) {
    nlohmann::json entry;
    ASSERT_NO_THROW(entry = nlohmann::json::parse(line)) << line;
    const std::string msg = entry.value("msg", "");
    if (msg.find("/\xEF\xBF\xBD") != std::string::npos && msg.find("/x from") != std::string::npos) ++not_utf8;
    if (msg.find(NulPath() + " from") != std::string::npos) ++nul;
    if (msg.find("AAAA") != std::string::npos) {
      ++long_path;
      EXPECT_THAT(msg, HasSubstr("... (2000 bytes)"));
      EXPECT_EQ(msg.find(std::string(257, 'A')), std::string::npos) << "the path is quoted whole";
    }
    if (msg.find("grpc-status") != std::string::npos) ++bad_metadata;
  }
  EXPECT_EQ(not_utf8, 1) << ReadFile(logged.log);
  EXPECT_EQ(nul, 1) << ReadFile(logged.log);
  EXPECT_EQ(long_path, 1) << ReadFile(logged.log);
  EXPECT_GE(bad_metadata, 1) << ReadFile(logged.log);
}

// The text log quotes a path the same way: capped, its NUL escaped.
TEST(Logging, TextLinesCapThePathAndEscapeItsNul) {
  LoggedServer logged({"--log_format", "text"});
  ASSERT_NE(logged.server, nullptr);
  CallRawPaths(logged.server->tcp_target(), StrangePaths());
  ASSERT_EQ(logged.server->Terminate(), 0);
  const std::string text = ReadFile(logged.log);
  EXPECT_THAT(text, HasSubstr(R"(/a\x00hidden/x from)"));
  EXPECT_THAT(text, HasSubstr("... (2000 bytes)"));
  EXPECT_EQ(text.find(std::string(257, 'A')), std::string::npos) << "the path is quoted whole";
}

// gRPC core writes its own line about some calls before samplerd sees them, without a token: here one per call
// that declares gzip (call.cc; the server has gzip disabled). Those lines are budgeted like refusals, and the
// ones held back are counted in the next line written.
TEST(Logging, GrpcCoreLinesAreBudgetedLikeRefusals) {
  LoggedServer logged({}, LoggedServer::kToken);
  ASSERT_NE(logged.server, nullptr);
  std::shared_ptr<grpc::Channel> channel = Plaintext(logged.server->tcp_target());
  auto stub = v1::Sampler::NewStub(channel);
  const auto gzip_call = [&] {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    context.set_compression_algorithm(GRPC_COMPRESS_GZIP);
    v1::ListProfilesResponse response;
    return stub->ListProfiles(&context, v1::ListProfilesRequest(), &response).error_code();
  };
  constexpr int kCalls = 600;
  for (int i = 0; i < kCalls; ++i) ASSERT_EQ(gzip_call(), grpc::StatusCode::UNIMPLEMENTED);
  // The next line after the budget's second reports what was held back.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  ASSERT_EQ(gzip_call(), grpc::StatusCode::UNIMPLEMENTED);
  stub.reset();
  channel.reset();  // see Logging.JsonLinesCarryTheCallersTraceparent
  ASSERT_EQ(logged.server->Terminate(), 0);

  const BudgetedLines gzip = CountBudgetedLines(ReadFile(logged.log), [](const std::string& line) {
    return line.find("'gzip' is disabled") != std::string::npos;
  });
  EXPECT_GT(gzip.lines, 0) << "gRPC's lines still show";
  EXPECT_LT(gzip.lines, kCalls / 2);
  EXPECT_GT(gzip.held_back, 0) << "the lines held back are counted in the next line written";
}

// What gRPC core's lines quote of a client's bytes is cut short, like samplerd's own quotes: a rejected metadata
// value is written into its line, and the header list allows 16 KiB of it.
TEST(Logging, GrpcCoreLinesQuoteAtMostAnExcerptOfAClientsBytes) {
  LoggedServer logged({}, LoggedServer::kToken);
  ASSERT_NE(logged.server, nullptr);
  const std::string value(6000, 'A');
  CallRawPaths(logged.server->tcp_target(), {"/samplerd.v1.Sampler/ListProfiles"}, {{"grpc-timeout", value}});
  ASSERT_EQ(logged.server->Terminate(), 0);
  const std::string text = ReadFile(logged.log);
  EXPECT_THAT(text, HasSubstr("grpc-timeout")) << "gRPC's line about the value still shows";
  EXPECT_EQ(text.find(std::string(kMaxGrpcLineBytes, 'A')), std::string::npos) << "the value is quoted whole";
}

TEST(Flags, HelpDocumentsTheOperationsFlags) {
  std::string output;
  ASSERT_EQ(ServerProcess::RunToExit("--help", &output), 0);
  for (const char* flag :
       {"--tls_cert", "--tls_key", "--tls_client_ca", "--auth_token_file", "--metrics_listen", "--log_format",
        "--max_connection_age_seconds", "--max_connection_age_grace_seconds", "--max_message_bytes", "--max_streams",
        "--max_steps_per_request", "--max_vocab", "--drain_seconds", "SIGHUP"}) {
    EXPECT_THAT(output, HasSubstr(flag));
  }
  EXPECT_EQ(ServerProcess::RunToExit("--listen 127.0.0.1:0 --drain_seconds 60", &output), 2);
  EXPECT_THAT(output, HasSubstr("--max_connection_age_grace_seconds"));
}

}  // namespace
}  // namespace samplerd
