// libFuzzer target: the metric kernels on float arrays of 0..1e6 elements described by a KernelRecipe
// (tests/fuzz/fuzz_targets.h, CheckKernelBytes): finite metrics that match a float64 reference, or a clear
// INVALID_ARGUMENT exactly where the contract asks for one.
//
//   build-fuzz/tests/fuzz/kernels_fuzzer -max_total_time=60 CORPUS_DIR SEED_DIR
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/fuzz_targets.h"
#include "tests/fuzz/libfuzzer_entry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return samplerd::fuzz::AbortOnBrokenInvariant("kernels_fuzzer", samplerd::fuzz::CheckKernelBytes(data, size));
}
