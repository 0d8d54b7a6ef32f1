#include "service/shm_metrics.h"

#include "prometheus/counter.h"
#include "prometheus/gauge.h"

namespace samplerd {
namespace {

class ShmMetrics final : public ShmObserver {
 public:
  explicit ShmMetrics(prometheus::Registry& registry)
      : clients_(prometheus::BuildGauge()
                     .Name("samplerd_shm_clients")
                     .Help("Shared-memory control connections open")
                     .Register(registry)
                     .Add({})),
        regions_(prometheus::BuildGauge()
                     .Name("samplerd_shm_regions")
                     .Help("Shared-memory regions registered")
                     .Register(registry)
                     .Add({})),
        mapped_(prometheus::BuildGauge()
                    .Name("samplerd_shm_regions_mapped")
                    .Help("Shared-memory mappings alive (registered, or unregistered and still read by a step)")
                    .Register(registry)
                    .Add({})),
        mapped_bytes_(prometheus::BuildGauge()
                          .Name("samplerd_shm_mapped_bytes")
                          .Help("Bytes of the shared-memory mappings alive")
                          .Register(registry)
                          .Add({})) {
    auto& registrations = prometheus::BuildCounter()
                              .Name("samplerd_shm_registrations_total")
                              .Help("Shared-memory region registrations, by result")
                              .Register(registry);
    accepted_ = &registrations.Add({{"result", "accepted"}});
    refused_ = &registrations.Add({{"result", "refused"}});
  }

  void OnClients(int delta) override { clients_.Increment(delta); }
  void OnRegistration(bool accepted) override { (accepted ? accepted_ : refused_)->Increment(); }
  void OnRegistered(int delta) override { regions_.Increment(delta); }
  void OnMapped(int delta, uint64_t bytes) override {
    mapped_.Increment(delta);
    mapped_bytes_.Increment(static_cast<double>(delta) * static_cast<double>(bytes));
  }

 private:
  prometheus::Gauge& clients_;
  prometheus::Gauge& regions_;
  prometheus::Gauge& mapped_;
  prometheus::Gauge& mapped_bytes_;
  prometheus::Counter* accepted_ = nullptr;
  prometheus::Counter* refused_ = nullptr;
};

}  // namespace

std::shared_ptr<ShmObserver> MakeShmMetrics(prometheus::Registry& registry) {
  return std::make_shared<ShmMetrics>(registry);
}

}  // namespace samplerd
