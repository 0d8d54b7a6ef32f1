// Process-wide malloc settings for a server whose messages are megabytes.
//
// glibc's malloc gives memory back to the kernel as soon as a little of it (a dynamic threshold of a few MiB)
// lies free at the top of the heap, and serves blocks above a dynamic threshold with fresh mmaps. A server that
// receives one large message after another then page-faults on every request anew: gRPC's read buffers and the
// parsed tensors are allocated, touched and returned each time. Keeping up to kTrimThresholdBytes of freed
// memory and serving blocks up to glibc's maximum mmap threshold from the heap removes those faults, provided
// every thread allocates from the main heap: a per-thread arena is unmapped whole as soon as it is empty,
// whatever the trim threshold, and gRPC's threads would fault on their next message again. One arena costs
// little here: core allocates nothing per step, so only gRPC and protobuf take the lock, a few times per
// message (measured with workload B in docs/benchmarks.md).
//
//   if (absl::Status s = TuneAllocatorForLargeMessages(); !s.ok()) spdlog::warn("{}", s.ToString());
#ifndef SAMPLERD_SERVICE_ALLOCATOR_TUNING_H_
#define SAMPLERD_SERVICE_ALLOCATOR_TUNING_H_

#include <cstddef>

#include "absl/status/status.h"

namespace samplerd {

// Freed memory the process keeps rather than returning it to the kernel: the cost is that RSS stays at the
// peak (bounded by what the largest burst of concurrent requests needed) minus at most this much.
inline constexpr size_t kTrimThresholdBytes = size_t{256} << 20;
// Blocks up to this size come from the heap, not from their own mmap: glibc's upper bound on 64-bit.
inline constexpr size_t kMmapThresholdBytes = size_t{32} << 20;

// TuneAllocatorForLargeMessages()
//
// Sets both thresholds and a single arena with mallopt (which also turns off glibc's dynamic thresholds).
// INTERNAL naming the setting when glibc refuses one. Call once, early, before threads start.
absl::Status TuneAllocatorForLargeMessages();

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_ALLOCATOR_TUNING_H_
