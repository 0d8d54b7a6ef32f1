// Bearer-token authentication of every call but the health checks.
//
//   absl::StatusOr<std::shared_ptr<BearerTokens>> tokens = BearerTokens::FromFile("/etc/samplerd/token");
//   creators.push_back(MakeAuthInterceptorFactory(*tokens));
//   builder.experimental().SetInterceptorCreators(std::move(creators));
//   ...
//   (*tokens)->Reload();   // on SIGHUP: rotate without a restart
//
// A call must carry `authorization: Bearer <token>` with a token of the file, else it ends with UNAUTHENTICATED
// before the service sees it. `grpc.health.v1.Health` is exempt: load balancers and the kubelet probe it without
// credentials. Tokens are compared in constant time.
//
// Why an interceptor rather than grpc::AuthMetadataProcessor: a processor runs only on secure (TLS) ports and
// gRPC aborts if one is set on insecure credentials, while the token must also guard plaintext TCP ports (TLS
// ended by a mesh sidecar) and unix sockets.
#ifndef SAMPLERD_SERVICE_AUTH_H_
#define SAMPLERD_SERVICE_AUTH_H_

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/server_interceptor.h"

namespace samplerd {

// ConstantTimeEquals()
//
// Whether `a` equals `b`, in a time that depends only on the lengths, so that a caller cannot learn a token
// one byte at a time from how fast it is refused.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

// BearerTokens
//
// The accepted tokens: each non-empty line of the token file (surrounding whitespace trimmed), so a new token
// can be added, clients moved over and the old one removed, with a SIGHUP after each edit. Thread-safe.
class BearerTokens {
 public:
  // INVALID_ARGUMENT naming --auth_token_file and `path` when the file cannot be read, holds no token, or a token
  // has characters outside RFC 6750's b64token (letters, digits, -._~+/ and trailing =).
  static absl::StatusOr<std::shared_ptr<BearerTokens>> FromFile(const std::string& path);

  // Re-reads the file; on error the tokens in force stay and the error is returned.
  absl::Status Reload();

  // Whether `authorization` (the header's value) is "Bearer <token>" with an accepted token; the scheme is
  // case-insensitive (RFC 7235).
  bool Accepts(absl::string_view authorization) const;

 private:
  explicit BearerTokens(std::string path) : path_(std::move(path)) {}

  const std::string path_;
  mutable std::mutex mu_;
  std::shared_ptr<const std::vector<std::string>> tokens_;  // guarded by mu_
};

// MakeAuthInterceptorFactory()
//
// The server interceptor that enforces `tokens` (see the file comment). A refused call is logged at warning
// level with its method, peer and traceparent.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeAuthInterceptorFactory(
    std::shared_ptr<const BearerTokens> tokens);

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_AUTH_H_
