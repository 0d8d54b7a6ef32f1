#include "service/allocator_tuning.h"

#include <malloc.h>

#include "absl/strings/str_cat.h"

// AddressSanitizer replaces glibc's malloc, whose mallopt then refuses every value (gcc defines
// __SANITIZE_ADDRESS__, clang answers __has_feature).
#if defined(__SANITIZE_ADDRESS__)
#define SAMPLERD_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SAMPLERD_ASAN 1
#endif
#endif

namespace samplerd {

absl::Status TuneAllocatorForLargeMessages() {
#ifdef SAMPLERD_ASAN
  return absl::OkStatus();  // nothing to tune: the sanitizer's allocator is in charge (scripts/test-sanitize.sh)
#endif
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
