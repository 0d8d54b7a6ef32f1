#include "service/server_config.h"

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace samplerd {
namespace {

using ::testing::HasSubstr;

TEST(ServerConfig, DefaultsAreTheDocumentedOnes) {
  const ServerConfig config;
  EXPECT_EQ(config.listen, std::vector<std::string>{"0.0.0.0:50051"});
  EXPECT_EQ(config.max_message_bytes, 64 * 1024 * 1024);
  EXPECT_EQ(config.max_vocab, 1048576);
  EXPECT_EQ(config.max_attention_elements, 64 * 1024 * 1024);
  EXPECT_EQ(config.max_steps_per_request, 4096);
  EXPECT_EQ(config.max_streams, 1024);
  EXPECT_EQ(config.max_streams_per_connection, 100);
  EXPECT_EQ(config.max_pending_request_bytes, 512 * 1024 * 1024);
  EXPECT_EQ(config.drain_seconds, 10);
  EXPECT_EQ(config.metrics_listen, "0.0.0.0:9464");
  EXPECT_EQ(config.max_connection_age_seconds, 300);
  EXPECT_GE(config.max_connection_age_grace_seconds, config.drain_seconds);
  EXPECT_EQ(config.log_format, "text");
  EXPECT_TRUE(config.tls_cert.empty() && config.auth_token_file.empty());
  EXPECT_TRUE(ValidateServerConfig(config).ok());
  EXPECT_EQ(config.tensor_limits().max_vocab, 1048576);
  EXPECT_EQ(config.tensor_limits().max_attention_elements, 64 * 1024 * 1024);
}

TEST(ServerConfig, AcceptsTcpAndUnixAddresses) {
  ServerConfig config;
  config.listen = {"127.0.0.1:0",        "[::]:50051",          "localhost:8080",
                   "unix:/tmp/s.sock",   "unix:///tmp/s.sock",  "unix-abstract:samplerd",
                   "unix-abstract:/x.y", "unix-abstract:///x.y"};
  EXPECT_TRUE(ValidateServerConfig(config).ok());
}

TEST(ServerConfig, ShmSocketMustNotBeAListenPathInEitherSpelling) {
  for (const char* listen : {"unix:/tmp/s.sock", "unix:///tmp/s.sock"}) {
    ServerConfig config;
    config.listen = {listen};
    config.shm_socket = "/tmp/s.sock";
    const absl::Status s = ValidateServerConfig(config);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << listen;
    EXPECT_THAT(std::string(s.message()), HasSubstr("--shm_socket")) << listen;
  }
  // An abstract socket has no file, so it cannot take the shared-memory socket's path.
  ServerConfig abstract;
  abstract.listen = {"unix-abstract:/tmp/s.sock"};
  abstract.shm_socket = "/tmp/s.sock";
  EXPECT_TRUE(ValidateServerConfig(abstract).ok());
}

TEST(ServerConfig, RejectsMalformedAddressesNamingThem) {
  for (const char* bad : {"", "localhost", "host:port", "host:70000", ":50051", "unix:", "unix://relative",
                          "unix-abstract:", "unix-abstract://relative"}) {
    ServerConfig config;
    config.listen = {bad};
    const absl::Status s = ValidateServerConfig(config);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(s.message()), HasSubstr("--listen")) << bad;
  }
  ServerConfig none;
  none.listen.clear();
  EXPECT_FALSE(ValidateServerConfig(none).ok());
}

TEST(ServerConfig, RejectsOutOfRangeLimitsNamingFlagAndValue) {
  struct Case {
    void (*set)(ServerConfig*);
    std::string expected;
  };
  const Case cases[] = {
      {[](ServerConfig* c) { c->max_message_bytes = 0; }, "--max_message_bytes: must be in [4096, 2147483647], got 0"},
      {[](ServerConfig* c) { c->max_message_bytes = kMinMessageBytes - 1; }, "got 4095"},
      {[](ServerConfig* c) { c->max_message_bytes = int64_t{1} << 31; }, "--max_message_bytes"},
      {[](ServerConfig* c) { c->max_vocab = int64_t{1} << 31; }, "got 2147483648"},
      {[](ServerConfig* c) { c->max_attention_elements = -1; }, "--max_attention_elements"},
      {[](ServerConfig* c) { c->max_steps_per_request = 0; }, "--max_steps_per_request"},
      {[](ServerConfig* c) { c->max_streams = -5; }, "--max_streams: must be in [1, 2147483647], got -5"},
      {[](ServerConfig* c) { c->max_streams_per_connection = 0; },
       "--max_streams_per_connection: must be in [1, 2147483647], got 0"},
      {[](ServerConfig* c) { c->max_pending_request_bytes = 0; },
       "--max_pending_request_bytes: must be in [1, 1125899906842624], got 0"},
      {[](ServerConfig* c) { c->max_pending_request_bytes = std::numeric_limits<int64_t>::max(); },
       "--max_pending_request_bytes"},
      {[](ServerConfig* c) { c->drain_seconds = -1; }, "--drain_seconds: must be in [0, 2147483], got -1"},
      {[](ServerConfig* c) { c->drain_seconds = kMaxChannelSeconds + 1; }, "--drain_seconds"},
      {[](ServerConfig* c) { c->log_level = "loud"; }, "--log_level"},
      {[](ServerConfig* c) { c->log_format = "xml"; }, "--log_format: must be one of text, json, got \"xml\""},
      {[](ServerConfig* c) { c->tls_key = "k.pem"; }, "--tls_cert: is required with --tls_key"},
      {[](ServerConfig* c) { c->tls_cert = "c.pem"; }, "--tls_key: is required with --tls_cert"},
      {[](ServerConfig* c) { c->tls_client_ca = "ca.pem"; }, "--tls_client_ca"},
      {[](ServerConfig* c) { c->metrics_listen = "9464"; }, "--metrics_listen: must be host:port"},
      {[](ServerConfig* c) { c->max_connection_age_seconds = -1; }, "--max_connection_age_seconds"},
      {[](ServerConfig* c) {
         c->drain_seconds = 60;
         c->max_connection_age_grace_seconds = 30;
       },
       "--max_connection_age_grace_seconds: must be in [--drain_seconds (60), 2147483], got 30"},
      // gRPC takes milliseconds as an int: one second more overflowed, and every connection got GOAWAY at once.
      {[](ServerConfig* c) { c->max_connection_age_seconds = kMaxChannelSeconds + 1; },
       "--max_connection_age_seconds: must be in [0, 2147483] (0 = no limit), got 2147484"},
      {[](ServerConfig* c) { c->max_connection_age_grace_seconds = kMaxChannelSeconds + 1; },
       "--max_connection_age_grace_seconds: must be in [--drain_seconds (10), 2147483], got 2147484"},
  };
  for (const Case& c : cases) {
    ServerConfig config;
    c.set(&config);
    const absl::Status s = ValidateServerConfig(config);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.expected;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.expected));
  }
}

TEST(ServerConfig, AcceptsTheLongestConnectionAgeGrpcCanTake) {
  ServerConfig config;
  config.max_connection_age_seconds = kMaxChannelSeconds;
  config.max_connection_age_grace_seconds = kMaxChannelSeconds;
  config.max_message_bytes = kMinMessageBytes;
  EXPECT_TRUE(ValidateServerConfig(config).ok()) << ValidateServerConfig(config);
}

TEST(ServerConfig, DescriptionNamesEveryValue) {
  ServerConfig config;
  config.max_streams = 7;
  const std::string d = DescribeServerConfig(config);
  EXPECT_THAT(d, HasSubstr("max_streams=7"));
  EXPECT_THAT(d, HasSubstr("0.0.0.0:50051"));
  EXPECT_THAT(d, HasSubstr("drain_seconds=10"));
  EXPECT_THAT(d, HasSubstr("metrics_listen=\"0.0.0.0:9464\""));
  EXPECT_THAT(d, HasSubstr("max_connection_age_seconds=300"));
}

TEST(ServerConfig, AcceptsTlsMutualTlsAndNoMetrics) {
  ServerConfig config;
  config.tls_cert = "server.pem";
  config.tls_key = "server.key";
  config.tls_client_ca = "ca.pem";
  config.metrics_listen = "";
  config.log_format = "json";
  config.max_connection_age_seconds = 0;
  EXPECT_TRUE(ValidateServerConfig(config).ok());
  EXPECT_THAT(DescribeServerConfig(config), HasSubstr("tls=mutual"));
}

TEST(ServerConfig, WorkersDefaultToOnePerCpuAndAreBounded) {
  ServerConfig config;
  EXPECT_EQ(config.workers, 0);
  EXPECT_FALSE(config.allow_no_compute);
  EXPECT_THAT(DescribeServerConfig(config), HasSubstr("workers=0 (one per CPU)"));
  for (int bad : {-1, 1025}) {
    config.workers = bad;
    const absl::Status s = ValidateServerConfig(config);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr("--workers"));
    EXPECT_THAT(std::string(s.message()), HasSubstr(std::to_string(bad)));
  }
  config.workers = 2;
  config.allow_no_compute = true;
  EXPECT_TRUE(ValidateServerConfig(config).ok());
  EXPECT_THAT(DescribeServerConfig(config), HasSubstr("workers=2 share_steps=true allow_no_compute=true"));
}

TEST(ServerConfig, StepsAreSharedWithIdleWorkersUnlessTurnedOff) {
  ServerConfig config;
  EXPECT_TRUE(config.share_steps);
  config.share_steps = false;
  EXPECT_TRUE(ValidateServerConfig(config).ok());
  EXPECT_THAT(DescribeServerConfig(config), HasSubstr("share_steps=false"));
}

// ParseServerFlags over an argv built from `args` (argv[0] = "samplerd").
std::optional<int> Parse(std::vector<std::string> args, ServerConfig* config) {
  args.insert(args.begin(), "samplerd");
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  return ParseServerFlags(static_cast<int>(argv.size()), argv.data(), "0.0.0-test", config);
}

TEST(ParseServerFlags, FillsTheConfigFromFlags) {
  ServerConfig config;
  EXPECT_EQ(Parse({"--listen", "127.0.0.1:0", "--listen", "unix:/tmp/s.sock", "--max_streams", "7",
                   "--allow_no_compute", "--share_steps=false", "--drain_seconds", "3"},
                  &config),
            std::nullopt);
  EXPECT_EQ(config.listen, (std::vector<std::string>{"127.0.0.1:0", "unix:/tmp/s.sock"}));
  EXPECT_EQ(config.max_streams, 7);
  EXPECT_TRUE(config.allow_no_compute);
  EXPECT_FALSE(config.share_steps);
  EXPECT_EQ(config.drain_seconds, 3);
  EXPECT_EQ(config.metrics_listen, "0.0.0.0:9464");
  EXPECT_FALSE(config.metrics_required) << "the default metrics address is only tried";
}

TEST(ParseServerFlags, AChosenMetricsAddressIsRequired) {
  ServerConfig listen;
  EXPECT_EQ(Parse({"--metrics_listen", "127.0.0.1:0"}, &listen), std::nullopt);
  EXPECT_EQ(listen.metrics_listen, "127.0.0.1:0");
  EXPECT_TRUE(listen.metrics_required);
  ServerConfig port;
  EXPECT_EQ(Parse({"--metrics_port", "9100"}, &port), std::nullopt);
  EXPECT_EQ(port.metrics_listen, "0.0.0.0:9100");
  EXPECT_TRUE(port.metrics_required);
}

TEST(ParseServerFlags, AnUnknownOrMalformedFlagIsAUsageError) {
  ServerConfig config;
  EXPECT_EQ(Parse({"--no_such_flag"}, &config), kExitUsage);
  EXPECT_EQ(Parse({"--max_streams", "many"}, &config), kExitUsage);
  EXPECT_EQ(Parse({"--metrics_port", "70000"}, &config), kExitUsage);
}

}  // namespace
}  // namespace samplerd
