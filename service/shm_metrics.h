// The shared-memory plane's Prometheus series (STYLE.md: `samplerd_*`, base units), kept in ServerMetrics'
// registry so they are served with the others at /metrics:
//   samplerd_shm_clients                       gauge    control connections open
//   samplerd_shm_regions                       gauge    regions registered (a step reference can find them)
//   samplerd_shm_regions_mapped                gauge    mappings alive: registered ones, and unregistered ones a
//                                                       step still reads; 0 once every client is gone and idle
//   samplerd_shm_mapped_bytes                  gauge    bytes of those mappings
//   samplerd_shm_registrations_total{result}   counter  registrations, result "accepted" or "refused"
//
//   auto observer = MakeShmMetrics(metrics->registry());
//   auto shm = std::make_shared<ShmRegistry>(limits, observer);
#ifndef SAMPLERD_SERVICE_SHM_METRICS_H_
#define SAMPLERD_SERVICE_SHM_METRICS_H_

#include <memory>

#include "prometheus/registry.h"
#include "service/shm_registry.h"

namespace samplerd {

// An observer that keeps the series above in `registry` (which must outlive it).
std::shared_ptr<ShmObserver> MakeShmMetrics(prometheus::Registry& registry);

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_SHM_METRICS_H_
