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
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/tensor_view.h"

namespace samplerd {

// ServerConfig
//
// Listen addresses, the profile config file and the size limits. Sizes are counts of elements or bytes;
// times are seconds.
struct ServerConfig {
  // gRPC addresses: "host:port" (port 0 = pick a free one) or "unix:/path" / "unix:///path".
  std::vector<std::string> listen = {"0.0.0.0:50051"};
  // Protobuf JSON of samplerd.v1.ProfileSet; empty = the built-in profiles only.
  std::string config_path;

  // Largest request or response message, in bytes. gRPC enforces it per message and ends the stream with
  // RESOURCE_EXHAUSTED, so it also bounds the memory one read can take.
  int64_t max_message_bytes = int64_t{64} << 20;
  // Largest logits tensor, in elements (token ids are int32, so at most 2^31 - 1).
  int64_t max_vocab = int64_t{1} << 20;
  // Largest attention tensor (layers x heads x kv_len), in elements.
  int64_t max_attention_elements = int64_t{64} << 20;
  // Most attention rows (layers x heads): each row has scratch of its own, so rows cost more than elements.
  int64_t max_attention_rows = int64_t{64} << 10;
  // Most steps one SampleRequest may carry; more ends the call with RESOURCE_EXHAUSTED.
  int32_t max_steps_per_request = 4096;
  // Most concurrent Sample streams over all connections; a stream past it ends with RESOURCE_EXHAUSTED.
  int32_t max_streams = 1024;
  // Most concurrent grpc.health.v1.Health/Watch streams (which need no token); more end with RESOURCE_EXHAUSTED.
  int32_t max_health_watches = 64;
  // Threads that run core steps, each with its own scratch (service/worker_pool.h); one request's steps are
  // spread over all of them. 0 = one per CPU this process may run on.
  int32_t workers = 0;
  // Let a step share its metric passes with an idle worker (core/fork_join.h): lower latency for a lone stream
  // on a quiet server, at the price of the idle worker's CPU. Off: one step, one thread.
  bool share_steps = true;
  // Honour the request metadata `samplerd-no-compute: 1`: such a stream is answered without calling core (each
  // result echoes only sequence_id and step), so `samplerctl bench --no-compute` measures the bare transport for
  // the same bytes. Off by default: a client could otherwise get answers that carry no token.
  bool allow_no_compute = false;
  // On SIGTERM, how long in-flight calls may run before they are cancelled.
  int32_t drain_seconds = 10;
  // spdlog level name: trace, debug, info, warn, error, critical or off.
  std::string log_level = "info";
  // "text" (spdlog's default lines) or "json" (one JSON object per line, with the caller's W3C traceparent).
  std::string log_format = "text";

  // TLS on every TCP listener (unix: listeners stay plaintext): PEM files of the server's certificate chain and
  // private key, both or neither.
  std::string tls_cert;
  std::string tls_key;
  // PEM CA bundle; set = mutual TLS: a client must present a certificate this CA signed. Needs tls_cert.
  std::string tls_client_ca;
  // File holding the bearer token every RPC but grpc.health.v1 must carry; empty = no token check.
  std::string auth_token_file;

  // Prometheus /metrics over HTTP: "host:port" (port 0 = any free port); empty = no metrics endpoint.
  std::string metrics_listen = "0.0.0.0:9464";

  // A connection older than this gets a GOAWAY, so clients reconnect and spread over the replicas behind a
  // load balancer; 0 = connections live forever.
  int32_t max_connection_age_seconds = 300;
  // How long the calls of an aged connection may still run before it is closed; at least drain_seconds, so a
  // stream is never cut sooner by aging than by a shutdown.
  int32_t max_connection_age_grace_seconds = 30;

  // The tensor limits core applies while decoding a step.
  TensorLimits tensor_limits() const {
    TensorLimits limits;
    limits.max_vocab = max_vocab;
    limits.max_attention_elements = max_attention_elements;
    limits.max_attention_rows = max_attention_rows;
    return limits;
  }
};

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
