// Loading the profiles file, and reloading it (with the token file) on SIGHUP without a restart.
//
//   absl::StatusOr<std::shared_ptr<const ProfileRegistry>> profiles = LoadProfiles(config.config_path);
//   ...
//   ConfigReloader reloader({config.config_path, service.get(), tokens, metrics});
//   reloader.RequestReload();   // from the signal thread, on SIGHUP: the reload runs on the reloader's thread
//   reloader.Stop();            // at the end of the drain
//
// A reload is all or nothing per file: the new profiles replace the old ones in one pointer swap
// (SamplerService::SetProfiles), so a request in flight finishes on the set it started with and the next one
// uses the new set; a file that does not parse or validate changes nothing.
#ifndef SAMPLERD_SERVICE_CONFIG_RELOADER_H_
#define SAMPLERD_SERVICE_CONFIG_RELOADER_H_

#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/profile.h"
#include "service/auth.h"
#include "service/sampler_service.h"
#include "service/server_metrics.h"

namespace samplerd {

// LoadProfiles()
//
// The built-in profiles when `config_path` is empty, else those plus the file's (ProfileRegistry::FromJsonFile).
// Errors are INVALID_ARGUMENT or NOT_FOUND with a message that starts "--config <path>: " and names the field.
absl::StatusOr<std::shared_ptr<const ProfileRegistry>> LoadProfiles(const std::string& config_path);

// DescribeProfiles()
//
// "entropix, entropix-frog, fixed (default entropix)", for the log: the first kProfilesNamedInTheLog names, then
// how many more (a config may hold hundreds of thousands).
inline constexpr size_t kProfilesNamedInTheLog = 32;
std::string DescribeProfiles(const ProfileRegistry& profiles);

// ConfigReloader
//
// Thread-safe.
class ConfigReloader {
 public:
  struct Options {
    // --config; empty = nothing to reload for profiles.
    std::string config_path;
    // Receives the new profiles; required, must outlive the reloader.
    SamplerService* service = nullptr;
    // --auth_token_file's tokens, re-read too; optional.
    std::shared_ptr<BearerTokens> tokens;
    // Counts reloads (samplerd_config_reloads_total); optional.
    std::shared_ptr<ServerMetrics> metrics;
  };

  explicit ConfigReloader(Options options) : options_(std::move(options)) {}

  // Stop()s.
  ~ConfigReloader();

  ConfigReloader(const ConfigReloader&) = delete;
  ConfigReloader& operator=(const ConfigReloader&) = delete;

  // Re-reads both files on the reloader's own thread and returns at once: a large config parses for seconds, and
  // the signal thread must be free meanwhile for the SIGTERM that may follow. Each file that loads is applied, and
  // each gets one log line (info on success, error on failure: "... keeping the previous profiles"). Requests
  // made while a reload runs are folded into one more reload after it. Without a thread to run on (a pids limit),
  // reloads on the caller's.
  void RequestReload();

  // Drops the requests not yet begun and waits for the reload that runs, if any; later requests do nothing. For
  // the end of a drain, on a thread other than the one that waits for signals, so a second SIGTERM still ends
  // the process at once should a reload hang (a config on a hung mount).
  void Stop();

 private:
  absl::Status Reload();
  void RunRequests();

  const Options options_;
  std::mutex mu_;
  std::condition_variable requested_;
  bool pending_ = false;   // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;     // started by the first RequestReload; guarded by mu_
};

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_CONFIG_RELOADER_H_
