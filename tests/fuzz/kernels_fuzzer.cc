// libFuzzer target: the metric kernels on float arrays of 0..1e6 elements described by a KernelRecipe
// (tests/fuzz/fuzz_targets.h, CheckKernelBytes): finite metrics that match a float64 reference, or a clear
// INVALID_ARGUMENT exactly where the contract asks for one.
//
//   build-fuzz/tests/fuzz/kernels_fuzzer -max_total_time=60 CORPUS_DIR SEED_DIR
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tests/fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string failure = samplerd::fuzz::CheckKernelBytes(data, size);
  if (!failure.empty()) {
    std::fprintf(stderr, "kernels_fuzzer: invariant broken: %s\n", failure.c_str());
    std::abort();
  }
  return 0;
}
