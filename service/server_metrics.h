// samplerd's Prometheus metrics and live page, served over HTTP (cpp-httplib) on the metrics address:
//   /metrics      the series below, Prometheus text format (prometheus-cpp's TextSerializer)
//   /             the live page (service/live_page/): each profile's recent steps on logits entropy vs
//                 varentropy, coloured by regime over the profile's regime regions, the regime mix, the step rate
//   /live/steps   the page's data (LiveSteps::Json): no sequence ids, tokens or times, only regimes and metrics
//
//   absl::StatusOr<std::shared_ptr<ServerMetrics>> metrics = ServerMetrics::Create({"0.0.0.0:9464", "0.1.0"});
//   SamplerService::Options options;
//   options.observer = *metrics;                          // steps, errors, core time, request bytes
//   ...
//   (*metrics)->SetActiveStreams([&service] { return service->active_streams(); });
//   (*metrics)->SetPendingRequestBytes([&service] { return service->pending_request_bytes(); });
//   (*metrics)->SetProfiles([&service] { return service->profiles(); });   // the page's regime regions
//
// The series (docs/style.md: `samplerd_*`, base units, few labels):
//   samplerd_steps_total{regime,profile}      counter    steps answered with a token; regime as "argmax",
//                                                        "adaptive", ... (the Regime name without REGIME_)
//   samplerd_step_errors_total{code}          counter    steps answered with StepResult.error, by canonical
//                                                        code name ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", ...)
//   samplerd_step_core_seconds                histogram  core time per step (StepResult.server_micros), answered
//                                                        or rejected
//   samplerd_request_bytes_total              counter    serialized size of every SampleRequest processed
//   samplerd_active_streams                   gauge      Sample streams open now (read at scrape time)
//   samplerd_max_streams                      gauge      --max_streams, so a rule can compare the two
//   samplerd_pending_request_bytes            gauge      bytes held for calls not finished with: parsed requests
//                                                        not yet answered, answers not yet written (read at
//                                                        scrape time)
//   samplerd_max_pending_request_bytes        gauge      --max_pending_request_bytes
//   samplerd_config_reloads_total{result}     counter    SIGHUP reloads, result "success" or "failure"
//   samplerd_build_info{version}              gauge      always 1
#ifndef SAMPLERD_SERVICE_SERVER_METRICS_H_
#define SAMPLERD_SERVICE_SERVER_METRICS_H_

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "core/profile.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "samplerd/v1/sampler.pb.h"
#include "service/live_steps.h"
#include "service/request_observer.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace samplerd {

// ServerMetrics
//
// Thread-safe; the observer calls are cheap enough to sit next to every step (a hash lookup under a mutex, an
// atomic add and a lock-free ring push).
//
// The HTTP server (BoundedHttpServer) answers on kHttpThreads threads, one request per connection: a connection
// whose request has not fully arrived kHttpIdleSeconds after a thread took it up, or that sends more than
// kHttpMaxRequestBytes, is closed. So an idle, trickling or endless request holds one thread for that long and a
// few KB at most instead of blocking every scrape. Past kHttpThreads stalled connections a scrape waits
// kHttpIdleSeconds per kHttpThreads more of them, and past kHttpMaxConnections open at once a new connection is
// answered 503 and closed, so a flood of connections can still delay or refuse scrapes (the port belongs on a
// trusted network) but not take the descriptors the gRPC listeners need.
class ServerMetrics final : public RequestObserver {
 public:
  static constexpr int kHttpThreads = 16;
  static constexpr int kHttpMaxConnections = 64;
  static constexpr int kHttpIdleSeconds = 2;
  static constexpr size_t kHttpMaxRequestBytes = 32768;

  struct Options {
    // host:port for the HTTP endpoint (port 0 = any free port); required.
    std::string listen;
    // The samplerd_build_info{version} label.
    std::string version;
    // The value of samplerd_max_streams (--max_streams); 0 leaves the series out.
    int max_streams = 0;
    // The value of samplerd_max_pending_request_bytes (--max_pending_request_bytes); 0 leaves the series out.
    int64_t max_pending_request_bytes = 0;
  };

  // Starts serving /metrics and the live page. UNAVAILABLE naming the address when it cannot be bound (also when
  // another process listens there: the port is not shared).
  static absl::StatusOr<std::shared_ptr<ServerMetrics>> Create(Options options);

  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;
  ~ServerMetrics() override;

  // The address a scraper can use: the host asked for and the port actually bound (meaningful for port 0).
  const std::string& address() const { return address_; }

  // The registry every series is in, for collectors kept elsewhere (shm_metrics.h).
  prometheus::Registry& registry() { return *registry_; }

  // The sources of samplerd_active_streams and samplerd_pending_request_bytes, called at each scrape; until set
  // (and once set to nullptr) the gauges read 0.
  void SetActiveStreams(std::function<int()> source);
  void SetPendingRequestBytes(std::function<int64_t()> source);
  // The source of the profiles in force, called for each /live/steps; until set the page draws no regions.
  void SetProfiles(std::function<std::shared_ptr<const ProfileRegistry>()> source);

  // A SIGHUP reload finished.
  void OnConfigReload(bool success);

  // RequestObserver
  void OnRequest(size_t bytes) override;
  void OnStep(const v1::StepResult& result, std::chrono::nanoseconds core_time) override;

 private:
  class ScrapedGauges;
  static constexpr int kRegimeSlots = StepRing::kRegimeSlots;
  // What a step of one profile updates, found with one lookup.
  struct ProfileSeries {
    std::array<prometheus::Counter*, kRegimeSlots + 1> steps{};  // by regime enum value; the last for any other
    std::shared_ptr<StepRing> live;                              // null past LiveSteps::kMaxProfiles
  };

  ServerMetrics() = default;
  absl::Status Serve(const std::string& listen);
  std::string Exposition() const;
  std::string LiveJson() const;
  // What SetProfiles' source gives now; null without one.
  std::shared_ptr<const ProfileRegistry> CurrentProfiles() const;
  // Counts a step of (regime, profile); returns the profile's ring.
  std::shared_ptr<StepRing> CountStep(v1::Regime regime, const std::string& profile);
  // Drops the step counters and the ring of every profile the reload removed: a config that renames its
  // profiles on every reload would otherwise add series to /metrics and keep the live page's rings for good.
  void ForgetRemovedProfiles();

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<ScrapedGauges> scraped_;
  LiveSteps live_steps_;
  // /live/steps as last rendered, and when: one render serves every request for kLiveRenderInterval.
  mutable std::mutex live_mu_;
  mutable std::string live_json_;                                // guarded by live_mu_
  mutable std::chrono::steady_clock::time_point live_rendered_;  // guarded by live_mu_
  mutable std::mutex profiles_mu_;
  std::function<std::shared_ptr<const ProfileRegistry>()> profiles_;  // guarded by profiles_mu_
  std::unique_ptr<httplib::Server> http_;
  std::thread http_thread_;
  std::string address_;

  prometheus::Family<prometheus::Counter>* steps_ = nullptr;
  prometheus::Family<prometheus::Counter>* step_errors_ = nullptr;
  prometheus::Histogram* step_core_seconds_ = nullptr;
  prometheus::Counter* request_bytes_ = nullptr;
  prometheus::Counter* reloads_succeeded_ = nullptr;
  prometheus::Counter* reloads_failed_ = nullptr;

  // Counters already made, so a step does not build a label map. Regime values are small (proto enum).
  std::mutex mu_;
  absl::flat_hash_map<std::string, ProfileSeries> profile_series_;  // guarded by mu_
  std::array<prometheus::Counter*, 17> error_counters_{};           // guarded by mu_; index = canonical code 0..16
};

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_SERVER_METRICS_H_
