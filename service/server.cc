#include "service/server.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpc/grpc.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "service/health_watch_limit.h"
#include "service/logging.h"
#include "service/open_file_limit.h"
#include "service/shm_metrics.h"
#include "service/tls.h"
#include "service/unix_socket_path.h"
#include "spdlog/spdlog.h"

#ifndef SAMPLERD_VERSION
#error "SAMPLERD_VERSION must be the project version (CMake PROJECT_VERSION)"
#endif

namespace samplerd {
namespace {

// Control connections that may wait to present a token at once: as many as may hold sessions, so that all the
// clients --shm_max_clients allows can connect at once without evicting each other.
int ShmMaxUnauthenticated(const ServerConfig& config) { return config.shm_max_clients; }

// The shared-memory plane's limits. Each region keeps a descriptor, so does each control connection, and the
// connections hold up to kMaxDescriptorsReceived of their clients' descriptors while they close them: together
// they may take half of the open-file limit, so that the gRPC listeners keep the other half (once an accept fails
// for lack of a descriptor, gRPC 1.51's listener stops for good).
ShmRegistry::Limits ShmLimits(const ServerConfig& config) {
  ShmRegistry::Limits limits{config.shm_max_clients, config.shm_max_regions_per_client,
                             static_cast<uint64_t>(config.shm_max_bytes_per_client)};
  const uint64_t held = ShmControlServer::MaxConnections(config.shm_max_clients, ShmMaxUnauthenticated(config)) +
                        ShmControlServer::kMaxDescriptorsReceived;
  const uint64_t share = OpenFileLimit() / 2;
  limits.max_regions =
      static_cast<int64_t>(std::min<uint64_t>(share > held ? share - held : 0, std::numeric_limits<int64_t>::max()));
  const int64_t asked = int64_t{config.shm_max_clients} * config.shm_max_regions_per_client;
  if (limits.max_regions < asked) {
    spdlog::warn(
        "the open-file limit ({}) leaves the shared-memory plane room for {} regions over all clients, fewer than "
        "--shm_max_clients x --shm_max_regions_per_client ({}): a registration past them is refused. Raise the "
        "limit (ulimit -n, a container's nofile) or lower those flags",
        OpenFileLimit(), limits.max_regions, asked);
  }
  return limits;
}

bool IsUnixAddress(const std::string& address) { return address.rfind("unix", 0) == 0; }

// The address a client can dial: a TCP address with the port gRPC bound (meaningful for port 0); a unix
// socket address as given.
std::string BoundAddress(const std::string& requested, int selected_port) {
  if (IsUnixAddress(requested)) return requested;
  return absl::StrCat(requested.substr(0, requested.rfind(':')), ":", selected_port);
}

// /metrics, or nullptr when it is not served. Fails only when config.metrics_required: the default address is
// only tried, because a second samplerd on one host (tests, a developer machine) finds it taken.
absl::StatusOr<std::shared_ptr<ServerMetrics>> StartMetrics(const ServerConfig& config) {
  if (config.metrics_listen.empty()) return std::shared_ptr<ServerMetrics>();
  absl::StatusOr<std::shared_ptr<ServerMetrics>> started = ServerMetrics::Create(
      {config.metrics_listen, SAMPLERD_VERSION, config.max_streams, config.max_pending_request_bytes});
  // Stopped with the Server, before main returns: its HTTP threads would otherwise still parse requests while
  // exit() destroys cpp-httplib's statics. The exit then waits for open connections, kHttpIdleSeconds at most.
  if (started.ok()) return started;
  if (config.metrics_required) return absl::UnavailableError(started.status().message());
  spdlog::error("{}; serving without metrics (choose a free address with --metrics_listen, or \"\" for none)",
                std::string(started.status().message()));
  return std::shared_ptr<ServerMetrics>();
}

// Channel limits, compression and keepalive, the same on every listener.
void SetChannelArguments(const ServerConfig& config, grpc::ServerBuilder* builder) {
  // gRPC sets SO_REUSEPORT by default, so a second server on a taken port would start and silently take half
  // of the new connections; without it the bind fails and we say so.
  builder->AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Streams past it are refused by the transport before they reach the service's --max_streams count.
  builder->AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, config.max_streams_per_connection);
  // A larger message ends its call with RESOURCE_EXHAUSTED before it is parsed.
  builder->SetMaxReceiveMessageSize(static_cast<int>(config.max_message_bytes));
  builder->SetMaxSendMessageSize(static_cast<int>(config.max_message_bytes));
  // No compressed messages: gRPC 1.51 inflates a message whole before it applies the size limit above, so a
  // small gzip message could make the server allocate gigabytes, token or not. A call that declares gzip or
  // deflate is refused with UNIMPLEMENTED when its metadata arrives, before any message is read. Tensors of
  // floats hardly compress anyway.
  builder->SetCompressionAlgorithmSupportStatus(GRPC_COMPRESS_DEFLATE, false);
  builder->SetCompressionAlgorithmSupportStatus(GRPC_COMPRESS_GZIP, false);
  // The sampler and health are callback services; server reflection is gRPC's synchronous one, whose every open
  // stream holds a thread while it waits for its client. Left unbounded, streams anyone may open would take every
  // thread a pod's pids limit allows; past the pool gRPC refuses them with RESOURCE_EXHAUSTED.
  grpc::ResourceQuota quota("samplerd");
  quota.SetMaxThreads(kMaxSyncServiceThreads);
  builder->SetResourceQuota(quota);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, kMinClientPingIntervalMs);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveTimeMs);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMs);
  // An aged connection gets a GOAWAY (gRPC adds +-10% jitter), so clients reconnect and a load balancer spreads
  // them over replicas added since; its calls then have the grace, never less than the drain, to finish.
  if (config.max_connection_age_seconds > 0) {
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, config.max_connection_age_seconds * 1000);
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, config.max_connection_age_grace_seconds * 1000);
  }
}

}  // namespace

Server::Server(const ServerConfig& config, std::shared_ptr<BearerTokens> tokens, std::shared_ptr<ServerMetrics> metrics,
               std::unique_ptr<SamplerService> service)
    : config_(config), tokens_(std::move(tokens)), metrics_(std::move(metrics)), service_(std::move(service)) {}

absl::StatusOr<std::unique_ptr<Server>> Server::Create(const ServerConfig& config,
                                                       std::shared_ptr<const ProfileRegistry> profiles) {
  // The files named by flags are read before anything listens, so their errors are start-up errors.
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> tcp_credentials = TcpServerCredentials(config);
  if (!tcp_credentials.ok()) return absl::InvalidArgumentError(tcp_credentials.status().message());
  std::shared_ptr<BearerTokens> tokens;
  if (!config.auth_token_file.empty()) {
    absl::StatusOr<std::shared_ptr<BearerTokens>> loaded = BearerTokens::FromFile(config.auth_token_file);
    if (!loaded.ok()) return absl::InvalidArgumentError(loaded.status().message());
    tokens = *std::move(loaded);
  }
  absl::StatusOr<std::shared_ptr<ServerMetrics>> metrics = StartMetrics(config);
  if (!metrics.ok()) return metrics.status();

  SamplerService::Options options;
  options.config = config;
  options.profiles = std::move(profiles);
  options.observer = *metrics;
  std::shared_ptr<ShmRegistry> shm;
  if (!config.shm_socket.empty()) {
    shm = std::make_shared<ShmRegistry>(ShmLimits(config),
                                        *metrics != nullptr ? MakeShmMetrics((*metrics)->registry()) : nullptr);
    options.shm = shm;
  }
  absl::StatusOr<std::unique_ptr<SamplerService>> service = SamplerService::Create(std::move(options));
  if (!service.ok()) return absl::InvalidArgumentError(service.status().ToString());

  std::unique_ptr<Server> server(new Server(config, std::move(tokens), *std::move(metrics), *std::move(service)));
  SamplerService* const sampler = server->service_.get();
  if (shm != nullptr) {
    // The control socket runs steps through the same service (and the same token check) as the gRPC listeners.
    ShmControlServer::Options control;
    control.path = config.shm_socket;
    control.registry = std::move(shm);
    control.service = sampler;
    control.tokens = server->tokens_;
    control.max_message_bytes = config.max_message_bytes;
    control.max_steps_per_request = config.max_steps_per_request;
    control.max_unauthenticated = ShmMaxUnauthenticated(config);
    absl::StatusOr<std::unique_ptr<ShmControlServer>> started = ShmControlServer::Start(std::move(control));
    if (!started.ok()) return started.status();
    server->shm_control_ = *std::move(started);
  }
  if (server->metrics_ != nullptr) {
    server->metrics_->SetActiveStreams([sampler] { return sampler->active_streams(); });
    server->metrics_->SetPendingRequestBytes([sampler] { return sampler->pending_request_bytes(); });
    server->metrics_->SetProfiles([sampler] { return sampler->profiles(); });
  }

  // grpc.health.v1.Health: "" and "samplerd.v1.Sampler" are SERVING while the server runs.
  grpc::EnableDefaultHealthCheckService(true);
  // grpc.reflection.v1alpha.ServerReflection, so grpcurl / grpc_cli / buf curl work without the .proto files.
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  // Debian's grpc++ serves the health service without putting its descriptor in the generated pool, so
  // reflection could list it but not describe it (`buf curl --list-methods` and a health Check by reflection
  // would fail). Using the generated health.pb.cc links it in, which registers the descriptor.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();

  grpc::ServerBuilder builder;
  std::vector<int> selected_ports(config.listen.size(), 0);
  for (const std::string& address : config.listen) {
    // gRPC removes whatever socket file is at a unix: path before it binds, a live server's included.
    if (const std::string path = UnixListenPath(address); !path.empty()) {
      if (absl::Status claimed = ClaimUnixSocketPath(path, "--listen"); !claimed.ok()) return claimed;
    }
  }
  for (size_t i = 0; i < config.listen.size(); ++i) {
    // Unix sockets stay plaintext: the socket file's permissions decide who connects.
    builder.AddListeningPort(config.listen[i],
                             IsUnixAddress(config.listen[i]) ? grpc::InsecureServerCredentials() : *tcp_credentials,
                             &selected_ports[i]);
  }
  builder.RegisterService(sampler);
  // The token check first: a refused call is logged by it and goes no further.
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(server->calls_.MakeInterceptorFactory());
  if (server->tokens_ != nullptr) interceptors.push_back(MakeAuthInterceptorFactory(server->tokens_));
  interceptors.push_back(MakeHealthWatchLimitFactory(config.max_health_watches));
  interceptors.push_back(MakeCallLogInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  SetChannelArguments(config, &builder);

  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr) {
    // gRPC stops at the first address it cannot bind and leaves its selected port at 0.
    for (size_t i = 0; i < config.listen.size(); ++i) {
      if (selected_ports[i] == 0) {
        return absl::UnavailableError(absl::StrCat("cannot listen on ", config.listen[i],
                                                   ": the address is in use, not permitted, or not resolvable"));
      }
    }
    return absl::UnavailableError("the gRPC server failed to start");
  }
  server->server_->GetHealthCheckService()->SetServingStatus(v1::Sampler::service_full_name(), true);
  for (size_t i = 0; i < config.listen.size(); ++i) {
    server->bound_addresses_.push_back(BoundAddress(config.listen[i], selected_ports[i]));
  }
  server->reloader_ = std::make_unique<ConfigReloader>(
      ConfigReloader::Options{config.config_path, sampler, server->tokens_, server->metrics_});
  return server;
}

Server::~Server() {
  if (metrics_ != nullptr) {
    metrics_->SetActiveStreams(nullptr);
    metrics_->SetPendingRequestBytes(nullptr);
    metrics_->SetProfiles(nullptr);
  }
}

std::string Server::metrics_address() const { return metrics_ == nullptr ? std::string() : metrics_->address(); }

void Server::RequestReload() { reloader_->RequestReload(); }

void Server::Shutdown() {
  service_->StopAdmitting();
  server_->GetHealthCheckService()->SetServingStatus(false);
  const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(config_.drain_seconds);
  // Shutdown(deadline) waits for every connection to close, idle ones included: once the calls are done (no
  // new call is accepted from now on), the idle connections are closed rather than waited for.
  std::thread closer;
  try {
    closer = std::thread([this, deadline] {
      if (!calls_.WaitUntilNone(deadline)) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(kStatusFlushMs));
      grpc_server_cancel_all_calls(server_->c_server());
    });
  } catch (const std::system_error& e) {
    // Out of threads (a pids limit): the drain still ends, at the deadline instead of when the last call does.
    spdlog::warn("drain: no thread to close idle connections early ({}); waiting up to {} s", e.what(),
                 config_.drain_seconds);
  }
  server_->Shutdown(deadline);
  if (closer.joinable()) closer.join();
  // A control connection plays a Sample stream (docs/shm.md): its request in flight is a call of the drain, answered
  // before the connection is shut, and cancelled with the rest at the deadline. Its connections end then (a step
  // in flight first); it runs on the service's workers.
  if (shm_control_ != nullptr) shm_control_->WaitUntilIdle(deadline);
  shm_control_.reset();
  reloader_->Stop();
}

void Server::Wait() { server_->Wait(); }

}  // namespace samplerd
