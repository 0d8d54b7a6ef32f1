#include "service/config_reloader.h"

#include <algorithm>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/field_error.h"
#include "spdlog/spdlog.h"

namespace samplerd {

absl::StatusOr<std::shared_ptr<const ProfileRegistry>> LoadProfiles(const std::string& config_path) {
  if (config_path.empty()) return ProfileRegistry::BuiltIn();
  absl::StatusOr<std::shared_ptr<const ProfileRegistry>> profiles = ProfileRegistry::FromJsonFile(config_path);
  if (!profiles.ok()) {
    // Parse errors already start with the path; validation errors name only the field.
    const absl::string_view message = profiles.status().message();
    return absl::Status(profiles.status().code(), absl::StartsWith(message, config_path)
                                                      ? absl::StrCat("--config ", message)
                                                      : absl::StrCat("--config ", config_path, ": ", message));
  }
  return profiles;
}

std::string DescribeProfiles(const ProfileRegistry& profiles) {
  std::string names;
  const auto& all = profiles.profiles();
  const size_t named = std::min(all.size(), kProfilesNamedInTheLog);
  for (size_t i = 0; i < named; ++i) absl::StrAppend(&names, i == 0 ? "" : ", ", Excerpt(all[i].name()));
  if (all.size() > named) absl::StrAppend(&names, " and ", all.size() - named, " more");
  return absl::StrCat(names, " (default ", Excerpt(profiles.default_profile()), ")");
}

absl::Status ConfigReloader::Reload() {
  absl::Status first_error;
  if (options_.config_path.empty()) {
    spdlog::info("SIGHUP: no --config, the built-in profiles stay");
  } else {
    absl::StatusOr<std::shared_ptr<const ProfileRegistry>> profiles = LoadProfiles(options_.config_path);
    if (profiles.ok()) {
      spdlog::info("SIGHUP: profiles reloaded from {}: {}", options_.config_path, DescribeProfiles(**profiles));
      options_.service->SetProfiles(*std::move(profiles));
    } else {
      spdlog::error("SIGHUP: {}; keeping the previous profiles", std::string(profiles.status().message()));
      first_error = profiles.status();
    }
  }
  if (options_.tokens != nullptr) {
    if (absl::Status s = options_.tokens->Reload(); s.ok()) {
      spdlog::info("SIGHUP: bearer tokens reloaded");
    } else {
      spdlog::error("SIGHUP: {}; keeping the previous tokens", std::string(s.message()));
      first_error.Update(s);
    }
  }
  if (options_.metrics != nullptr) options_.metrics->OnConfigReload(first_error.ok());
  return first_error;
}

ConfigReloader::~ConfigReloader() { Stop(); }

void ConfigReloader::Stop() {
  std::thread thread;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    thread = std::move(thread_);
  }
  requested_.notify_all();
  if (thread.joinable()) thread.join();
}

void ConfigReloader::RequestReload() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    pending_ = true;
    if (thread_.joinable()) {
      requested_.notify_all();
      return;
    }
    try {
      thread_ = std::thread([this] { RunRequests(); });
      return;
    } catch (const std::system_error& e) {
      pending_ = false;
      spdlog::warn("SIGHUP: no thread to reload on ({}); reloading on the signal thread", e.what());
    }
  }
  Reload().IgnoreError();  // logged and counted by Reload
}

void ConfigReloader::RunRequests() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    requested_.wait(lock, [this] { return pending_ || stopping_; });
    if (stopping_) return;
    pending_ = false;
    lock.unlock();
    Reload().IgnoreError();  // logged and counted by Reload
    lock.lock();
  }
}

}  // namespace samplerd
