// The C++ client library and samplerctl against a real samplerd.
#include "clients/cpp/samplerd_client.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/service/server_process.h"
#include "tests/service/test_certificates.h"
#include "xtensor/xadapt.hpp"
#include "xtensor/xarray.hpp"
#include "xtensor/xnpy.hpp"

#ifndef SAMPLERCTL_BINARY
#error "SAMPLERCTL_BINARY must name the samplerctl executable"
#endif

namespace samplerd::client {
namespace {

using ::samplerd::testing::CommandResult;
using ::samplerd::testing::MakeCertificates;
using ::samplerd::testing::ReadTextFile;
using ::samplerd::testing::RunCommand;
using ::samplerd::testing::ServerProcess;
using ::samplerd::testing::TempDir;
using ::testing::HasSubstr;

constexpr int kVocab = 2000;

std::vector<float> Logits(uint32_t key) {
  std::mt19937 rng(key);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> logits(kVocab);
  for (float& z : logits) z = normal(rng);
  return logits;
}

// A draw that depends on the seed: the fixed profile at temperature 1 with every filter off.
StepOptions RandomDraw() {
  StepOptions options;
  v1::SamplingParams params;
  params.set_temperature(1.0f);
  params.set_top_k(0);
  params.set_top_p(1.0f);
  params.set_min_p(0.0f);
  options.params = params;
  return options;
}

// Logits that float16 and bfloat16 hold exactly: multiples of 1/8 in [-8, 8].
std::vector<float> HalfExactLogits(uint32_t key) {
  std::vector<float> logits = Logits(key);
  for (float& z : logits) z = std::clamp(std::round(z * 8.0f) / 8.0f, -8.0f, 8.0f);
  return logits;
}

uint32_t Bits(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return bits;
}

// The bfloat16 pattern of a value bfloat16 holds exactly.
std::vector<uint16_t> ExactBf16(const std::vector<float>& values) {
  std::vector<uint16_t> out;
  for (float x : values) out.push_back(static_cast<uint16_t>(Bits(x) >> 16));
  return out;
}

// The float16 pattern of a value float16 holds exactly (zero or a normal number).
std::vector<uint16_t> ExactF16(const std::vector<float>& values) {
  std::vector<uint16_t> out;
  for (float x : values) {
    const uint32_t b = Bits(x);
    const uint16_t sign = static_cast<uint16_t>((b >> 16) & 0x8000);
    if ((b & 0x7fffffff) == 0) {
      out.push_back(sign);
      continue;
    }
    const int exponent = static_cast<int>((b >> 23) & 0xff) - 127 + 15;
    out.push_back(static_cast<uint16_t>(sign | (exponent << 10) | ((b >> 13) & 0x3ff)));
  }
  return out;
}

class ClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = ServerProcess::Start().release(); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(server_, nullptr) << "samplerd did not start"; }

  static ServerProcess* server_;
};

ServerProcess* ClientTest::server_ = nullptr;

TEST_F(ClientTest, HealthReportsServingAndUnknownServices) {
  Client client(server_->tcp_target());
  absl::StatusOr<ServingStatus> whole = client.Health();
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(*whole, ServingStatus::kServing);
  absl::StatusOr<ServingStatus> sampler = client.Health("samplerd.v1.Sampler");
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  EXPECT_EQ(*sampler, ServingStatus::kServing);
  EXPECT_EQ(client.Health("no.such.Service").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ClientTest, UnreachableServerIsAnError) {
  Client client("unix:/nonexistent/samplerd.sock");
  absl::StatusOr<ServingStatus> status = client.Health("", absl::Seconds(2));
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.status().code(),
              ::testing::AnyOf(absl::StatusCode::kUnavailable, absl::StatusCode::kDeadlineExceeded));
}

TEST_F(ClientTest, ABracedListOfEndpointLiteralsIsSeveralEndpoints) {
  Client client({"unix:/nonexistent/a.sock", "unix:/nonexistent/b.sock"}, ClientOptions{});
  absl::StatusOr<ServingStatus> status = client.Health("", absl::Seconds(2));
  EXPECT_THAT(status.status().code(),
              ::testing::AnyOf(absl::StatusCode::kUnavailable, absl::StatusCode::kDeadlineExceeded));
}

TEST_F(ClientTest, ListProfilesAndSampleOnce) {
  Client client(server_->unix_target());
  absl::StatusOr<v1::ListProfilesResponse> profiles = client.ListProfiles();
  ASSERT_TRUE(profiles.ok()) << profiles.status();
  EXPECT_EQ(profiles->default_profile(), "entropix");
  EXPECT_EQ(profiles->profiles_size(), 3);

  v1::SampleRequest request;
  v1::Step* step = request.add_steps();
  step->set_sequence_id("once");
  const int64_t shape[] = {kVocab};
  FillF32Tensor(Logits(1), shape, step->mutable_logits());
  absl::StatusOr<v1::SampleResponse> response = client.SampleOnce(request);
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_EQ(response->results_size(), 1);
  EXPECT_FALSE(response->results(0).has_error());
  EXPECT_NE(response->results(0).seed(), 0u);
}

TEST_F(ClientTest, SessionKeepsStepSeedAndRecentTokens) {
  Client client(server_->tcp_target());
  SessionOptions options;
  options.sequence_id = "session";
  options.prompt_tail = {1, 2, 3, 4, 5};
  options.max_recent_tokens = 3;
  std::unique_ptr<Session> session = client.OpenSession(options);
  EXPECT_EQ(session->recent_tokens(), (std::vector<int32_t>{3, 4, 5}));
  EXPECT_EQ(session->seed(), 0u);

  std::vector<int32_t> tokens;
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<StepResult> r = session->Step(Logits(10 + i));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->step, static_cast<uint64_t>(i));
    EXPECT_NE(r->seed, 0u);
    if (i == 0) {
      EXPECT_EQ(session->seed(), r->seed);  // the server's pick is adopted...
    }
    EXPECT_EQ(r->seed, session->seed());  // ...and sent back on every later step
    tokens.push_back(r->token);
  }
  EXPECT_EQ(session->step(), 4u);
  EXPECT_EQ(session->recent_tokens(), (std::vector<int32_t>{tokens[1], tokens[2], tokens[3]}));
  EXPECT_TRUE(session->Close().ok());
  EXPECT_EQ(session->Step(Logits(1)).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(ClientTest, RejectedStepChangesNothingAndTheSessionContinues) {
  Client client(server_->tcp_target());
  std::unique_ptr<Session> session = client.OpenSession({});
  ASSERT_TRUE(session->Step(Logits(1)).ok());
  const std::vector<int32_t> before = session->recent_tokens();

  std::vector<float> bad = Logits(2);
  bad[7] = std::nanf("");
  absl::StatusOr<StepResult> rejected = session->Step(bad);
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(rejected.status().message()), HasSubstr("logits.data"));
  EXPECT_EQ(session->step(), 1u);
  EXPECT_EQ(session->recent_tokens(), before);

  absl::StatusOr<StepResult> next = session->Step(Logits(2));
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->step, 1u);
}

TEST_F(ClientTest, StepOptionsAndAttentionReachTheServer) {
  Client client(server_->tcp_target());
  SessionOptions options;
  options.profile = "fixed";
  std::unique_ptr<Session> session = client.OpenSession(options);
  const std::vector<float> logits = Logits(3);
  const std::vector<float> attention = Logits(4);  // reinterpreted as [2, 1000] scores
  const int64_t shape[] = {2, kVocab / 2};
  StepOptions greedy;
  greedy.top_logprobs = 3;
  greedy.params.emplace().set_temperature(0.0f);

  absl::StatusOr<StepResult> r = session->Step(logits, TensorRef(attention, shape), greedy);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->profile, "fixed");
  EXPECT_EQ(r->token, std::max_element(logits.begin(), logits.end()) - logits.begin());
  EXPECT_FLOAT_EQ(r->applied.temperature(), 0.0f);
  ASSERT_EQ(r->top.size(), 3u);
  EXPECT_EQ(r->top[0].first, r->token);
  EXPECT_TRUE(r->metrics.has_attn_entropy());
}

TEST_F(ClientTest, SessionsWithTheSameSeedReplayTheSameGeneration) {
  auto generate = [](const std::string& target, uint64_t seed) {
    Client client(target);
    SessionOptions options;
    options.sequence_id = "replay";
    options.seed = seed;
    options.profile = "fixed";
    std::unique_ptr<Session> session = client.OpenSession(options);
    std::vector<int32_t> tokens;
    for (int i = 0; i < 20; ++i) {
      // The "model" reads the previous token, as a real one would.
      absl::StatusOr<StepResult> r =
          session->Step(Logits(static_cast<uint32_t>(tokens.empty() ? 0 : tokens.back())), std::nullopt, RandomDraw());
      if (!r.ok()) {
        ADD_FAILURE() << r.status();
        break;
      }
      tokens.push_back(r->token);
    }
    return tokens;
  };
  const std::vector<int32_t> first = generate(server_->tcp_target(), 42);
  EXPECT_EQ(generate(server_->unix_target(), 42), first);
  EXPECT_NE(generate(server_->tcp_target(), 43), first);
  EXPECT_GT(std::set<int32_t>(first.begin(), first.end()).size(), 10u);
}

TEST_F(ClientTest, HalfPrecisionLogitsDrawLikeTheirFloat32Values) {
  Client client(server_->unix_target());
  const std::vector<float> f32 = HalfExactLogits(31);
  const std::vector<uint16_t> f16 = ExactF16(f32);
  const std::vector<uint16_t> bf16 = ExactBf16(f32);
  SessionOptions options;
  options.sequence_id = "half";
  options.seed = 11;
  std::vector<StepResult> results;
  for (const TensorRef& logits : {TensorRef(f32), TensorRef::F16(f16), TensorRef::BF16(bf16)}) {
    std::unique_ptr<Session> session = client.OpenSession(options);
    absl::StatusOr<StepResult> r = session->Step(logits, std::nullopt, RandomDraw());
    ASSERT_TRUE(r.ok()) << r.status();
    results.push_back(*r);
  }
  for (size_t i = 1; i < results.size(); ++i) {
    EXPECT_EQ(results[i].token, results[0].token) << "dtype " << i;
    EXPECT_FLOAT_EQ(results[i].logprob, results[0].logprob) << "dtype " << i;
    EXPECT_FLOAT_EQ(results[i].metrics.logits_entropy(), results[0].metrics.logits_entropy()) << "dtype " << i;
  }
  // A length that is not a whole number of values is refused by the server, naming the field.
  const std::vector<uint16_t> odd = {0x3c00};
  std::unique_ptr<Session> session = client.OpenSession(options);
  const int64_t wrong_shape[] = {2};
  absl::StatusOr<StepResult> rejected = session->Step(TensorRef::F16(odd, wrong_shape));
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument) << rejected.status();
  EXPECT_THAT(RejectedField(rejected.status()), HasSubstr("logits"));
}

TEST_F(ClientTest, SampleBatchAnswersInOrderAndAdvancesOnlyTheAcceptedSessions) {
  Client client(server_->tcp_target());
  SessionOptions options;
  options.seed = 5;
  options.sequence_id = "batch-a";
  std::unique_ptr<Session> a = client.OpenSession(options);
  std::unique_ptr<Session> alone = client.OpenSession(options);
  options.sequence_id = "batch-b";
  std::unique_ptr<Session> b = client.OpenSession(options);
  options.sequence_id = "batch-bad";
  std::unique_ptr<Session> bad = client.OpenSession(options);

  const std::vector<float> la = Logits(41);
  const std::vector<uint16_t> lb = ExactBf16(HalfExactLogits(42));
  std::vector<float> broken = Logits(43);
  broken[3] = NAN;
  const BatchItem items[] = {{a.get(), la, std::nullopt, RandomDraw()},
                             {b.get(), TensorRef::BF16(lb), std::nullopt, RandomDraw()},
                             {bad.get(), broken}};
  absl::StatusOr<std::vector<absl::StatusOr<StepResult>>> batch = client.SampleBatch(items);
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->size(), 3u);
  ASSERT_TRUE((*batch)[0].ok()) << (*batch)[0].status();
  ASSERT_TRUE((*batch)[1].ok()) << (*batch)[1].status();
  EXPECT_EQ((*batch)[2].status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RejectedField((*batch)[2].status()), "logits.data");
  EXPECT_EQ(a->step(), 1u);
  EXPECT_EQ(b->step(), 1u);
  EXPECT_EQ(bad->step(), 0u);
  EXPECT_EQ(a->recent_tokens(), std::vector<int32_t>{(*batch)[0]->token});

  // The batched step is the step a lone session sends.
  absl::StatusOr<StepResult> lone = alone->Step(la, std::nullopt, RandomDraw());
  ASSERT_TRUE(lone.ok()) << lone.status();
  EXPECT_EQ(lone->token, (*batch)[0]->token);

  const BatchItem twice[] = {{a.get(), la}, {a.get(), la}};
  absl::StatusOr<std::vector<absl::StatusOr<StepResult>>> refused = client.SampleBatch(twice);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("items[1]"));
  EXPECT_EQ(a->step(), 1u);
}

// ---------------------------------------------------------------------------------------------------------------
// samplerctl

CommandResult RunSamplerctl(const std::string& args) { return RunCommand(SAMPLERCTL_BINARY, args); }

std::string WriteNpy(const std::string& name, const std::vector<float>& values, std::vector<size_t> shape) {
  const std::string path = "/tmp/samplerctl-test-" + std::to_string(getpid()) + "-" + name + ".npy";
  xt::xarray<float> array = xt::adapt(values, shape);
  xt::dump_npy(path, array);
  return path;
}

TEST_F(ClientTest, SamplerctlHealth) {
  CommandResult ok = RunSamplerctl("health --target " + server_->tcp_target());
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_THAT(ok.output, HasSubstr("SERVING"));
  CommandResult down = RunSamplerctl("health --target unix:/nonexistent/samplerd.sock");
  EXPECT_EQ(down.exit_code, 1) << down.output;
  EXPECT_THAT(down.output, HasSubstr("UNAVAILABLE"));
}

TEST_F(ClientTest, SamplerctlProfilesAsJson) {
  CommandResult r = RunSamplerctl("profiles --json --target " + server_->unix_target());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json json = nlohmann::json::parse(r.out);
  EXPECT_EQ(json["default_profile"], "entropix");
  EXPECT_EQ(json["profiles"].size(), 3u);
}

TEST_F(ClientTest, SamplerctlSampleFromNpy) {
  const std::vector<float> logits = Logits(5);
  const std::string logits_path = WriteNpy("logits", logits, {kVocab});
  const std::string attention_path = WriteNpy("attention", Logits(6), {4, kVocab / 4});

  CommandResult text = RunSamplerctl("sample --target " + server_->tcp_target() + " --logits " + logits_path +
                                     " --attention " + attention_path + " --seed 9 --top-logprobs 2");
  EXPECT_EQ(text.exit_code, 0) << text.output;
  EXPECT_THAT(text.output, HasSubstr("regime"));
  EXPECT_THAT(text.output, HasSubstr("attn_entropy="));
  EXPECT_THAT(text.output, HasSubstr("seed 9"));

  CommandResult json = RunSamplerctl("sample --target " + server_->tcp_target() + " --logits " + logits_path +
                                     " --seed 9 --profile fixed --json");
  ASSERT_EQ(json.exit_code, 0) << json.output;
  const nlohmann::json result = nlohmann::json::parse(json.out);
  EXPECT_EQ(result["profile"], "fixed");
  EXPECT_EQ(result["regime"], "REGIME_FIXED");
  EXPECT_EQ(result["seed"], "9");  // uint64 in protobuf JSON is a string
  EXPECT_TRUE(result.contains("token"));

  std::vector<float> bad = logits;
  bad[0] = INFINITY;
  const std::string bad_path = WriteNpy("bad", bad, {kVocab});
  CommandResult rejected = RunSamplerctl("sample --target " + server_->tcp_target() + " --logits " + bad_path);
  EXPECT_EQ(rejected.exit_code, 1) << rejected.output;
  EXPECT_THAT(rejected.output, HasSubstr("logits.data"));
  EXPECT_THAT(rejected.output, HasSubstr("INVALID_ARGUMENT"));

  for (const std::string& p : {logits_path, attention_path, bad_path}) unlink(p.c_str());
}

std::string WriteBytes(const std::string& name, const std::string& bytes) {
  const std::string path = "/tmp/samplerctl-test-" + std::to_string(getpid()) + "-" + name + ".npy";
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

// A .npy of `version` (1 or 2) with `header` as its header (padded as numpy pads it) and `data` after it.
std::string WriteRawNpy(const std::string& name, int version, std::string header, const std::string& data) {
  const size_t prefix = version == 1 ? 10 : 12;
  header.append(15 - (prefix + header.size()) % 16, ' ');
  header.push_back('\n');
  std::string bytes = std::string("\x93NUMPY", 6) + static_cast<char>(version) + '\0';
  for (size_t i = 0; i < prefix - 8; ++i) bytes.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xff));
  return WriteBytes(name, bytes + header + data);
}

// xtensor's reader trusts the header: a short file would send uninitialized memory as logits, and a header length
// of 4 GiB would be allocated and copied before anything is checked.
TEST_F(ClientTest, SamplerctlRefusesAnNpyItsHeaderDoesNotDescribe) {
  const std::string f4 = std::string(4, '\0');
  const std::string logits(4 * kVocab, '\0');
  const std::string vector_header =
      "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(kVocab) + ",), }";
  const struct {
    std::string path;
    const char* reason;
  } cases[] = {
      {WriteRawNpy("truncated", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (50000,), }", f4),
       "its header and shape say"},
      {WriteRawNpy("trailing", 1, vector_header, logits + f4), "its header and shape say"},
      {WriteRawNpy("zero_d", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", f4), "0-d array"},
  };
  for (const auto& c : cases) {
    CommandResult r = RunSamplerctl("sample --target " + server_->tcp_target() + " --logits " + c.path);
    EXPECT_EQ(r.exit_code, 2) << c.path << ": " << r.output;
    EXPECT_THAT(r.output, HasSubstr(c.path + ": not a float32 .npy file: ")) << r.output;
    EXPECT_THAT(r.output, HasSubstr(c.reason)) << r.output;
    unlink(c.path.c_str());
  }

  // Version 2.0, header length 0xfffffff0, and nothing after it: 21 bytes in all.
  const std::string huge_header =
      WriteBytes("huge_header", std::string("\x93NUMPY\x02\x00\xf0\xff\xff\xff", 12) + std::string(9, 'x'));
  CommandResult r = RunSamplerctl("sample --target " + server_->tcp_target() + " --logits " + huge_header);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr(huge_header + ": not a float32 .npy file: its header length is ")) << r.output;
  unlink(huge_header.c_str());

  // The same checks pass a well-formed file, in either format version.
  const std::string v2 = WriteRawNpy("v2", 2, vector_header, logits);
  CommandResult ok = RunSamplerctl("sample --target " + server_->tcp_target() + " --logits " + v2);
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  unlink(v2.c_str());
}

TEST_F(ClientTest, SamplerctlDemoVisitsEveryEntropixRegime) {
  CommandResult r = RunSamplerctl("demo --steps 36 --target " + server_->unix_target());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* regime : {"ARGMAX", "CLARIFY", "EXPLORE", "RESAMPLE", "ADAPTIVE"}) {
    EXPECT_THAT(r.output, ::testing::ContainsRegex(std::string("\n  ") + regime + " +[0-9]+")) << regime;
  }
  EXPECT_THAT(r.output, HasSubstr("36 steps"));
}

TEST_F(ClientTest, SamplerctlBadUsageExitsTwo) {
  EXPECT_EQ(RunSamplerctl("sample --logits /nonexistent.npy").exit_code, 2);
  EXPECT_EQ(RunSamplerctl("no-such-command").exit_code, 2);
}

// ---------------------------------------------------------------------------------------------------------------
// A server with mutual TLS and a bearer token: the library's ClientOptions and samplerctl's flags

class SecureServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    ASSERT_TRUE(MakeCertificates(dir_));
    std::ofstream(dir_.File("tokens")) << "s3cret\n";
    server_ = ServerProcess::Start({"--tls_cert", dir_.File("server.pem"), "--tls_key", dir_.File("server.key"),
                                    "--tls_client_ca", dir_.File("ca.pem"), "--auth_token_file", dir_.File("tokens")});
    ASSERT_NE(server_, nullptr);
  }

  ClientOptions Secure(const std::string& token = "s3cret") const {
    ClientOptions options;
    options.tls = true;
    options.tls_ca_pem = ReadTextFile(dir_.File("ca.pem"));
    options.tls_cert_pem = ReadTextFile(dir_.File("client.pem"));
    options.tls_key_pem = ReadTextFile(dir_.File("client.key"));
    options.token = token;
    return options;
  }

  std::string SecurityFlags() const {
    return " --target " + server_->tcp_target() + " --tls_ca " + dir_.File("ca.pem") + " --tls_cert " +
           dir_.File("client.pem") + " --tls_key " + dir_.File("client.key");
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(SecureServerTest, ClientWithCertificateAndTokenSamplesAndOthersAreRefused) {
  Client client(server_->tcp_target(), Secure());
  absl::StatusOr<v1::ListProfilesResponse> profiles = client.ListProfiles();
  ASSERT_TRUE(profiles.ok()) << profiles.status();
  std::unique_ptr<Session> session = client.OpenSession({});
  for (uint32_t i = 0; i < 3; ++i) {
    absl::StatusOr<StepResult> r = session->Step(Logits(i));
    ASSERT_TRUE(r.ok()) << r.status();
  }
  EXPECT_TRUE(session->Close().ok());
  std::unique_ptr<Session> batched = client.OpenSession({});
  const std::vector<float> logits = Logits(9);
  const BatchItem items[] = {{batched.get(), logits}};
  absl::StatusOr<std::vector<absl::StatusOr<StepResult>>> batch = client.SampleBatch(items);
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_TRUE((*batch)[0].ok()) << (*batch)[0].status();

  Client wrong_token(server_->tcp_target(), Secure("guess"));
  EXPECT_EQ(wrong_token.ListProfiles().status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(wrong_token.OpenSession({})->Step(Logits(1)).status().code(), absl::StatusCode::kUnauthenticated);
  ClientOptions no_certificate = Secure();
  no_certificate.tls_cert_pem.clear();
  no_certificate.tls_key_pem.clear();
  EXPECT_EQ(Client(server_->tcp_target(), no_certificate).ListProfiles(absl::Seconds(5)).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_FALSE(Client(server_->tcp_target()).ListProfiles(absl::Seconds(5)).ok());
}

TEST_F(SecureServerTest, SamplerctlTalksToItWithTlsFlagsAndAToken) {
  CommandResult profiles = RunSamplerctl("profiles --json --token s3cret" + SecurityFlags());
  ASSERT_EQ(profiles.exit_code, 0) << profiles.output;
  EXPECT_EQ(nlohmann::json::parse(profiles.out)["default_profile"], "entropix");

  CommandResult demo = RunSamplerctl("demo --steps 5 --token s3cret" + SecurityFlags());
  EXPECT_EQ(demo.exit_code, 0) << demo.output;
  EXPECT_THAT(demo.output, HasSubstr("5 steps"));

  const std::string logits_path = WriteNpy("secure-logits", Logits(3), {kVocab});
  CommandResult sample = RunSamplerctl("sample --logits " + logits_path + SecurityFlags() + " --token s3cret");
  EXPECT_EQ(sample.exit_code, 0) << sample.output;
  EXPECT_THAT(sample.output, HasSubstr("regime"));
  unlink(logits_path.c_str());

  CommandResult env = RunSamplerctl("profiles" + SecurityFlags());
  EXPECT_EQ(env.exit_code, 1) << env.output;
  EXPECT_THAT(env.output, HasSubstr("UNAUTHENTICATED"));
  ASSERT_EQ(setenv("SAMPLERD_TOKEN", "s3cret", 1), 0);
  CommandResult with_env = RunSamplerctl("profiles" + SecurityFlags());
  unsetenv("SAMPLERD_TOKEN");
  EXPECT_EQ(with_env.exit_code, 0) << with_env.output;

  CommandResult plaintext = RunSamplerctl("profiles --token s3cret --target " + server_->tcp_target());
  EXPECT_EQ(plaintext.exit_code, 1) << plaintext.output;
  CommandResult missing = RunSamplerctl("profiles --tls_ca /nonexistent.pem --target " + server_->tcp_target());
  EXPECT_EQ(missing.exit_code, 2) << missing.output;
  EXPECT_THAT(missing.output, HasSubstr("/nonexistent.pem"));
  EXPECT_EQ(RunSamplerctl("profiles --tls_cert x.pem --target " + server_->tcp_target()).exit_code, 2);
}

}  // namespace
}  // namespace samplerd::client
