// The server's configuration: what `samplerd`'s flags parse into, validated once before anything starts.
//
// Every limit of docs/contract.md section 6 lives here with its default, so a test or an embedding program can build a
// server without going through the command line:
//
//   ServerConfig config;
//   config.listen = {"127.0.0.1:0", "unix:/tmp/samplerd.sock"};
//   config.max_steps_per_request = 64;
//   if (absl::Status s = ValidateServerConfig(config); !s.ok()) { ... }
//
// The struct is immutable once the server runs (docs/style.md: the service holds no other state).
#ifndef SAMPLERD_SERVICE_SERVER_CONFIG_H_
#define SAMPLERD_SERVICE_SERVER_CONFIG_H_

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/tensor_view.h"

namespace samplerd {

// The smallest --max_message_bytes: health checks, ListProfiles of the built-in profiles and errors fit.
inline constexpr int64_t kMinMessageBytes = 4096;
// The longest connection age, grace and drain: gRPC takes the first two in milliseconds, as an int (about 24.8
// days), and the grace is at least the drain.
inline constexpr int32_t kMaxChannelSeconds = std::numeric_limits<int>::max() / 1000;

// ServerConfig
//
// Each field is the flag of the same name (--listen, --max_vocab, ...); ParseServerFlags (server_config.cc) holds
// the one description of each, shown by `samplerd --help`. Comments here only say why a field is as it is.
// Sizes are counts of elements or bytes; times are seconds.
struct ServerConfig {
  std::vector<std::string> listen = {"0.0.0.0:50051"};
  // --config; empty = the built-in profiles only.
  std::string config_path;

  // gRPC enforces it per message, so it also bounds the memory one read can take.
  int64_t max_message_bytes = int64_t{64} << 20;
  // Token ids are int32, so at most 2^31 - 1.
  int64_t max_vocab = int64_t{1} << 20;
  int64_t max_attention_elements = int64_t{64} << 20;
  // Each row has scratch of its own, so rows cost more than elements.
  int64_t max_attention_rows = int64_t{64} << 10;
  int32_t max_steps_per_request = 4096;
  // Requests wait for the workers while they hold their memory, and neither --max_streams nor the per-connection
  // limit counts SampleOnce calls: this bounds them all at once. A parsed request can be several times its wire
  // size (a packed varint becomes an int64), so it is counted parsed.
  int64_t max_pending_request_bytes = int64_t{512} << 20;
  // Over all connections.
  int32_t max_streams = 1024;
  // Calls of any kind open at once on one HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS): a client past it
  // waits for a slot, so one connection cannot hold every --max_streams slot.
  int32_t max_streams_per_connection = 100;
  // Health watches need no token, so they get a limit of their own.
  int32_t max_health_watches = 64;
  // Each worker has its own scratch (service/worker_pool.h).
  int32_t workers = 0;
  // core/fork_join.h: lower latency for a lone stream on a quiet server, at the price of the idle worker's CPU.
  bool share_steps = true;
  // `samplerctl bench --no-compute` measures the bare transport for the same bytes. Off by default: a client
  // could otherwise get answers that carry no token.
  bool allow_no_compute = false;
  int32_t drain_seconds = 10;
  std::string log_level = "info";
  std::string log_format = "text";

  // TLS covers TCP listeners only: a unix socket's file permissions decide who connects.
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  std::string auth_token_file;

  std::string metrics_listen = "0.0.0.0:9464";
  // metrics_listen was chosen (--metrics_listen or --metrics_port), so failing to serve it stops the start.
  // Left at the default it is only tried: a second samplerd on one host (tests, a developer machine) finds it
  // taken.
  bool metrics_required = false;

  // Aged connections make clients spread over the replicas behind a load balancer.
  int32_t max_connection_age_seconds = 300;
  // At least drain_seconds, so a stream is never cut sooner by aging than by a shutdown.
  int32_t max_connection_age_grace_seconds = 30;

  // The shared-memory control socket (docs/shm.md): a unix socket path; empty = no shared-memory plane.
  std::string shm_socket;
  // Control connections open at once, regions per connection, and bytes of regions per connection.
  int32_t shm_max_clients = 64;
  int32_t shm_max_regions_per_client = 16;
  int64_t shm_max_bytes_per_client = int64_t{1} << 30;

  // The tensor limits core applies while decoding a step.
  TensorLimits tensor_limits() const {
    TensorLimits limits;
    limits.max_vocab = max_vocab;
    limits.max_attention_elements = max_attention_elements;
    limits.max_attention_rows = max_attention_rows;
    return limits;
  }
};

// The exit code of a bad flag, config, certificate or token file.
inline constexpr int kExitUsage = 2;

// ParseServerFlags()
//
// samplerd's command line into `config`: every flag with its help text (the one place a flag is described),
// --metrics_port (docs/contract.md section 7: --metrics_listen on every interface) and --version. Returns the
// exit code when the process should stop here: 0 after --help or --version, kExitUsage after a parse error
// (CLI11 has printed the message). The result still needs ValidateServerConfig.
//
//   ServerConfig config;
//   if (std::optional<int> exit_code = ParseServerFlags(argc, argv, SAMPLERD_VERSION, &config)) return *exit_code;
std::optional<int> ParseServerFlags(int argc, char** argv, absl::string_view version, ServerConfig* config);

// ValidateServerConfig()
//
// Returns INVALID_ARGUMENT naming the first bad flag (as "--flag_name: ...") and the value received: an empty
// or malformed listen address, a non-positive limit, a message size over what gRPC can represent (int), a vocab
// over int32, a negative drain time or an unknown log level or format; a TLS key without its certificate (or the
// reverse) or a client CA without them; a malformed metrics address; a negative connection age or a grace
// shorter than the drain. Files are not opened here: their loaders name the flag when one cannot be read.
absl::Status ValidateServerConfig(const ServerConfig& config);

// DescribeServerConfig()
//
// One line with every effective value, for the start-up log.
std::string DescribeServerConfig(const ServerConfig& config);

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_SERVER_CONFIG_H_
