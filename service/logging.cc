#include "service/logging.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/field_error.h"
#include "grpc/support/log.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/server_context.h"
#include "nlohmann/json.hpp"
#include "service/tsan_annotations.h"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace samplerd {
namespace {

// The trace context of the call the current thread is logging about; null outside a ScopedTraceparent.
thread_local const std::string* current_traceparent = nullptr;

void Append(spdlog::memory_buf_t& dest, absl::string_view text) { dest.append(text.data(), text.data() + text.size()); }

// One JSON object per line. The field set is fixed so that log pipelines can map it once. nlohmann-json escapes
// the strings and replaces bytes that are not UTF-8 with U+FFFD: a message can quote bytes a client sent (a
// path, a metadata value gRPC core rejects), and a line that is not valid JSON is lost to the pipeline.
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const auto since_epoch = msg.time.time_since_epoch();
    const std::time_t seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch).count();
    const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(since_epoch).count() % 1000000;
    std::tm utc;
    gmtime_r(&seconds, &utc);
    char time[96];  // room for any int the compiler cannot rule out
    std::snprintf(time, sizeof(time), "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", utc.tm_year + 1900, utc.tm_mon + 1,
                  utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, static_cast<int>(micros));
    const spdlog::string_view_t level = spdlog::level::to_string_view(msg.level);
    nlohmann::ordered_json line = nlohmann::ordered_json::object();  // keeps the fields in this order
    line["time"] = time;
    line["level"] = std::string(level.data(), level.size());
    line["logger"] = std::string(msg.logger_name.data(), msg.logger_name.size());
    line["msg"] = std::string(msg.payload.data(), msg.payload.size());
    if (current_traceparent != nullptr && !current_traceparent->empty()) line["traceparent"] = *current_traceparent;
    Append(dest, line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
    dest.push_back('\n');
  }

  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

// %V in a text pattern: the message with control characters escaped (\n, \r, \t, \xNN), so that a text line
// stays one line whatever a message quotes (a name a client sent, a multi-line parser error) and cannot be made
// to look like another line.
class EscapedPayloadFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    static constexpr char kHex[] = "0123456789abcdef";
    for (const char c : absl::string_view(msg.payload.data(), msg.payload.size())) {
      const auto byte = static_cast<unsigned char>(c);
      if (byte >= 0x20 && byte != 0x7f) {
        dest.push_back(c);
      } else if (c == '\n') {
        Append(dest, "\\n");
      } else if (c == '\r') {
        Append(dest, "\\r");
      } else if (c == '\t') {
        Append(dest, "\\t");
      } else {
        const char escaped[] = {'\\', 'x', kHex[byte >> 4], kHex[byte & 0xf]};
        dest.append(escaped, escaped + sizeof(escaped));
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<EscapedPayloadFlag>(); }
};

// %* in a text pattern: " traceparent=<value>" when the line is about a traced call, nothing otherwise.
class TraceparentFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg&, const std::tm&, spdlog::memory_buf_t& dest) override {
    if (current_traceparent == nullptr || current_traceparent->empty()) return;
    Append(dest, " traceparent=");
    Append(dest, *current_traceparent);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<TraceparentFlag>(); }
};

bool IsLowerHex(absl::string_view s) {
  for (const char c : s) {
    if (!absl::ascii_isdigit(c) && !(c >= 'a' && c <= 'f')) return false;
  }
  return true;
}

// W3C Trace Context, section 3.2: version 00 is exactly 55 characters; a later version may append fields after
// another dash, which we drop. The all-zero trace and parent ids and version ff are invalid.
std::string ParseTraceparent(absl::string_view value) {
  value = absl::StripAsciiWhitespace(value);
  if (value.size() < 55 || (value.size() > 55 && value[55] != '-')) return "";
  value = value.substr(0, 55);
  if (value[2] != '-' || value[35] != '-' || value[52] != '-') return "";
  const absl::string_view version = value.substr(0, 2);
  const absl::string_view trace_id = value.substr(3, 32);
  const absl::string_view parent_id = value.substr(36, 16);
  const absl::string_view flags = value.substr(53, 2);
  if (!IsLowerHex(version) || !IsLowerHex(trace_id) || !IsLowerHex(parent_id) || !IsLowerHex(flags)) return "";
  if (version == "ff" || trace_id == std::string(32, '0') || parent_id == std::string(16, '0')) return "";
  return std::string(value);
}

// The codes an operator may have to act on (capacity, bugs, overload) are warnings; the others describe the
// caller's request (a bad argument, an unknown method such as a reflection version probe, a cancellation).
bool ServerSideProblem(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DATA_LOSS:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return true;
    default:
      return false;
  }
}

}  // namespace

int64_t LogBudget::Admit() {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  if (now - window_start_ >= std::chrono::seconds(1)) {
    window_start_ = now;
    written_ = 0;
  }
  if (written_ >= lines_per_second_) {
    ++held_back_;
    return -1;
  }
  ++written_;
  const int64_t held = held_back_;
  held_back_ = 0;
  return held;
}

LogBudget& CallProblemLogBudget() {
  static LogBudget* const budget = new LogBudget(kCallProblemLinesPerSecond);
  return *budget;
}

std::string HeldBackNote(int64_t held_back) {
  return held_back <= 0 ? std::string() : absl::StrCat(" (", held_back, " similar lines held back)");
}

namespace {

class CallLogInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit CallLogInterceptor(grpc::experimental::ServerRpcInfo* info)
      : info_(info), start_(std::chrono::steady_clock::now()) {
    TsanHappensBefore(this);  // gRPC runs the hooks and the deletion on other threads (tsan_annotations.h)
  }
  ~CallLogInterceptor() override { TsanHappensAfter(this); }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    TsanHandedOff handed_off(this);
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      traceparent_ = TraceparentOf(*methods->GetRecvInitialMetadata());
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      const double millis =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count();
      ScopedTraceparent scope(traceparent_);
      if (status.ok() && !info_->server_context()->IsCancelled()) {
        spdlog::debug("{} OK in {:.3f} ms", info_->method(), millis);  // a registered method: our own name
      } else if (const int64_t held = CallProblemLogBudget().Admit(); held < 0) {
        // Over the budget: counted, reported by the next line written.
      } else if (status.ok()) {
        // gRPC ended the call before this OK: the client cancelled or its deadline passed, the connection broke,
        // or a message was over --max_message_bytes (the client got RESOURCE_EXHAUSTED). It goes nowhere.
        spdlog::info("{} from {} was ended by gRPC before its status ({:.3f} ms){}", QuotedMethod(),
                     info_->server_context()->peer(), millis, HeldBackNote(held));
      } else {
        spdlog::log(ServerSideProblem(status.error_code()) ? spdlog::level::warn : spdlog::level::info,
                    "{} from {} ended with {}: {} ({:.3f} ms){}", QuotedMethod(), info_->server_context()->peer(),
                    absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())),
                    status.error_message(), millis, HeldBackNote(held));
      }
    }
    methods->Proceed();
  }

 private:
  // The path the client sent, at most kMaxQuotedBytes of it. For a method no service has, gRPC keeps the whole
  // path in a generic server context; ServerRpcInfo::method() is the same path as a C string, which a NUL in it
  // would cut short.
  std::string QuotedMethod() const {
    grpc::ServerContextBase* const context = info_->server_context();
    if (const auto* generic = dynamic_cast<const grpc::GenericCallbackServerContext*>(context)) {
      return Excerpt(generic->method());
    }
    if (const auto* generic = dynamic_cast<const grpc::GenericServerContext*>(context)) {
      return Excerpt(generic->method());
    }
    return Excerpt(info_->method());
  }

  grpc::experimental::ServerRpcInfo* const info_;
  const std::chrono::steady_clock::time_point start_;
  std::string traceparent_;
};

class CallLogInterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    return new CallLogInterceptor(info);
  }
};

// Cleared at the end of main, after which gRPC lines go straight to stderr (gRPC 1.51 does not export its
// default log function to restore).
std::atomic<bool> grpc_logs_to_spdlog{false};

// gRPC core's own lines (a failed TLS handshake, a bad frame) through the same logger, so a JSON log stays JSON.
// gRPC writes some of them about what a client sent, before any token check: one for each call that declares a
// disabled compression, one for each metadata value its HPACK parser rejects (dozens in one call). So they have
// a budget, of their own: sharing CallProblemLogBudget() would let one such client crowd out samplerd's lines
// about refused calls, which name the call and carry its trace context.
void GrpcLogToSpdlog(gpr_log_func_args* args) {
  static LogBudget* const budget = new LogBudget(kGrpcCoreLinesPerSecond);
  // Clients make gRPC write error lines (a disabled encoding, a malformed header value); info and debug lines
  // only come when an operator asks with GRPC_VERBOSITY or GRPC_TRACE, and then all of them are wanted. A failed
  // GPR_ASSERT's line always shows: the process aborts after it, and the line says why.
  const bool budgeted =
      args->severity == GPR_LOG_SEVERITY_ERROR && !absl::StartsWith(args->message, "assertion failed: ");
  const int64_t held = budgeted ? budget->Admit() : 0;
  if (held < 0) return;
  const std::string message = budgeted ? Excerpt(args->message, kMaxGrpcLineBytes) : std::string(args->message);
  if (!grpc_logs_to_spdlog.load()) {
    std::fprintf(stderr, "grpc %s:%d: %s%s\n", args->file, args->line, message.c_str(), HeldBackNote(held).c_str());
    return;
  }
  spdlog::level::level_enum level = spdlog::level::debug;
  if (args->severity == GPR_LOG_SEVERITY_INFO) level = spdlog::level::info;
  if (args->severity == GPR_LOG_SEVERITY_ERROR) level = spdlog::level::err;
  const char* file = std::strrchr(args->file, '/');
  spdlog::log(level, "grpc {}:{}: {}{}", file != nullptr ? file + 1 : args->file, args->line, message,
              HeldBackNote(held));
}

}  // namespace

void SetUpLogging(absl::string_view format, absl::string_view level) {
  std::shared_ptr<spdlog::logger> logger = spdlog::get("samplerd");
  if (logger == nullptr) {
    logger = spdlog::stderr_color_mt("samplerd");
    spdlog::set_default_logger(logger);
  }
  if (format == "json") {
    logger->set_formatter(std::make_unique<JsonFormatter>());
  } else {
    // spdlog's default "%+" pattern, the message escaped, with the trace context appended.
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<TraceparentFlag>('*').add_flag<EscapedPayloadFlag>('V').set_pattern(
        "[%Y-%m-%d %H:%M:%S.%e] [%n] [%^%l%$] %V%*");
    logger->set_formatter(std::move(formatter));
  }
  logger->set_level(spdlog::level::from_str(std::string(level)));
  grpc_logs_to_spdlog.store(true);
  gpr_set_log_function(&GrpcLogToSpdlog);
}

void RestoreGrpcLogging() { grpc_logs_to_spdlog.store(false); }

std::string TraceparentOf(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) {
  const auto it = metadata.find("traceparent");
  if (it == metadata.end()) return "";
  return ParseTraceparent(absl::string_view(it->second.data(), it->second.size()));
}

ScopedTraceparent::ScopedTraceparent(const std::string& traceparent) : previous_(current_traceparent) {
  current_traceparent = &traceparent;
}

ScopedTraceparent::~ScopedTraceparent() { current_traceparent = previous_; }

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeCallLogInterceptorFactory() {
  return std::make_unique<CallLogInterceptorFactory>();
}

}  // namespace samplerd
