#include "service/server_config.h"

#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace samplerd {
namespace {

constexpr absl::string_view kLogLevels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
constexpr absl::string_view kLogFormats[] = {"text", "json"};

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
  for (absl::string_view scheme : {"unix:", "unix-abstract:"}) {
    if (absl::StartsWith(address, scheme)) {
      absl::string_view path = address.substr(scheme.size());
      if (absl::ConsumePrefix(&path, "//") && !absl::StartsWith(path, "/")) {
        return FlagError("listen", absl::StrCat("\"", address, "\": unix:// takes an absolute path (unix:///path)"));
      }
      if (path.empty()) return FlagError("listen", absl::StrCat("\"", address, "\": the socket path is empty"));
      return absl::OkStatus();
    }
  }
  if (!IsHostPort(address)) {
    return FlagError("listen", absl::StrCat("must be host:port (port 0..65535, 0 = any free port), unix:/path or "
                                            "unix:///path, got \"", address, "\""));
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
  }
  // gRPC takes the message limit as an int.
  if (absl::Status s = CheckPositive("max_message_bytes", config.max_message_bytes, std::numeric_limits<int>::max());
      !s.ok()) {
    return s;
  }
  // Token ids are int32 on the wire.
  if (absl::Status s = CheckPositive("max_vocab", config.max_vocab, std::numeric_limits<int32_t>::max()); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckPositive("max_attention_elements", config.max_attention_elements,
                                     std::numeric_limits<int64_t>::max());
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckPositive("max_attention_rows", config.max_attention_rows,
                                     std::numeric_limits<int64_t>::max());
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckPositive("max_health_watches", config.max_health_watches,
                                     std::numeric_limits<int32_t>::max());
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckPositive("max_steps_per_request", config.max_steps_per_request,
                                     std::numeric_limits<int32_t>::max());
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckPositive("max_streams", config.max_streams, std::numeric_limits<int32_t>::max());
      !s.ok()) {
    return s;
  }
  // A pool far larger than the cores only costs memory (a Workspace per thread); WorkerPool has the same bound.
  if (config.workers < 0 || config.workers > 1024) {
    return FlagError("workers", absl::StrCat("must be in [0, 1024] (0 = one per CPU), got ", config.workers));
  }
  if (config.drain_seconds < 0) {
    return FlagError("drain_seconds", absl::StrCat("must be >= 0, got ", config.drain_seconds));
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
  if (config.max_connection_age_seconds < 0) {
    return FlagError("max_connection_age_seconds",
                     absl::StrCat("must be >= 0 (0 = no limit), got ", config.max_connection_age_seconds));
  }
  if (config.max_connection_age_grace_seconds < config.drain_seconds) {
    return FlagError("max_connection_age_grace_seconds",
                     absl::StrCat("must be >= --drain_seconds (", config.drain_seconds, "), got ",
                                  config.max_connection_age_grace_seconds));
  }
  return absl::OkStatus();
}

std::string DescribeServerConfig(const ServerConfig& config) {
  return absl::StrCat("listen=[", absl::StrJoin(config.listen, ", "), "] config=\"",
                      config.config_path.empty() ? "(built-in profiles)" : config.config_path,
                      "\" max_message_bytes=", config.max_message_bytes, " max_vocab=", config.max_vocab,
                      " max_attention_elements=", config.max_attention_elements,
                      " max_attention_rows=", config.max_attention_rows,
                      " max_health_watches=", config.max_health_watches,
                      " max_steps_per_request=", config.max_steps_per_request, " max_streams=", config.max_streams,
                      " drain_seconds=", config.drain_seconds, " log_level=", config.log_level,
                      " log_format=", config.log_format,
                      " tls=", config.tls_cert.empty() ? "off" : (config.tls_client_ca.empty() ? "on" : "mutual"),
                      " auth_token=", config.auth_token_file.empty() ? "off" : "on",
                      " metrics_listen=\"", config.metrics_listen, "\"",
                      " max_connection_age_seconds=", config.max_connection_age_seconds,
                      " max_connection_age_grace_seconds=", config.max_connection_age_grace_seconds,
                      " workers=", config.workers == 0 ? std::string("0 (one per CPU)") : absl::StrCat(config.workers),
                      " share_steps=", config.share_steps ? "true" : "false",
                      " allow_no_compute=", config.allow_no_compute ? "true" : "false");
}

}  // namespace samplerd
