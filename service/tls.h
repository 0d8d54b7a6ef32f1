// The credentials of samplerd's TCP listeners: plaintext, TLS, or mutual TLS, from ServerConfig's PEM files.
//
//   absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> tcp = TcpServerCredentials(config);
//   builder.AddListeningPort("0.0.0.0:50051", *tcp);
//   builder.AddListeningPort("unix:/run/samplerd.sock", grpc::InsecureServerCredentials());
//
// Unix-socket listeners stay plaintext: only processes allowed to open the socket file reach them.
#ifndef SAMPLERD_SERVICE_TLS_H_
#define SAMPLERD_SERVICE_TLS_H_

#include <memory>

#include "absl/status/statusor.h"
#include "grpcpp/security/server_credentials.h"
#include "service/server_config.h"

namespace samplerd {

// TcpServerCredentials()
//
// grpc::InsecureServerCredentials() without --tls_cert; grpc::SslServerCredentials with the certificate chain
// and key otherwise; with --tls_client_ca as well, a client must present a certificate that CA signed
// (GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY) or its handshake fails.
//
// The files are read and parsed here, so that a problem is reported at start with the flag that names the file:
// INVALID_ARGUMENT for a file that cannot be read, holds no PEM certificate (or key), or a key that does not
// belong to the certificate. gRPC itself would only fail the listener, without saying why.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> TcpServerCredentials(const ServerConfig& config);

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_TLS_H_
