#include "service/allocator_tuning.h"

#include <malloc.h>

#include "absl/strings/str_cat.h"

namespace samplerd {

absl::Status TuneAllocatorForLargeMessages() {
  // mallopt returns 1 on success, 0 on a refused value.
  if (mallopt(M_MMAP_THRESHOLD, static_cast<int>(kMmapThresholdBytes)) != 1) {
    return absl::InternalError(absl::StrCat("mallopt(M_MMAP_THRESHOLD, ", kMmapThresholdBytes, ") was refused"));
  }
  if (mallopt(M_TRIM_THRESHOLD, static_cast<int>(kTrimThresholdBytes)) != 1) {
    return absl::InternalError(absl::StrCat("mallopt(M_TRIM_THRESHOLD, ", kTrimThresholdBytes, ") was refused"));
  }
  if (mallopt(M_ARENA_MAX, 1) != 1) return absl::InternalError("mallopt(M_ARENA_MAX, 1) was refused");
  return absl::OkStatus();
}

}  // namespace samplerd
