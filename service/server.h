// Server: samplerd's gRPC server, built from a validated ServerConfig: the Sampler service, health, reflection,
// the interceptors (calls in flight, bearer tokens, health-watch limit, call log), the channel limits and
// keepalive, and the Prometheus /metrics server. The shape of TF Serving's `Server`: build and start, wait,
// shut down.
//
//   absl::StatusOr<std::unique_ptr<Server>> server = Server::Create(config, profiles);
//   if (!server.ok()) return absl::IsInvalidArgument(server.status()) ? 2 : 1;
//   for (const std::string& address : (*server)->bound_addresses()) std::printf("... %s\n", address.c_str());
//   // on SIGHUP: (*server)->RequestReload();  on SIGTERM: (*server)->Shutdown();
//   (*server)->Wait();
//
// Signals stay with the caller (main.cc), which decides which thread receives them.
#ifndef SAMPLERD_SERVICE_SERVER_H_
#define SAMPLERD_SERVICE_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/profile.h"
#include "grpcpp/server.h"
#include "service/auth.h"
#include "service/calls_in_flight.h"
#include "service/config_reloader.h"
#include "service/sampler_service.h"
#include "service/server_config.h"
#include "service/server_metrics.h"
#include "service/shm_control_server.h"

namespace samplerd {

// Keepalive and connection timing, in milliseconds, applied to every listener.
//
// Model hosts hold one stream open for hours and ping it through NATs and load balancers: a client ping is
// accepted this often, also while no call is active, instead of being answered with GOAWAY "too_many_pings".
inline constexpr int kMinClientPingIntervalMs = 10 * 1000;
// Our own pings find dead peers, whose streams would otherwise hold --max_streams slots: one ping this often,
// and the peer is dropped when no ack comes within kKeepaliveTimeoutMs.
inline constexpr int kKeepaliveTimeMs = 60 * 1000;
inline constexpr int kKeepaliveTimeoutMs = 20 * 1000;
// After the last call of a drain ends, how long its status may take to reach the socket before the idle
// connections are closed (a call counts as done once its status is handed to the transport).
inline constexpr int kStatusFlushMs = 100;
// Threads of gRPC's synchronous services (server reflection): grpcurl and buf curl hold one stream a call.
inline constexpr int kMaxSyncServiceThreads = 16;

// Server
//
// Thread-safe: RequestReload and Shutdown may be called from any thread (a signal thread) while another thread waits.
class Server {
 public:
  // Starts everything `config` (validated by ValidateServerConfig) names. Errors: INVALID_ARGUMENT for a file
  // named by a flag that cannot be used (certificate, key, CA, token file) or a service that cannot be built
  // from the config; UNAVAILABLE when an address cannot be bound or /metrics given by flag
  // (config.metrics_required) cannot be served. The default metrics address is only tried: when it is taken,
  // the error is logged and the server runs without metrics.
  static absl::StatusOr<std::unique_ptr<Server>> Create(const ServerConfig& config,
                                                        std::shared_ptr<const ProfileRegistry> profiles);

  // Detaches /metrics from the service (a late scrape must not reach it), then stops what still runs.
  ~Server();

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The addresses a client can dial, one per config.listen entry: a TCP address with the port gRPC bound
  // (meaningful for port 0), a unix socket address as given.
  const std::vector<std::string>& bound_addresses() const { return bound_addresses_; }
  // host:port of /metrics; empty when none is served.
  std::string metrics_address() const;

  // Re-reads --config and --auth_token_file on a thread of its own and returns at once; a bad file changes nothing
  // (logged and counted). See ConfigReloader::RequestReload.
  void RequestReload();

  // Drains: health turns NOT_SERVING, no new call is accepted, in-flight calls (a request running on the
  // shared-memory control socket included) get config.drain_seconds to finish before they are cancelled, and idle
  // connections are closed once no call is left; then waits for a reload that runs. Returns when the server has
  // stopped; call it once.
  void Shutdown();

  // Blocks until Shutdown has stopped the server.
  void Wait();

 private:
  Server(const ServerConfig& config, std::shared_ptr<BearerTokens> tokens, std::shared_ptr<ServerMetrics> metrics,
         std::unique_ptr<SamplerService> service);

  const ServerConfig config_;
  const std::shared_ptr<BearerTokens> tokens_;
  const std::shared_ptr<ServerMetrics> metrics_;
  const std::unique_ptr<SamplerService> service_;
  std::unique_ptr<ShmControlServer> shm_control_;  // null without --shm_socket; destroyed before service_
  CallsInFlight calls_;
  std::unique_ptr<ConfigReloader> reloader_;
  std::unique_ptr<grpc::Server> server_;
  std::vector<std::string> bound_addresses_;
};

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_SERVER_H_
