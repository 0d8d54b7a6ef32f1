// samplerd: the entropy-adaptive sampling server (DESIGN.md).
//
//   samplerd --listen 0.0.0.0:50051 --listen unix:/run/samplerd.sock --config profiles.json
//
// Prints "samplerd listening on <address>" on stdout once per bound address (with the port gRPC picked when
// the address asked for port 0), then serves until SIGTERM or SIGINT: health turns NOT_SERVING, in-flight
// calls get --drain_seconds to finish, and the process exits 0. Exit code 2 = bad flags or config file,
// 1 = the server could not start.
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
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "service/sampler_service.h"
#include "service/server_config.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

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

// All server wiring. Returns the process exit code. `stop_signals` must already be blocked in every thread
// (main blocks them before gRPC starts any), so only the sigwait below receives them.
int RunServer(const ServerConfig& config, std::shared_ptr<const ProfileRegistry> profiles,
              const sigset_t& stop_signals) {
  SamplerService::Options options;
  options.config = config;
  options.profiles = std::move(profiles);
  absl::StatusOr<std::unique_ptr<SamplerService>> service = SamplerService::Create(std::move(options));
  if (!service.ok()) {
    spdlog::error("{}", service.status().ToString());
    return kExitUsage;
  }

  // grpc.health.v1.Health: "" and "samplerd.v1.Sampler" are SERVING while the server runs.
  grpc::EnableDefaultHealthCheckService(true);
  // grpc.reflection.v1alpha.ServerReflection, so grpcurl / grpc_cli work without the .proto files.
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  grpc::ServerBuilder builder;
  std::vector<int> selected_ports(config.listen.size(), 0);
  for (size_t i = 0; i < config.listen.size(); ++i) {
    builder.AddListeningPort(config.listen[i], grpc::InsecureServerCredentials(), &selected_ports[i]);
  }
  builder.RegisterService(service->get());
  // gRPC sets SO_REUSEPORT by default, so a second server on a taken port would start and silently take half
  // of the new connections; without it the bind fails and we say so.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // bytes; a larger message ends its call with RESOURCE_EXHAUSTED before it is parsed.
  builder.SetMaxReceiveMessageSize(static_cast<int>(config.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(config.max_message_bytes));
  // Model hosts hold one stream open for hours and ping it through NATs and load balancers: accept a client
  // ping every 10 s (ms), also while no call is active, instead of answering with GOAWAY "too_many_pings".
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Our own pings find dead peers, whose streams would otherwise hold --max_streams slots: every 60 s (ms),
  // the peer is dropped when no ack comes within 20 s (ms).
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20 * 1000);

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
  std::fflush(stdout);

  std::thread stopper([&] {
    int signal = 0;
    sigwait(&stop_signals, &signal);
    spdlog::info("{}: health NOT_SERVING, draining in-flight calls for up to {} s", strsignal(signal),
                 config.drain_seconds);
    server->GetHealthCheckService()->SetServingStatus(false);
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(config.drain_seconds));
  });
  server->Wait();
  stopper.join();
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
  app.add_option("--max_steps_per_request", config.max_steps_per_request,
                 "Most steps in one SampleRequest; more ends the call with RESOURCE_EXHAUSTED")
      ->capture_default_str();
  app.add_option("--max_streams", config.max_streams,
                 "Most concurrent Sample streams; further streams end with RESOURCE_EXHAUSTED")
      ->capture_default_str();
  app.add_option("--drain_seconds", config.drain_seconds,
                 "On SIGTERM/SIGINT, seconds in-flight calls may run before they are cancelled")
      ->capture_default_str();
  app.add_option("--log_level", config.log_level, "trace, debug, info, warn, error, critical or off")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : samplerd::kExitUsage;
  }

  spdlog::set_default_logger(spdlog::stderr_color_mt("samplerd"));
  if (absl::Status s = samplerd::ValidateServerConfig(config); !s.ok()) {
    spdlog::error("{}", std::string(s.message()));
    return samplerd::kExitUsage;
  }
  spdlog::set_level(spdlog::level::from_str(config.log_level));

  absl::StatusOr<std::shared_ptr<const samplerd::ProfileRegistry>> profiles =
      config.config_path.empty() ? samplerd::ProfileRegistry::BuiltIn()
                                 : samplerd::ProfileRegistry::FromJsonFile(config.config_path);
  if (!profiles.ok()) {
    spdlog::error("--config {}: {}", config.config_path, std::string(profiles.status().message()));
    return samplerd::kExitUsage;
  }
  spdlog::info("samplerd {}", samplerd::DescribeServerConfig(config));
  std::string names;
  for (const samplerd::Profile& p : (*profiles)->profiles()) absl::StrAppend(&names, names.empty() ? "" : ", ", p.name());
  spdlog::info("profiles: {} (default {})", names, (*profiles)->default_profile());

  // Blocked before gRPC starts its threads, which inherit the mask: the signals then reach only sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  return samplerd::RunServer(config, *std::move(profiles), stop_signals);
}
