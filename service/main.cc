// samplerd: the entropy-adaptive sampling server (docs/contract.md).
//
//   samplerd --listen 0.0.0.0:50051 --listen unix:/run/samplerd.sock --config profiles.json
//
// Prints "samplerd listening on <address>" on stdout once per bound address (with the port gRPC picked when
// the address asked for port 0), and "samplerd metrics on <host:port>" when /metrics is served, then serves
// until SIGTERM or SIGINT: health turns NOT_SERVING, in-flight calls get --drain_seconds to finish, and the
// process exits 0. SIGHUP re-reads --config and --auth_token_file (a bad file changes nothing). Exit code 2 =
// bad flags, config, certificate or token file; 1 = the server could not start.
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "core/profile.h"
#include "grpc/grpc.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "service/allocator_tuning.h"
#include "service/auth.h"
#include "service/calls_in_flight.h"
#include "service/config_reloader.h"
#include "service/health_watch_limit.h"
#include "service/logging.h"
#include "service/sampler_service.h"
#include "service/server_config.h"
#include "service/server_metrics.h"
#include "service/tls.h"
#include "spdlog/spdlog.h"

#ifndef SAMPLERD_VERSION
#error "SAMPLERD_VERSION must be the project version (CMake PROJECT_VERSION)"
#endif

namespace samplerd {
namespace {

constexpr int kExitUsage = 2;
constexpr int kExitStartFailure = 1;

// The address a client can dial: a TCP address with the port gRPC bound (meaningful for port 0); a unix
// socket address as given.
std::string BoundAddress(const std::string& requested, int selected_port) {
  if (requested.rfind("unix", 0) == 0) return requested;
  return absl::StrCat(requested.substr(0, requested.rfind(':')), ":", selected_port);
}

bool IsUnixAddress(const std::string& address) { return address.rfind("unix", 0) == 0; }

// All server wiring. Returns the process exit code. `signals` (SIGTERM, SIGINT, SIGHUP) must already be blocked
// in every thread (main blocks them before gRPC starts any), so only the sigwait below receives them.
// `metrics_required`: --metrics_listen was given, so failing to serve it is fatal; the default address is only
// tried, because a second samplerd on one host (tests, a developer machine) finds it taken.
int RunServer(const ServerConfig& config, bool metrics_required, std::shared_ptr<const ProfileRegistry> profiles,
              const sigset_t& signals) {
  // The files named by flags are read before anything listens, so their errors are start-up errors.
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> tcp_credentials = TcpServerCredentials(config);
  if (!tcp_credentials.ok()) {
    spdlog::error("{}", std::string(tcp_credentials.status().message()));
    return kExitUsage;
  }
  std::shared_ptr<BearerTokens> tokens;
  if (!config.auth_token_file.empty()) {
    absl::StatusOr<std::shared_ptr<BearerTokens>> loaded = BearerTokens::FromFile(config.auth_token_file);
    if (!loaded.ok()) {
      spdlog::error("{}", std::string(loaded.status().message()));
      return kExitUsage;
    }
    tokens = *std::move(loaded);
  }
  std::shared_ptr<ServerMetrics> metrics;
  if (!config.metrics_listen.empty()) {
    absl::StatusOr<std::shared_ptr<ServerMetrics>> started =
        ServerMetrics::Create({config.metrics_listen, SAMPLERD_VERSION, config.max_streams});
    if (started.ok()) {
      metrics = *std::move(started);
      // Deliberately never destroyed: stopping the HTTP server waits for connections still open (up to
      // ServerMetrics::kHttpIdleSeconds), which would only delay the exit; the process ends them. (Held by a
      // static, so leak checkers see it reachable.)
      static const auto* const never_stopped = new std::shared_ptr<ServerMetrics>(metrics);
      (void)never_stopped;
    } else if (metrics_required) {
      spdlog::error("{}", std::string(started.status().message()));
      return kExitStartFailure;
    } else {
      spdlog::error("{}; serving without metrics (choose a free address with --metrics_listen, or \"\" for none)",
                    std::string(started.status().message()));
    }
  }

  SamplerService::Options options;
  options.config = config;
  options.profiles = std::move(profiles);
  options.observer = metrics;
  absl::StatusOr<std::unique_ptr<SamplerService>> service = SamplerService::Create(std::move(options));
  if (!service.ok()) {
    spdlog::error("{}", service.status().ToString());
    return kExitUsage;
  }
  if (metrics != nullptr) {
    metrics->SetActiveStreams([s = service->get()] { return s->active_streams(); });
    metrics->SetProfiles([s = service->get()] { return s->profiles(); });
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
  for (size_t i = 0; i < config.listen.size(); ++i) {
    // Unix sockets stay plaintext: the socket file's permissions decide who connects.
    builder.AddListeningPort(config.listen[i],
                             IsUnixAddress(config.listen[i]) ? grpc::InsecureServerCredentials() : *tcp_credentials,
                             &selected_ports[i]);
  }
  builder.RegisterService(service->get());
  // The token check first: a refused call is logged by it and goes no further.
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  CallsInFlight calls;
  interceptors.push_back(calls.MakeInterceptorFactory());
  if (tokens != nullptr) interceptors.push_back(MakeAuthInterceptorFactory(tokens));
  interceptors.push_back(MakeHealthWatchLimitFactory(config.max_health_watches));
  interceptors.push_back(MakeCallLogInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  // gRPC sets SO_REUSEPORT by default, so a second server on a taken port would start and silently take half
  // of the new connections; without it the bind fails and we say so.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // bytes; a larger message ends its call with RESOURCE_EXHAUSTED before it is parsed.
  builder.SetMaxReceiveMessageSize(static_cast<int>(config.max_message_bytes));
  // No compressed messages: gRPC 1.51 inflates a message whole before it applies the size limit above, so a
  // small gzip message could make the server allocate gigabytes, token or not. A call that declares gzip or
  // deflate is refused with UNIMPLEMENTED when its metadata arrives, before any message is read. Tensors of
  // floats hardly compress anyway.
  builder.SetCompressionAlgorithmSupportStatus(GRPC_COMPRESS_DEFLATE, false);
  builder.SetCompressionAlgorithmSupportStatus(GRPC_COMPRESS_GZIP, false);
  builder.SetMaxSendMessageSize(static_cast<int>(config.max_message_bytes));
  // Model hosts hold one stream open for hours and ping it through NATs and load balancers: accept a client
  // ping every 10 s (ms), also while no call is active, instead of answering with GOAWAY "too_many_pings".
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Our own pings find dead peers, whose streams would otherwise hold --max_streams slots: every 60 s (ms),
  // the peer is dropped when no ack comes within 20 s (ms).
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20 * 1000);
  // An aged connection gets a GOAWAY (gRPC adds +-10% jitter), so clients reconnect and a load balancer spreads
  // them over replicas added since; its calls then have the grace (ms), never less than the drain, to finish.
  if (config.max_connection_age_seconds > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, config.max_connection_age_seconds * 1000);
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, config.max_connection_age_grace_seconds * 1000);
  }

  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) {
    // gRPC stops at the first address it cannot bind and leaves its selected port at 0.
    for (size_t i = 0; i < config.listen.size(); ++i) {
      if (selected_ports[i] == 0) {
        spdlog::error("cannot listen on {}: the address is in use, not permitted, or not resolvable",
                      config.listen[i]);
        return kExitStartFailure;
      }
    }
    spdlog::error("the gRPC server failed to start");
    return kExitStartFailure;
  }
  server->GetHealthCheckService()->SetServingStatus(v1::Sampler::service_full_name(), true);
  for (size_t i = 0; i < config.listen.size(); ++i) {
    // stdout, flushed: scripts and tests read the bound port from it.
    std::printf("samplerd listening on %s\n", BoundAddress(config.listen[i], selected_ports[i]).c_str());
  }
  if (metrics != nullptr) std::printf("samplerd metrics on %s\n", metrics->address().c_str());
  std::fflush(stdout);

  ConfigReloader reloader({config.config_path, service->get(), tokens, metrics});
  std::thread signal_thread([&] {
    while (true) {
      int signal = 0;
      sigwait(&signals, &signal);
      if (signal == SIGHUP) {
        reloader.Reload().IgnoreError();  // logged and counted by Reload
        continue;
      }
      spdlog::info("{}: health NOT_SERVING, draining in-flight calls for up to {} s", strsignal(signal),
                   config.drain_seconds);
      server->GetHealthCheckService()->SetServingStatus(false);
      const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(config.drain_seconds);
      // Shutdown(deadline) waits for every connection to close, idle ones included: once the calls are done
      // (no new call is accepted from now on), the idle connections are closed rather than waited for.
      std::thread closer([&] {
        if (!calls.WaitUntilNone(deadline)) return;
        // A call is released once its status is handed to the transport, a moment before it is on the socket.
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        grpc_server_cancel_all_calls(server->c_server());
      });
      server->Shutdown(deadline);
      closer.join();
      return;
    }
  });
  server->Wait();
  signal_thread.join();
  // A scrape from now on must not reach the service, which goes away with this function.
  if (metrics != nullptr) {
    metrics->SetActiveStreams(nullptr);
    metrics->SetProfiles(nullptr);
  }
  spdlog::info("samplerd stopped");
  return 0;
}

}  // namespace
}  // namespace samplerd

int main(int argc, char** argv) {
  samplerd::ServerConfig config;
  CLI::App app{"samplerd: entropy-adaptive token sampling for LLMs, served over gRPC (samplerd.v1.Sampler)."};
  app.add_option("--listen", config.listen,
                 "Address to serve on; repeatable. host:port (port 0 = any free port, printed at start), "
                 "unix:/path or unix:///path")
      ->capture_default_str();
  app.add_option("--config", config.config_path,
                 "Profiles file: protobuf JSON of samplerd.v1.ProfileSet, added to the built-in entropix, "
                 "entropix-frog and fixed profiles (a built-in name replaces that profile)");
  app.add_option("--max_message_bytes", config.max_message_bytes,
                 "Largest request or response message, in bytes")
      ->capture_default_str();
  app.add_option("--max_vocab", config.max_vocab, "Largest logits tensor, in elements (vocabulary size)")
      ->capture_default_str();
  app.add_option("--max_attention_elements", config.max_attention_elements,
                 "Largest attention tensor (layers x heads x kv_len), in elements")
      ->capture_default_str();
  app.add_option("--max_attention_rows", config.max_attention_rows,
                 "Most attention rows (layers x heads) in one step; each row has scratch of its own")
      ->capture_default_str();
  app.add_option("--max_health_watches", config.max_health_watches,
                 "Most concurrent grpc.health.v1.Health/Watch streams; further ones end with RESOURCE_EXHAUSTED")
      ->capture_default_str();
  app.add_option("--max_steps_per_request", config.max_steps_per_request,
                 "Most steps in one SampleRequest; more ends the call with RESOURCE_EXHAUSTED")
      ->capture_default_str();
  app.add_option("--max_streams", config.max_streams,
                 "Most concurrent Sample streams; further streams end with RESOURCE_EXHAUSTED")
      ->capture_default_str();
  app.add_option("--workers", config.workers,
                 "Threads that run core steps (a request's steps are spread over them); 0 = one per CPU")
      ->capture_default_str();
  app.add_option("--share_steps", config.share_steps,
                 "Let a large step (attention of at least 262144 elements) share its metric passes with an idle worker "
                 "(lower latency when the server is quiet)")
      ->capture_default_str();
  app.add_flag("--allow_no_compute", config.allow_no_compute,
               "Answer calls with metadata samplerd-no-compute: 1 without core (transport benchmarks only)");
  app.add_option("--drain_seconds", config.drain_seconds,
                 "On SIGTERM/SIGINT, seconds in-flight calls may run before they are cancelled")
      ->capture_default_str();
  app.add_option("--log_level", config.log_level, "trace, debug, info, warn, error, critical or off")
      ->capture_default_str();
  app.add_option("--log_format", config.log_format,
                 "text, or json: one JSON object per line on stderr (time, level, logger, msg, and the caller's "
                 "W3C traceparent when a call sent one)")
      ->capture_default_str();
  app.add_option("--tls_cert", config.tls_cert,
                 "PEM certificate chain: serve TLS on every TCP address (unix: sockets stay plaintext); needs "
                 "--tls_key");
  app.add_option("--tls_key", config.tls_key, "PEM private key of --tls_cert (unencrypted)");
  app.add_option("--tls_client_ca", config.tls_client_ca,
                 "PEM CA bundle: mutual TLS, a client must present a certificate this CA signed");
  app.add_option("--auth_token_file", config.auth_token_file,
                 "File of accepted bearer tokens, one per line: every RPC except grpc.health.v1 must send "
                 "'authorization: Bearer <token>', else UNAUTHENTICATED; re-read on SIGHUP");
  CLI::Option* metrics_listen =
      app.add_option("--metrics_listen", config.metrics_listen,
                     "host:port serving Prometheus /metrics and the live page (/) over HTTP, both public (port 0 = any free port, printed at start); "
                     "\"\" = no metrics. When left at the default and taken, samplerd logs an error and runs without")
          ->capture_default_str();
  // docs/contract.md section 7 names the flag --metrics_port: the same server on every interface.
  int metrics_port = -1;
  app.add_option("--metrics_port", metrics_port,
                 "Port serving Prometheus /metrics on every interface: --metrics_listen 0.0.0.0:PORT (0 = any free "
                 "port)")
      ->check(CLI::Range(0, 65535))
      ->excludes(metrics_listen);
  app.add_option("--max_connection_age_seconds", config.max_connection_age_seconds,
                 "Close connections older than this (GOAWAY), so clients rebalance over replicas; 0 = never")
      ->capture_default_str();
  app.add_option("--max_connection_age_grace_seconds", config.max_connection_age_grace_seconds,
                 "Seconds the calls of an aged connection may still run; at least --drain_seconds")
      ->capture_default_str();
  app.set_version_flag("--version", SAMPLERD_VERSION);
  app.footer(
      "Signals: SIGTERM/SIGINT drain (health NOT_SERVING, no new calls, in-flight calls get --drain_seconds) and "
      "exit 0; SIGHUP re-reads --config and --auth_token_file, keeping the old ones if a file is bad.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : samplerd::kExitUsage;
  }

  if (metrics_port >= 0) config.metrics_listen = absl::StrCat("0.0.0.0:", metrics_port);

  // The requested format already, so that even a flag error is a JSON line when JSON was asked for.
  samplerd::SetUpLogging(config.log_format, "info");
  if (absl::Status s = samplerd::ValidateServerConfig(config); !s.ok()) {
    spdlog::error("{}", std::string(s.message()));
    return samplerd::kExitUsage;
  }
  samplerd::SetUpLogging(config.log_format, config.log_level);
  // Before gRPC starts its threads: large messages otherwise page-fault afresh on every request.
  if (absl::Status s = samplerd::TuneAllocatorForLargeMessages(); !s.ok()) spdlog::warn("{}", std::string(s.message()));

  absl::StatusOr<std::shared_ptr<const samplerd::ProfileRegistry>> profiles =
      samplerd::LoadProfiles(config.config_path);
  if (!profiles.ok()) {
    spdlog::error("{}", std::string(profiles.status().message()));
    return samplerd::kExitUsage;
  }
  spdlog::info("samplerd {} {}", SAMPLERD_VERSION, samplerd::DescribeServerConfig(config));
  spdlog::info("profiles: {}", samplerd::DescribeProfiles(**profiles));

  // Blocked before gRPC starts its threads, which inherit the mask: the signals then reach only sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const bool metrics_required = app.count("--metrics_listen") > 0 || app.count("--metrics_port") > 0;
  const int exit_code = samplerd::RunServer(config, metrics_required, *std::move(profiles), signals);
  samplerd::RestoreGrpcLogging();
  return exit_code;
}
