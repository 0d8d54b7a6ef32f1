// samplerd's Prometheus metrics, served over HTTP by prometheus-cpp's pull Exposer at /metrics.
//
//   absl::StatusOr<std::shared_ptr<ServerMetrics>> metrics = ServerMetrics::Create({"0.0.0.0:9464", "0.1.0"});
//   SamplerService::Options options;
//   options.observer = *metrics;                          // steps, errors, core time, request bytes
//   ...
//   (*metrics)->SetActiveStreams([&service] { return service->active_streams(); });
//
// The series (STYLE.md: `samplerd_*`, base units, few labels):
//   samplerd_steps_total{regime,profile}      counter    steps answered with a token; regime as "argmax",
//                                                        "adaptive", ... (the Regime name without REGIME_)
//   samplerd_step_errors_total{code}          counter    steps answered with StepResult.error, by canonical
//                                                        code name ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", ...)
//   samplerd_step_core_seconds                histogram  time core spent per step, answered or rejected
//   samplerd_request_bytes_total              counter    serialized size of every SampleRequest processed
//   samplerd_active_streams                   gauge      Sample streams open now (read at scrape time)
//   samplerd_config_reloads_total{result}     counter    SIGHUP reloads, result "success" or "failure"
//   samplerd_build_info{version}              gauge      always 1
#ifndef SAMPLERD_SERVICE_SERVER_METRICS_H_
#define SAMPLERD_SERVICE_SERVER_METRICS_H_

#include <array>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "samplerd/v1/sampler.pb.h"
#include "service/request_observer.h"

namespace samplerd {

// ServerMetrics
//
// Thread-safe; the observer calls are cheap enough to sit next to every step (a hash lookup under a mutex and
// an atomic add).
class ServerMetrics final : public RequestObserver {
 public:
  struct Options {
    // host:port for the HTTP endpoint (port 0 = any free port); required.
    std::string listen;
    // The samplerd_build_info{version} label.
    std::string version;
  };

  // Starts serving /metrics. UNAVAILABLE naming the address when it cannot be bound.
  static absl::StatusOr<std::shared_ptr<ServerMetrics>> Create(Options options);

  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;
  ~ServerMetrics() override;

  // The address a scraper can use: the host asked for and the port actually bound (meaningful for port 0).
  const std::string& address() const { return address_; }

  // The source of samplerd_active_streams, called at each scrape; until set the gauge reads 0.
  void SetActiveStreams(std::function<int()> source);

  // A SIGHUP reload finished.
  void OnConfigReload(bool success);

  // RequestObserver
  void OnRequest(size_t bytes) override;
  void OnStep(const v1::StepResult& result, std::chrono::nanoseconds core_time) override;

 private:
  class ActiveStreamsCollectable;

  ServerMetrics() = default;
  prometheus::Counter& StepCounter(v1::Regime regime, const std::string& profile);

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<ActiveStreamsCollectable> active_streams_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string address_;

  prometheus::Family<prometheus::Counter>* steps_ = nullptr;
  prometheus::Family<prometheus::Counter>* step_errors_ = nullptr;
  prometheus::Histogram* step_core_seconds_ = nullptr;
  prometheus::Counter* request_bytes_ = nullptr;
  prometheus::Counter* reloads_succeeded_ = nullptr;
  prometheus::Counter* reloads_failed_ = nullptr;

  // Counters already made, so a step does not build a label map. Regime values are small (proto enum).
  static constexpr int kRegimeSlots = 16;
  std::mutex mu_;
  absl::flat_hash_map<std::string, std::array<prometheus::Counter*, kRegimeSlots>> step_counters_;  // mu_
  std::array<prometheus::Counter*, 17> error_counters_{};  // guarded by mu_; index = canonical code 0..16
};

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_SERVER_METRICS_H_
