// samplerd's logs: spdlog on stderr as text lines or JSON lines, and a per-call log that carries the caller's
// W3C trace context, so a failed call can be found next to the model host's own spans.
//
//   SetUpLogging("json", "info");            // before anything logs
//   builder.experimental().SetInterceptorCreators(...MakeCallLogInterceptorFactory()...);
//
// A JSON line is one object with "time" (UTC, RFC 3339 with microseconds), "level", "logger", "msg" and, when
// the line is about a call whose metadata had a valid `traceparent`, "traceparent":
//
//   {"time":"2024-05-01T12:00:00.123456Z","level":"warning","logger":"samplerd","msg":"...","traceparent":"00-..."}
//
// Which line carries a trace context is decided by ScopedTraceparent on the logging thread: code that knows the
// call it logs about opens one around the spdlog call.
#ifndef SAMPLERD_SERVICE_LOGGING_H_
#define SAMPLERD_SERVICE_LOGGING_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/strings/string_view.h"
#include "grpcpp/support/server_interceptor.h"
#include "grpcpp/support/string_ref.h"

namespace samplerd {

// SetUpLogging()
//
// Makes the default spdlog logger a stderr logger named "samplerd" with `format` ("text" or "json"; anything
// else is treated as "text") at `level` (an spdlog level name), and sends gRPC core's log lines (which
// GRPC_VERBOSITY still filters, errors only by default) to it, error lines at most kGrpcCoreLinesPerSecond a
// second. May be called again to change both.
void SetUpLogging(absl::string_view format, absl::string_view level);

// RestoreGrpcLogging()
//
// gRPC logs to stderr by itself again. For the end of main: gRPC threads may still log while static destructors
// take spdlog's registry away.
void RestoreGrpcLogging();

// TraceparentOf()
//
// The `traceparent` header of `metadata` when it has the W3C Trace Context shape
// (version-traceid-parentid-flags, lowercase hex: "00-" 32 hex "-" 16 hex "-" 2 hex), else empty: a malformed
// value is dropped rather than logged, as the specification asks.
std::string TraceparentOf(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata);

// ScopedTraceparent
//
// While alive, log lines written by this thread carry `traceparent` (nothing when it is empty). Nests.
class ScopedTraceparent {
 public:
  explicit ScopedTraceparent(const std::string& traceparent);
  ~ScopedTraceparent();
  ScopedTraceparent(const ScopedTraceparent&) = delete;
  ScopedTraceparent& operator=(const ScopedTraceparent&) = delete;

 private:
  const std::string* previous_;
};

// LogBudget
//
// At most `lines_per_second` lines per second of one kind, so that a client sending thousands of refused or
// failing calls a second cannot flood the log: Admit() says whether to write a line now and how many were held
// back since the last one written, which that line reports.
//
//   if (int64_t held = CallProblemLogBudget().Admit(); held >= 0) spdlog::warn("...{}", HeldBackNote(held));
class LogBudget {
 public:
  explicit LogBudget(int lines_per_second) : lines_per_second_(lines_per_second) {}
  // -1: drop this line (it is counted); otherwise write it: the count of lines dropped before it.
  int64_t Admit();

 private:
  const int lines_per_second_;
  std::mutex mu_;
  std::chrono::steady_clock::time_point window_start_;  // guarded by mu_
  int written_ = 0;                                     // guarded by mu_; lines written in this window
  int64_t held_back_ = 0;                               // guarded by mu_; since the last line written
};

// The budget every line about a refused or failed call shares (the token check, the health-watch limit and the
// call log): kCallProblemLinesPerSecond.
inline constexpr int kCallProblemLinesPerSecond = 20;
LogBudget& CallProblemLogBudget();

// gRPC core's own lines (SetUpLogging) have a budget of their own, so that they cannot crowd out the lines
// above.
inline constexpr int kGrpcCoreLinesPerSecond = 20;
// And each of those lines is cut to an Excerpt (core/field_error.h) of this many bytes: some quote a client's bytes,
// such as a metadata value gRPC rejected (up to the 16 KiB header list).
inline constexpr size_t kMaxGrpcLineBytes = 1024;

// "" for 0, else " (N similar lines held back)", to append to an admitted line.
std::string HeldBackNote(int64_t held_back);

// MakeCallLogInterceptorFactory()
//
// A server interceptor that logs each call when its status is sent (method, peer, status code and message,
// duration), with the call's traceparent: OK at debug level; RESOURCE_EXHAUSTED, INTERNAL, UNKNOWN, UNAVAILABLE,
// DATA_LOSS and DEADLINE_EXCEEDED at warning level; other codes (the caller's doing) at info level. Lines about
// calls that did not end OK share CallProblemLogBudget(), and quote at most kMaxQuotedBytes (core/field_error.h)
// of the path the client sent.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeCallLogInterceptorFactory();

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_LOGGING_H_
