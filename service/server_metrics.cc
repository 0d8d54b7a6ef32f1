#include "service/server_metrics.h"

#include <exception>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "prometheus/collectable.h"
#include "prometheus/gauge.h"
#include "prometheus/metric_family.h"

namespace samplerd {

// samplerd_active_streams is read from the service at scrape time rather than kept in step with stream
// opening and closing: the service already counts its streams, and a second count could drift from it.
class ServerMetrics::ActiveStreamsCollectable final : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    prometheus::MetricFamily family;
    family.name = "samplerd_active_streams";
    family.help = "Sample streams open now";
    family.type = prometheus::MetricType::Gauge;
    prometheus::ClientMetric metric;
    {
      std::lock_guard<std::mutex> lock(mu_);
      metric.gauge.value = source_ ? source_() : 0;
    }
    family.metric.push_back(std::move(metric));
    return {std::move(family)};
  }

  void Set(std::function<int()> source) {
    std::lock_guard<std::mutex> lock(mu_);
    source_ = std::move(source);
  }

 private:
  mutable std::mutex mu_;
  std::function<int()> source_;  // guarded by mu_
};

namespace {

// Bucket upper bounds in seconds. A step takes from ~10 us (small vocabulary) to a few ms (a 256k vocabulary
// with adaptive sampling); the tail buckets catch an overloaded machine.
const prometheus::Histogram::BucketBoundaries& CoreSecondsBuckets() {
  static const auto* const buckets = new prometheus::Histogram::BucketBoundaries{
      1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0};
  return *buckets;
}

// "REGIME_ARGMAX" -> "argmax"; an unnamed value -> its number.
std::string RegimeLabel(v1::Regime regime) {
  const std::string& name = v1::Regime_Name(regime);
  if (name.empty()) return absl::StrCat(static_cast<int>(regime));
  return absl::AsciiStrToLower(absl::StripPrefix(name, "REGIME_"));
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
  metrics->active_streams_ = std::make_shared<ActiveStreamsCollectable>();

  try {
    // One thread: scrapes are rare, and a second concurrent scraper just waits.
    metrics->exposer_ = std::make_unique<prometheus::Exposer>(options.listen, /*num_threads=*/1);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", options.listen, " (--metrics_listen): ", e.what()));
  }
  metrics->exposer_->RegisterCollectable(metrics->registry_);
  metrics->exposer_->RegisterCollectable(metrics->active_streams_);
  const std::vector<int> ports = metrics->exposer_->GetListeningPorts();
  const std::string host = options.listen.substr(0, options.listen.rfind(':'));
  metrics->address_ = ports.empty() ? options.listen : absl::StrCat(host, ":", ports.front());
  return metrics;
}

ServerMetrics::~ServerMetrics() {
  // Stop serving before the collectables go away.
  exposer_.reset();
}

void ServerMetrics::SetActiveStreams(std::function<int()> source) { active_streams_->Set(std::move(source)); }

void ServerMetrics::OnConfigReload(bool success) {
  (success ? reloads_succeeded_ : reloads_failed_)->Increment();
}

void ServerMetrics::OnRequest(size_t bytes) { request_bytes_->Increment(static_cast<double>(bytes)); }

prometheus::Counter& ServerMetrics::StepCounter(v1::Regime regime, const std::string& profile) {
  const int slot = static_cast<int>(regime);
  std::lock_guard<std::mutex> lock(mu_);
  if (slot < 0 || slot >= kRegimeSlots) {
    return steps_->Add({{"regime", RegimeLabel(regime)}, {"profile", profile}});
  }
  auto [it, inserted] = step_counters_.try_emplace(profile);
  if (inserted) it->second.fill(nullptr);
  prometheus::Counter*& counter = it->second[slot];
  if (counter == nullptr) counter = &steps_->Add({{"regime", RegimeLabel(regime)}, {"profile", profile}});
  return *counter;
}

void ServerMetrics::OnStep(const v1::StepResult& result, std::chrono::nanoseconds core_time) {
  step_core_seconds_->Observe(std::chrono::duration<double>(core_time).count());
  if (!result.has_error()) {
    StepCounter(result.regime(), result.profile()).Increment();
    return;
  }
  const int code = result.error().code();
  prometheus::Counter* counter = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const bool cached = code >= 0 && code < static_cast<int>(error_counters_.size());
    if (cached) counter = error_counters_[code];
    if (counter == nullptr) {
      counter = &step_errors_->Add(
          {{"code", absl::StatusCodeToString(static_cast<absl::StatusCode>(code))}});
      if (cached) error_counters_[code] = counter;
    }
  }
  counter->Increment();
}

}  // namespace samplerd
