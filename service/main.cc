// samplerd: the entropy-adaptive sampling server (docs/contract.md).
//
//   samplerd --listen 0.0.0.0:50051 --listen unix:/run/samplerd.sock --config profiles.json
//
// Prints "samplerd listening on <address>" on stdout once per bound address (with the port gRPC picked when
// the address asked for port 0), and "samplerd metrics on <host:port>" when /metrics is served, then serves
// until SIGTERM or SIGINT: health turns NOT_SERVING, in-flight calls get --drain_seconds to finish, and the
// process exits 0. SIGHUP re-reads --config and --auth_token_file (a bad file changes nothing). Exit code 2 =
// bad flags, config, certificate or token file; 1 = the server could not start.
//
// This file parses the flags (service/server_config.h) and runs the server (service/server.h); the signals are
// handled here, by one thread.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/profile.h"
#include "core/reduce_kernels.h"
#include "service/allocator_tuning.h"
#include "service/config_reloader.h"
#include "service/logging.h"
#include "service/open_file_limit.h"
#include "service/server.h"
#include "service/server_config.h"
#include "spdlog/spdlog.h"

#ifndef SAMPLERD_VERSION
#error "SAMPLERD_VERSION must be the project version (CMake PROJECT_VERSION)"
#endif

namespace samplerd {
namespace {

constexpr int kExitStartFailure = 1;

// Runs the server until SIGTERM or SIGINT. Returns the process exit code. `signals` (SIGTERM, SIGINT, SIGHUP)
// must already be blocked in every thread (main blocks them before gRPC starts any), so only the sigwait below
// receives them.
int RunServer(const ServerConfig& config, std::shared_ptr<const ProfileRegistry> profiles, const sigset_t& signals) {
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Create(config, std::move(profiles));
  if (!server.ok()) {
    spdlog::error("{}", std::string(server.status().message()));
    return absl::IsInvalidArgument(server.status()) ? kExitUsage : kExitStartFailure;
  }
  std::thread signal_thread;
  try {
    signal_thread = std::thread([&] {
      int signal = 0;
      while (sigwait(&signals, &signal) == 0 && signal == SIGHUP) {
        (*server)->RequestReload();
      }
      spdlog::info("{}: health NOT_SERVING, draining in-flight calls for up to {} s (send it again to exit at once)",
                   strsignal(signal), config.drain_seconds);
      std::thread drain;
      std::atomic<bool> stopped{false};
      const pthread_t waiter = pthread_self();
      try {
        drain = std::thread([&] {
          (*server)->Shutdown();
          // The whole drain is over (the shared-memory socket's too, after gRPC's): wake the loop below to end.
          stopped.store(true);
          pthread_kill(waiter, SIGHUP);  // blocked everywhere: only that sigwait takes it
        });
      } catch (const std::system_error& e) {
        spdlog::warn("no thread to drain on, so signals wait for the drain: {}", e.what());
        (*server)->Shutdown();
        return;
      }
      // The drain runs meanwhile, until it wakes this thread.
      while (sigwait(&signals, &signal) == 0 && !stopped.load()) {
        if (signal == SIGHUP) {
          spdlog::warn("SIGHUP ignored: the server is draining and reloads nothing");
          continue;
        }
        // What an operator (or a second Ctrl-C) asks for when the drain takes too long.
        spdlog::warn("{} again while draining: exiting now; calls still in flight get no answer", strsignal(signal));
        std::_Exit(128 + signal);
      }
      drain.join();
    });
  } catch (const std::system_error& e) {
    spdlog::error("no thread to wait for signals: {}", e.what());
    (*server)->Shutdown();
    return kExitStartFailure;
  }
  for (const std::string& address : (*server)->bound_addresses()) {
    // stdout, flushed: scripts and tests read the bound port from it.
    std::printf("samplerd listening on %s\n", address.c_str());
  }
  if (const std::string metrics = (*server)->metrics_address(); !metrics.empty()) {
    std::printf("samplerd metrics on %s\n", metrics.c_str());
  }
  std::fflush(stdout);

  (*server)->Wait();
  signal_thread.join();
  server->reset();
  spdlog::info("samplerd stopped");
  return 0;
}

}  // namespace
}  // namespace samplerd

int main(int argc, char** argv) {
  samplerd::ServerConfig config;
  if (std::optional<int> exit_code = samplerd::ParseServerFlags(argc, argv, SAMPLERD_VERSION, &config)) {
    return *exit_code;
  }

  // The requested format already, so that even a flag error is a JSON line when JSON was asked for.
  samplerd::SetUpLogging(config.log_format, "info");
  if (absl::Status s = samplerd::ValidateServerConfig(config); !s.ok()) {
    spdlog::error("{}", std::string(s.message()));
    return samplerd::kExitUsage;
  }
  // Before any step picks its kernels: a pin this CPU cannot honour would leave this replica's bits unlike the others'.
  if (absl::Status s = samplerd::kernels::CheckKernelPin(); !s.ok()) {
    spdlog::error("{}", std::string(s.message()));
    return samplerd::kExitUsage;
  }
  samplerd::SetUpLogging(config.log_format, config.log_level);
  // Before gRPC starts its threads: large messages otherwise page-fault afresh on every request.
  if (absl::Status s = samplerd::TuneAllocatorForLargeMessages(); !s.ok()) spdlog::warn("{}", std::string(s.message()));
  absl::StatusOr<uint64_t> open_files = samplerd::RaiseOpenFileLimit();
  if (!open_files.ok()) spdlog::warn("{}", std::string(open_files.status().message()));

  absl::StatusOr<std::shared_ptr<const samplerd::ProfileRegistry>> profiles =
      samplerd::LoadProfiles(config.config_path);
  if (!profiles.ok()) {
    spdlog::error("{}", std::string(profiles.status().message()));
    return samplerd::kExitUsage;
  }
  spdlog::info("samplerd {} {}", SAMPLERD_VERSION, samplerd::DescribeServerConfig(config));
  spdlog::info("profiles: {}", samplerd::DescribeProfiles(**profiles));
  spdlog::info("core kernels: {}{}", samplerd::kernels::ActiveKernels().name,
               std::getenv("SAMPLERD_SIMD") != nullptr ? " (pinned by SAMPLERD_SIMD)" : "");
  if (open_files.ok()) spdlog::info("open files: at most {}", *open_files);

  // Blocked before gRPC starts its threads, which inherit the mask: the signals then reach only sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const int exit_code = samplerd::RunServer(config, *std::move(profiles), signals);
  samplerd::RestoreGrpcLogging();
  return exit_code;
}
