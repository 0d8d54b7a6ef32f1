#include "service/server_config.h"

#include <limits>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "service/unix_socket_path.h"

namespace samplerd {
namespace {

constexpr absl::string_view kLogLevels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
constexpr absl::string_view kLogFormats[] = {"text", "json"};

constexpr int64_t kMaxPendingRequestBytesLimit = int64_t{1} << 50;

absl::Status FlagError(absl::string_view flag, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", message));
}

// host:port with a port in 0..65535.
bool IsHostPort(absl::string_view address) {
  const size_t colon = address.rfind(':');
  uint32_t port = 0;
  return colon != absl::string_view::npos && colon != 0 && absl::SimpleAtoi(address.substr(colon + 1), &port) &&
         port <= 65535;
}

// gRPC itself only reports a bad address after BuildAndStart, as one failure for all ports; checking the
// syntax here lets the error name the address.
absl::Status ValidateListenAddress(absl::string_view address) {
  if (address.empty()) return FlagError("listen", "must not be empty");
  if (const std::optional<UnixListenAddress> parsed = ParseUnixListenAddress(address); parsed.has_value()) {
    if (parsed->after_slashes && !absl::StartsWith(parsed->path, "/")) {
      return FlagError("listen", absl::StrCat("\"", address, "\": unix:// takes an absolute path (unix:///path)"));
    }
    if (parsed->path.empty()) return FlagError("listen", absl::StrCat("\"", address, "\": the socket path is empty"));
    return absl::OkStatus();
  }
  if (!IsHostPort(address)) {
    return FlagError("listen", absl::StrCat("must be host:port (port 0..65535, 0 = any free port), unix:/path or "
                                            "unix:///path, got \"",
                                            address, "\""));
  }
  return absl::OkStatus();
}

absl::Status CheckPositive(absl::string_view flag, int64_t value, int64_t max) {
  if (value < 1 || value > max) {
    return FlagError(flag, absl::StrCat("must be in [1, ", max, "], got ", value));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateServerConfig(const ServerConfig& config) {
  if (config.listen.empty()) return FlagError("listen", "at least one address is needed");
  for (const std::string& address : config.listen) {
    if (absl::Status s = ValidateListenAddress(address); !s.ok()) return s;
    if (!config.shm_socket.empty() && UnixListenPath(address) == config.shm_socket) {
      return FlagError("shm_socket", absl::StrCat("\"", config.shm_socket,
                                                  "\" is also a --listen address; the two "
                                                  "sockets need two paths"));
    }
  }
  // gRPC takes the message limit as an int; below kMinMessageBytes a health check's answer fits but not much else.
  if (config.max_message_bytes < kMinMessageBytes || config.max_message_bytes > std::numeric_limits<int>::max()) {
    return FlagError("max_message_bytes",
                     absl::StrCat("must be in [", kMinMessageBytes, ", ", std::numeric_limits<int>::max(), "], got ",
                                  config.max_message_bytes));
  }
  // Token ids are int32 on the wire.
  if (absl::Status s = CheckPositive("max_vocab", config.max_vocab, std::numeric_limits<int32_t>::max()); !s.ok()) {
    return s;
  }
  if (absl::Status s =
          CheckPositive("max_attention_elements", config.max_attention_elements, std::numeric_limits<int64_t>::max());
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          CheckPositive("max_attention_rows", config.max_attention_rows, std::numeric_limits<int64_t>::max());
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          CheckPositive("max_health_watches", config.max_health_watches, std::numeric_limits<int32_t>::max());
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          CheckPositive("max_steps_per_request", config.max_steps_per_request, std::numeric_limits<int32_t>::max());
      !s.ok()) {
    return s;
  }
  // The upper bound keeps the running count far from overflow.
  if (absl::Status s =
          CheckPositive("max_pending_request_bytes", config.max_pending_request_bytes, kMaxPendingRequestBytesLimit);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckPositive("max_streams", config.max_streams, std::numeric_limits<int32_t>::max()); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckPositive("max_streams_per_connection", config.max_streams_per_connection,
                                     std::numeric_limits<int32_t>::max());
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckPositive("shm_max_clients", config.shm_max_clients, std::numeric_limits<int32_t>::max());
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckPositive("shm_max_regions_per_client", config.shm_max_regions_per_client,
                                     std::numeric_limits<int32_t>::max());
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckPositive("shm_max_bytes_per_client", config.shm_max_bytes_per_client,
                                     std::numeric_limits<int64_t>::max());
      !s.ok()) {
    return s;
  }
  // A pool far larger than the cores only costs memory (a Workspace per thread); WorkerPool has the same bound.
  if (config.workers < 0 || config.workers > 1024) {
    return FlagError("workers", absl::StrCat("must be in [0, 1024] (0 = one per CPU), got ", config.workers));
  }
  if (config.drain_seconds < 0 || config.drain_seconds > kMaxChannelSeconds) {
    return FlagError("drain_seconds",
                     absl::StrCat("must be in [0, ", kMaxChannelSeconds, "], got ", config.drain_seconds));
  }
  bool known_level = false;
  for (absl::string_view level : kLogLevels) known_level = known_level || config.log_level == level;
  if (!known_level) {
    return FlagError("log_level", absl::StrCat("must be one of ", absl::StrJoin(kLogLevels, ", "), ", got \"",
                                               config.log_level, "\""));
  }
  bool known_format = false;
  for (absl::string_view format : kLogFormats) known_format = known_format || config.log_format == format;
  if (!known_format) {
    return FlagError("log_format", absl::StrCat("must be one of ", absl::StrJoin(kLogFormats, ", "), ", got \"",
                                                config.log_format, "\""));
  }
  if (config.tls_cert.empty() != config.tls_key.empty()) {
    return config.tls_cert.empty() ? FlagError("tls_cert", "is required with --tls_key")
                                   : FlagError("tls_key", "is required with --tls_cert");
  }
  if (!config.tls_client_ca.empty() && config.tls_cert.empty()) {
    return FlagError("tls_client_ca", "mutual TLS needs the server's own --tls_cert and --tls_key");
  }
  if (!config.metrics_listen.empty() && !IsHostPort(config.metrics_listen)) {
    return FlagError("metrics_listen", absl::StrCat("must be host:port (port 0..65535) or empty (no metrics), got \"",
                                                    config.metrics_listen, "\""));
  }
  // gRPC takes both in milliseconds, as an int.
  if (config.max_connection_age_seconds < 0 || config.max_connection_age_seconds > kMaxChannelSeconds) {
    return FlagError("max_connection_age_seconds",
                     absl::StrCat("must be in [0, ", kMaxChannelSeconds, "] (0 = no limit), got ",
                                  config.max_connection_age_seconds));
  }
  if (config.max_connection_age_grace_seconds < config.drain_seconds ||
      config.max_connection_age_grace_seconds > kMaxChannelSeconds) {
    return FlagError("max_connection_age_grace_seconds",
                     absl::StrCat("must be in [--drain_seconds (", config.drain_seconds, "), ", kMaxChannelSeconds,
                                  "], got ", config.max_connection_age_grace_seconds));
  }
  return absl::OkStatus();
}

std::optional<int> ParseServerFlags(int argc, char** argv, absl::string_view version, ServerConfig* config) {
  CLI::App app{"samplerd: entropy-adaptive token sampling for LLMs, served over gRPC (samplerd.v1.Sampler)."};
  app.add_option("--listen", config->listen,
                 "Address to serve on; repeatable. host:port (port 0 = any free port, printed at start), "
                 "unix:/path or unix:///path")
      ->capture_default_str();
  app.add_option("--config", config->config_path,
                 "Profiles file: protobuf JSON of samplerd.v1.ProfileSet, added to the built-in entropix, "
                 "entropix-frog and fixed profiles (a built-in name replaces that profile)");
  app.add_option("--max_message_bytes", config->max_message_bytes, "Largest request or response message, in bytes")
      ->capture_default_str();
  app.add_option("--max_vocab", config->max_vocab, "Largest logits tensor, in elements (vocabulary size)")
      ->capture_default_str();
  app.add_option("--max_attention_elements", config->max_attention_elements,
                 "Largest attention tensor (layers x heads x kv_len), in elements")
      ->capture_default_str();
  app.add_option("--max_attention_rows", config->max_attention_rows,
                 "Most attention rows (layers x heads) in one step; each row has scratch of its own")
      ->capture_default_str();
  app.add_option("--max_health_watches", config->max_health_watches,
                 "Most concurrent grpc.health.v1.Health/Watch streams; further ones end with RESOURCE_EXHAUSTED")
      ->capture_default_str();
  app.add_option("--max_steps_per_request", config->max_steps_per_request,
                 "Most steps in one SampleRequest; more ends the call with RESOURCE_EXHAUSTED")
      ->capture_default_str();
  app.add_option("--max_pending_request_bytes", config->max_pending_request_bytes,
                 "Most bytes of parsed requests received and not yet answered, and of answers not yet written, over "
                 "all calls; a request past it "
                 "has each step answered RESOURCE_EXHAUSTED at once (one is always taken on when none is pending)")
      ->capture_default_str();
  app.add_option("--max_streams", config->max_streams,
                 "Most concurrent Sample streams; further streams end with RESOURCE_EXHAUSTED")
      ->capture_default_str();
  app.add_option("--max_streams_per_connection", config->max_streams_per_connection,
                 "Most calls of any kind open at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); a "
                 "client past it waits")
      ->capture_default_str();
  app.add_option("--workers", config->workers,
                 "Threads that run core steps (a request's steps are spread over them); 0 = one per CPU")
      ->capture_default_str();
  app.add_option("--share_steps", config->share_steps,
                 "Let a large step (attention of at least 262144 elements) share its metric passes with an idle worker "
                 "(lower latency when the server is quiet)")
      ->capture_default_str();
  app.add_flag("--allow_no_compute", config->allow_no_compute,
               "Answer calls with metadata samplerd-no-compute: 1 without core (transport benchmarks only)");
  app.add_option("--drain_seconds", config->drain_seconds,
                 "On SIGTERM/SIGINT, seconds in-flight calls may run before they are cancelled")
      ->capture_default_str();
  app.add_option("--log_level", config->log_level, "trace, debug, info, warn, error, critical or off")
      ->capture_default_str();
  app.add_option("--log_format", config->log_format,
                 "text, or json: one JSON object per line on stderr (time, level, logger, msg, and the caller's "
                 "W3C traceparent when a call sent one)")
      ->capture_default_str();
  app.add_option("--tls_cert", config->tls_cert,
                 "PEM certificate chain: serve TLS on every TCP address (unix: sockets stay plaintext); needs "
                 "--tls_key");
  app.add_option("--tls_key", config->tls_key, "PEM private key of --tls_cert (unencrypted)");
  app.add_option("--tls_client_ca", config->tls_client_ca,
                 "PEM CA bundle: mutual TLS, a client must present a certificate this CA signed");
  app.add_option("--auth_token_file", config->auth_token_file,
                 "File of accepted bearer tokens, one per line: every RPC except grpc.health.v1 must send "
                 "'authorization: Bearer <token>', else UNAUTHENTICATED; re-read on SIGHUP");
  app.add_option("--shm_socket", config->shm_socket,
                 "Unix socket path where clients register shared-memory regions (docs/shm.md); empty = no "
                 "shared-memory plane");
  app.add_option("--shm_max_clients", config->shm_max_clients, "Shared-memory control connections open at once")
      ->capture_default_str();
  app.add_option("--shm_max_regions_per_client", config->shm_max_regions_per_client,
                 "Shared-memory regions one control connection may register at once")
      ->capture_default_str();
  app.add_option("--shm_max_bytes_per_client", config->shm_max_bytes_per_client,
                 "Bytes of shared-memory regions one control connection may register at once")
      ->capture_default_str();
  CLI::Option* metrics_listen =
      app.add_option("--metrics_listen", config->metrics_listen,
                     "host:port serving Prometheus /metrics and the live page (/) over HTTP, both public (port 0 = any "
                     "free port, printed at start); "
                     "\"\" = no metrics. When left at the default and taken, samplerd logs an error and runs without")
          ->capture_default_str();
  // docs/contract.md section 7 names the flag --metrics_port: the same server on every interface.
  int metrics_port = -1;
  app.add_option("--metrics_port", metrics_port,
                 "Port serving Prometheus /metrics on every interface: --metrics_listen 0.0.0.0:PORT (0 = any free "
                 "port)")
      ->check(CLI::Range(0, 65535))
      ->excludes(metrics_listen);
  app.add_option("--max_connection_age_seconds", config->max_connection_age_seconds,
                 "Close connections older than this (GOAWAY), so clients rebalance over replicas; 0 = never")
      ->capture_default_str();
  app.add_option("--max_connection_age_grace_seconds", config->max_connection_age_grace_seconds,
                 "Seconds the calls of an aged connection may still run; at least --drain_seconds")
      ->capture_default_str();
  app.set_version_flag("--version", std::string(version));
  app.footer(
      "Signals: SIGTERM/SIGINT drain (health NOT_SERVING, no new calls, in-flight calls get --drain_seconds) and "
      "exit 0; SIGHUP re-reads --config and --auth_token_file, keeping the old ones if a file is bad.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }

  if (metrics_port >= 0) config->metrics_listen = absl::StrCat("0.0.0.0:", metrics_port);
  config->metrics_required = app.count("--metrics_listen") > 0 || app.count("--metrics_port") > 0;
  return std::nullopt;
}

std::string DescribeServerConfig(const ServerConfig& config) {
  return absl::StrCat(
      "listen=[", absl::StrJoin(config.listen, ", "), "] config=\"",
      config.config_path.empty() ? "(built-in profiles)" : config.config_path,
      "\" max_message_bytes=", config.max_message_bytes, " max_vocab=", config.max_vocab,
      " max_attention_elements=", config.max_attention_elements, " max_attention_rows=", config.max_attention_rows,
      " max_health_watches=", config.max_health_watches, " max_steps_per_request=", config.max_steps_per_request,
      " max_pending_request_bytes=", config.max_pending_request_bytes, " max_streams=", config.max_streams,
      " max_streams_per_connection=", config.max_streams_per_connection, " drain_seconds=", config.drain_seconds,
      " log_level=", config.log_level, " log_format=", config.log_format,
      " tls=", config.tls_cert.empty() ? "off" : (config.tls_client_ca.empty() ? "on" : "mutual"),
      " auth_token=", config.auth_token_file.empty() ? "off" : "on", " metrics_listen=\"", config.metrics_listen, "\"",
      " max_connection_age_seconds=", config.max_connection_age_seconds,
      " max_connection_age_grace_seconds=", config.max_connection_age_grace_seconds,
      " workers=", config.workers == 0 ? std::string("0 (one per CPU)") : absl::StrCat(config.workers),
      " share_steps=", config.share_steps ? "true" : "false",
      " allow_no_compute=", config.allow_no_compute ? "true" : "false");
}

}  // namespace samplerd
