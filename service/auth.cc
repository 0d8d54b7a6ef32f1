#include "service/auth.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/small_file.h"
#include "grpc/grpc.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"
#include "service/logging.h"
#include "service/tsan_annotations.h"
#include "spdlog/spdlog.h"

namespace samplerd {
namespace {

constexpr absl::string_view kHealthPrefix = "/grpc.health.v1.Health/";
constexpr absl::string_view kSampleOnce = "/samplerd.v1.Sampler/SampleOnce";

absl::Status TokenFileError(const std::string& path, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("--auth_token_file ", path, ": ", message));
}

// RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
bool IsB64Token(absl::string_view token) {
  const size_t end = token.find_last_not_of('=');
  if (end == absl::string_view::npos) return false;
  for (size_t i = 0; i <= end; ++i) {
    const char c = token[i];
    if (!absl::ascii_isalnum(c) && !absl::StrContains("-._~+/", c)) return false;
  }
  return true;
}

absl::StatusOr<std::vector<std::string>> ReadTokens(const std::string& path) {
  absl::StatusOr<std::string> contents = ReadSmallFile(path, kMaxOperatorFileBytes);
  if (!contents.ok()) return TokenFileError(path, contents.status().message());
  std::vector<std::string> tokens;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(*contents, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    // The message names the line, never the token.
    if (!IsB64Token(line)) {
      return TokenFileError(
          path, absl::StrCat("line ", line_number, ": a token may hold only letters, digits, -._~+/ and trailing ="));
    }
    tokens.emplace_back(line);
  }
  if (tokens.empty()) return TokenFileError(path, "holds no token (one token per line expected)");
  return tokens;
}

class AuthInterceptor final : public grpc::experimental::Interceptor {
 public:
  AuthInterceptor(grpc::experimental::ServerRpcInfo* info, const BearerTokens* tokens) : info_(info), tokens_(tokens) {
    TsanHappensBefore(this);  // gRPC runs the hooks and the deletion on other threads (tsan_annotations.h)
  }
  ~AuthInterceptor() override { TsanHappensAfter(this); }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    TsanHandedOff handed_off(this);
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      Check(*methods->GetRecvInitialMetadata());
    }
    // A unary request arrives with its metadata and its handler runs anyway (a server interceptor cannot stop
    // it): empty the request so a refused SampleOnce costs no sampling (it parses as a request without steps).
    // Its answer goes nowhere: the call is already cancelled. SampleOnce is a raw method (sampler_service.h), so
    // the received message is the undecoded ByteBuffer.
    if (refused_ && methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE) &&
        info_->method() == kSampleOnce && methods->GetRecvMessage() != nullptr) {
      grpc::Slice empty;
      *static_cast<grpc::ByteBuffer*>(methods->GetRecvMessage()) = grpc::ByteBuffer(&empty, 1);
    }
    // The status the client got (cancel_with_status above), so that the call log, the next interceptor, reports
    // it instead of the handler's answer, which goes nowhere.
    if (refused_ && methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      methods->ModifySendStatus(grpc::Status(grpc::StatusCode::UNAUTHENTICATED, refusal_));
    }
    methods->Proceed();
  }

 private:
  void Check(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) {
    const auto [first, last] = metadata.equal_range("authorization");
    const char* reason = nullptr;
    if (first == last) {
      reason = "no authorization metadata";
    } else if (std::next(first) != last) {
      reason = "more than one authorization metadata entry";
    } else if (!tokens_->Accepts(absl::string_view(first->second.data(), first->second.size()))) {
      reason = "the bearer token is not accepted";
    }
    if (reason == nullptr) return;
    refused_ = true;
    const std::string traceparent = TraceparentOf(metadata);
    if (const int64_t held = CallProblemLogBudget().Admit(); held >= 0) {
      ScopedTraceparent scope(traceparent);
      spdlog::warn("{} from {} refused: {}{}", info_->method(), info_->server_context()->peer(), reason,
                   HeldBackNote(held));
    }
    // gRPC sends this status in the trailers, then the handler finds the call cancelled. (ServerContext's
    // TryCancel would say CANCELLED, which a client cannot tell from a network problem.)
    refusal_ = absl::StrCat(reason, ": expected metadata \"authorization: Bearer\" and a token of --auth_token_file");
    // The cancel runs the call's closing hook on another thread at once, while this hook is still running: it
    // reads refused_ and refusal_ after this write, ordered by gRPC (tsan_annotations.h).
    TsanHappensBefore(this);
    grpc_call_cancel_with_status(info_->server_context()->c_call(), GRPC_STATUS_UNAUTHENTICATED, refusal_.c_str(),
                                 nullptr);
  }

  grpc::experimental::ServerRpcInfo* const info_;
  const BearerTokens* const tokens_;
  bool refused_ = false;
  std::string refusal_;  // the status message sent when refused_
};

class AuthInterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit AuthInterceptorFactory(std::shared_ptr<const BearerTokens> tokens) : tokens_(std::move(tokens)) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    if (absl::StartsWith(info->method(), kHealthPrefix)) return nullptr;
    return new AuthInterceptor(info, tokens_.get());
  }

 private:
  const std::shared_ptr<const BearerTokens> tokens_;
};

}  // namespace

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  // volatile: the compiler may not stop at the first difference.
  volatile unsigned char difference = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    difference = difference | (x ^ y);
  }
  return difference == 0;
}

absl::StatusOr<std::shared_ptr<BearerTokens>> BearerTokens::FromFile(const std::string& path) {
  std::shared_ptr<BearerTokens> tokens(new BearerTokens(path));
  if (absl::Status s = tokens->Reload(); !s.ok()) return s;
  return tokens;
}

absl::Status BearerTokens::Reload() {
  absl::StatusOr<std::vector<std::string>> tokens = ReadTokens(path_);
  if (!tokens.ok()) return tokens.status();
  auto fresh = std::make_shared<const std::vector<std::string>>(*std::move(tokens));
  std::lock_guard<std::mutex> lock(mu_);
  tokens_ = std::move(fresh);
  return absl::OkStatus();
}

bool BearerTokens::Accepts(absl::string_view authorization) const {
  std::shared_ptr<const std::vector<std::string>> tokens;
  {
    std::lock_guard<std::mutex> lock(mu_);
    tokens = tokens_;
  }
  constexpr absl::string_view kScheme = "bearer ";
  if (authorization.size() < kScheme.size() ||
      !absl::EqualsIgnoreCase(authorization.substr(0, kScheme.size()), kScheme)) {
    return false;
  }
  const absl::string_view presented = absl::StripAsciiWhitespace(authorization.substr(kScheme.size()));
  // Every token is compared, so the time does not tell which one (if any) matched.
  bool accepted = false;
  for (const std::string& token : *tokens) accepted |= ConstantTimeEquals(presented, token);
  return accepted;
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeAuthInterceptorFactory(
    std::shared_ptr<const BearerTokens> tokens) {
  return std::make_unique<AuthInterceptorFactory>(std::move(tokens));
}

}  // namespace samplerd
