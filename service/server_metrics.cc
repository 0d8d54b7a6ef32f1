#include "service/server_metrics.h"

#include <sys/socket.h>

#include <array>
#include <cmath>
#include <sstream>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "httplib.h"
#include "prometheus/collectable.h"
#include "prometheus/gauge.h"
#include "prometheus/metric_family.h"
#include "prometheus/text_serializer.h"
#include "service/bounded_http_server.h"
#include "service/live_page.h"

namespace samplerd {

// The gauges below are read from the service at scrape time rather than kept in step with it: the service already
// counts its streams and its pending bytes, and a second count could drift from it.
class ServerMetrics::ScrapedGauges final : public prometheus::Collectable {
 public:
  enum Index { kActiveStreams, kPendingRequestBytes, kCount };

  std::vector<prometheus::MetricFamily> Collect() const override {
    static constexpr std::array<std::pair<const char*, const char*>, kCount> kNames = {{
        {"samplerd_active_streams", "Sample streams open now"},
        {"samplerd_pending_request_bytes",
         "Bytes held for calls not finished with: parsed requests not yet answered, answers not yet written "
         "(--max_pending_request_bytes bounds them)"},
    }};
    std::vector<prometheus::MetricFamily> families;
    std::lock_guard<std::mutex> lock(mu_);
    for (int i = 0; i < kCount; ++i) {
      prometheus::MetricFamily family;
      family.name = kNames[i].first;
      family.help = kNames[i].second;
      family.type = prometheus::MetricType::Gauge;
      prometheus::ClientMetric metric;
      metric.gauge.value = sources_[i] ? sources_[i]() : 0;
      family.metric.push_back(std::move(metric));
      families.push_back(std::move(family));
    }
    return families;
  }

  // An empty source (std::function's conversion keeps it empty) reads as 0.
  void Set(Index i, std::function<double()> source) {
    std::lock_guard<std::mutex> lock(mu_);
    sources_[i] = std::move(source);
  }

 private:
  mutable std::mutex mu_;
  std::array<std::function<double()>, kCount> sources_;  // guarded by mu_
};

namespace {

// Bucket upper bounds in seconds. A step takes from ~10 us (small vocabulary) to a few ms (a 256k vocabulary
// with adaptive sampling); the tail buckets catch an overloaded machine.
const prometheus::Histogram::BucketBoundaries& CoreSecondsBuckets() {
  static const auto* const buckets = new prometheus::Histogram::BucketBoundaries{
      1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0};
  return *buckets;
}

constexpr char kExpositionType[] = "text/plain; version=0.0.4; charset=utf-8";

// httplib's default also sets SO_REUSEPORT, which would let a second samplerd bind a port the first one serves
// (and steal half its scrapes); SO_REUSEADDR alone only allows a restart over connections in TIME_WAIT.
void ReuseAddressOnly(socket_t sock) {
  int yes = 1;
  setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
}

}  // namespace

absl::StatusOr<std::shared_ptr<ServerMetrics>> ServerMetrics::Create(Options options) {
  std::shared_ptr<ServerMetrics> metrics(new ServerMetrics());
  metrics->registry_ = std::make_shared<prometheus::Registry>();
  prometheus::Registry& registry = *metrics->registry_;

  metrics->steps_ = &prometheus::BuildCounter()
                         .Name("samplerd_steps_total")
                         .Help("Steps answered with a token, by regime and profile")
                         .Register(registry);
  metrics->step_errors_ = &prometheus::BuildCounter()
                               .Name("samplerd_step_errors_total")
                               .Help("Steps answered with StepResult.error, by canonical status code")
                               .Register(registry);
  metrics->step_core_seconds_ = &prometheus::BuildHistogram()
                                     .Name("samplerd_step_core_seconds")
                                     .Help("Time core spent on one step (metrics, decision, draw)")
                                     .Register(registry)
                                     .Add({}, CoreSecondsBuckets());
  metrics->request_bytes_ = &prometheus::BuildCounter()
                                 .Name("samplerd_request_bytes_total")
                                 .Help("Serialized bytes of the SampleRequests processed")
                                 .Register(registry)
                                 .Add({});
  auto& reloads = prometheus::BuildCounter()
                      .Name("samplerd_config_reloads_total")
                      .Help("Profile reloads on SIGHUP, by result")
                      .Register(registry);
  metrics->reloads_succeeded_ = &reloads.Add({{"result", "success"}});
  metrics->reloads_failed_ = &reloads.Add({{"result", "failure"}});
  prometheus::BuildGauge()
      .Name("samplerd_build_info")
      .Help("Always 1; the labels describe the running binary")
      .Register(registry)
      .Add({{"version", options.version}})
      .Set(1);
  if (options.max_streams > 0) {
    prometheus::BuildGauge()
        .Name("samplerd_max_streams")
        .Help("Sample streams allowed at once (--max_streams)")
        .Register(registry)
        .Add({})
        .Set(options.max_streams);
  }
  if (options.max_pending_request_bytes > 0) {
    prometheus::BuildGauge()
        .Name("samplerd_max_pending_request_bytes")
        .Help("Parsed request bytes allowed to wait for an answer at once (--max_pending_request_bytes)")
        .Register(registry)
        .Add({})
        .Set(static_cast<double>(options.max_pending_request_bytes));
  }
  metrics->scraped_ = std::make_shared<ScrapedGauges>();

  if (absl::Status served = metrics->Serve(options.listen); !served.ok()) return served;
  return metrics;
}

absl::Status ServerMetrics::Serve(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--metrics_listen: must be host:port, got \"", listen, "\""));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);

  BoundedHttpServer::Limits limits;
  limits.max_request_bytes = kHttpMaxRequestBytes;
  limits.request_seconds = kHttpIdleSeconds;
  limits.write_seconds = kHttpIdleSeconds * 5;
  // Several threads, so a slow or idle connection holds one of them, not the endpoint; connections beyond the
  // threads wait in the queue for at most kHttpIdleSeconds per kHttpThreads connections ahead of them.
  limits.threads = kHttpThreads;
  limits.max_connections = kHttpMaxConnections;
  http_ = std::make_unique<BoundedHttpServer>(limits);
  httplib::Server& http = *http_;
  http.set_socket_options(ReuseAddressOnly);

  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
    response.set_content(Exposition(), kExpositionType);
  });
  http.Get("/live/steps", [this](const httplib::Request&, httplib::Response& response) {
    response.set_header("Cache-Control", "no-store");
    response.set_content(LiveJson(), "application/json");
  });
  for (const EmbeddedFile& file : LivePageFiles()) {
    const auto serve = [file](const httplib::Request&, httplib::Response& response) {
      response.set_content(file.body.data(), file.body.size(), std::string(file.content_type).c_str());
    };
    http.Get(std::string(file.path), serve);
    if (file.path == "/index.html") http.Get("/", serve);
  }

  const int bound = port == 0 ? http.bind_to_any_port(host) : (http.bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    http_.reset();
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", listen, " (--metrics_listen): the address is taken or not local"));
  }
  address_ = absl::StrCat(listen.substr(0, colon), ":", bound);
  try {
    http_thread_ = std::thread([&http] { http.listen_after_bind(); });
  } catch (const std::system_error& e) {
    http_.reset();
    return absl::UnavailableError(absl::StrCat("no thread to serve metrics on ", listen, ": ", e.what()));
  }
  return absl::OkStatus();
}

std::string ServerMetrics::Exposition() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  for (prometheus::MetricFamily& family : scraped_->Collect()) families.push_back(std::move(family));
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

std::string ServerMetrics::LiveJson() const {
  // The page asks once a second. Rendered at most once per interval (and one render at a time), a loop of GETs
  // costs the server a render per interval rather than one each: 64 full rings are 1.2 MB and 46 ms, a config of
  // 30,000 profiles 13.6 MB. Half the page's period, so each of its polls sees steps newer than the last one's.
  constexpr auto kLiveRenderInterval = std::chrono::milliseconds(500);
  std::lock_guard<std::mutex> live_lock(live_mu_);
  const auto now = std::chrono::steady_clock::now();
  if (!live_json_.empty() && now - live_rendered_ < kLiveRenderInterval) return live_json_;
  const std::shared_ptr<const ProfileRegistry> profiles = CurrentProfiles();
  live_json_ = live_steps_.Json(profiles.get());
  live_rendered_ = now;
  return live_json_;
}

ServerMetrics::~ServerMetrics() {
  // Stop serving before the collectables go away. stop() closes the listening socket; the pool's threads end
  // once their connections are answered or time out (kHttpIdleSeconds).
  if (http_ != nullptr) {
    http_->stop();
    if (http_thread_.joinable()) http_thread_.join();
  }
}

void ServerMetrics::SetActiveStreams(std::function<int()> source) {
  scraped_->Set(ScrapedGauges::kActiveStreams, std::move(source));
}

void ServerMetrics::SetPendingRequestBytes(std::function<int64_t()> source) {
  scraped_->Set(ScrapedGauges::kPendingRequestBytes, std::move(source));
}

void ServerMetrics::SetProfiles(std::function<std::shared_ptr<const ProfileRegistry>()> source) {
  std::lock_guard<std::mutex> lock(profiles_mu_);
  profiles_ = std::move(source);
}

std::shared_ptr<const ProfileRegistry> ServerMetrics::CurrentProfiles() const {
  std::lock_guard<std::mutex> lock(profiles_mu_);
  return profiles_ ? profiles_() : nullptr;
}

void ServerMetrics::OnConfigReload(bool success) {
  (success ? reloads_succeeded_ : reloads_failed_)->Increment();
  ForgetRemovedProfiles();  // against the profiles in force, whichever file failed
}

void ServerMetrics::OnRequest(size_t bytes) { request_bytes_->Increment(static_cast<double>(bytes)); }

std::shared_ptr<StepRing> ServerMetrics::CountStep(v1::Regime regime, const std::string& profile) {
  const int slot = static_cast<int>(regime);
  // Counted under the lock: ForgetRemovedProfiles may remove the counter as soon as it is released.
  std::lock_guard<std::mutex> lock(mu_);
  ProfileSeries& series = profile_series_[profile];
  // Asked again while it has none: a reload may have freed rings since.
  if (series.live == nullptr) series.live = live_steps_.ForProfile(profile);
  prometheus::Counter*& counter = series.steps[slot >= 0 && slot < kRegimeSlots ? slot : kRegimeSlots];
  if (counter == nullptr) counter = &steps_->Add({{"regime", RegimeLabel(regime)}, {"profile", profile}});
  counter->Increment();
  return series.live;
}

void ServerMetrics::ForgetRemovedProfiles() {
  const std::shared_ptr<const ProfileRegistry> profiles = CurrentProfiles();
  if (profiles == nullptr) return;
  absl::flat_hash_set<std::string> names;
  for (const Profile& profile : profiles->profiles()) names.insert(profile.name());
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = profile_series_.begin(); it != profile_series_.end();) {
      if (names.contains(it->first)) {
        ++it;
        continue;
      }
      for (prometheus::Counter* counter : it->second.steps) {
        if (counter != nullptr) steps_->Remove(counter);
      }
      profile_series_.erase(it++);
    }
    // Under mu_: a step of a removed profile counted between the two would keep the ring KeepOnly drops.
    live_steps_.KeepOnly(names);
  }
}

void ServerMetrics::OnStep(const v1::StepResult& result, std::chrono::nanoseconds core_time) {
  step_core_seconds_->Observe(std::chrono::duration<double>(core_time).count());
  if (!result.has_error()) {
    const std::shared_ptr<StepRing> live = CountStep(result.regime(), result.profile());
    if (live != nullptr) {
      const v1::Metrics& m = result.metrics();
      live->Push(result.regime(), m.has_logits_entropy() ? m.logits_entropy() : NAN,
                 m.has_logits_varentropy() ? m.logits_varentropy() : NAN);
    }
    return;
  }
  const int code = result.error().code();
  prometheus::Counter* counter = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const bool cached = code >= 0 && code < static_cast<int>(error_counters_.size());
    if (cached) counter = error_counters_[code];
    if (counter == nullptr) {
      counter = &step_errors_->Add({{"code", absl::StatusCodeToString(static_cast<absl::StatusCode>(code))}});
      if (cached) error_counters_[code] = counter;
    }
  }
  counter->Increment();
}

}  // namespace samplerd
