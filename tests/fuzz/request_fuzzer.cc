// libFuzzer target: arbitrary bytes as a SampleRequest through the service's per-request path
// (tests/fuzz/fuzz_targets.h, CheckRequestBytes). Half of the mutations are structure-aware (MutateRequest on
// the parsed request), half are libFuzzer's own byte mutations.
//
//   build-fuzz/tests/fuzz/request_fuzzer -max_total_time=60 CORPUS_DIR SEED_DIR
#include <cstddef>
#include <cstdint>
#include <random>

#include "samplerd/v1/sampler.pb.h"
#include "tests/fuzz/fuzz_targets.h"
#include "tests/fuzz/libfuzzer_entry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return samplerd::fuzz::AbortOnBrokenInvariant("request_fuzzer", samplerd::fuzz::CheckRequestBytes(data, size));
}

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  return samplerd::fuzz::MutateMessage<samplerd::v1::SampleRequest, 0>(
      data, size, max_size, seed, [](std::minstd_rand& rng, uint8_t*, samplerd::v1::SampleRequest* request) {
        samplerd::fuzz::MutateRequest(rng, request);
      });
}
