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

absl::Status FlagError(absl::string_view flag, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", message));
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
  const size_t colon = address.rfind(':');
  uint32_t port = 0;
  if (colon == absl::string_view::npos || colon == 0 || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port > 65535) {
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
  if (absl::Status s = CheckPositive("max_steps_per_request", config.max_steps_per_request,
                                     std::numeric_limits<int32_t>::max());
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckPositive("max_streams", config.max_streams, std::numeric_limits<int32_t>::max());
      !s.ok()) {
    return s;
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
  return absl::OkStatus();
}

std::string DescribeServerConfig(const ServerConfig& config) {
  return absl::StrCat("listen=[", absl::StrJoin(config.listen, ", "), "] config=\"",
                      config.config_path.empty() ? "(built-in profiles)" : config.config_path,
                      "\" max_message_bytes=", config.max_message_bytes, " max_vocab=", config.max_vocab,
                      " max_attention_elements=", config.max_attention_elements,
                      " max_steps_per_request=", config.max_steps_per_request, " max_streams=", config.max_streams,
                      " drain_seconds=", config.drain_seconds, " log_level=", config.log_level);
}

}  // namespace samplerd
