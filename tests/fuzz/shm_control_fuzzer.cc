// libFuzzer target: a mode byte and arbitrary bytes as one shared-memory control packet through
// ShmControlServer::HandlePacket (tests/fuzz/fuzz_targets.h, CheckShmControlBytes). Half of the mutations are
// structure-aware (MutateShmControl on the parsed request: sample steps referencing the connection's region,
// another client's or an unknown one), half are libFuzzer's own byte mutations.
//
//   build-fuzz/tests/fuzz/shm_control_fuzzer -max_total_time=60 CORPUS_DIR SEED_DIR
#include <cstddef>
#include <cstdint>
#include <random>

#include "samplerd/v1/sampler.pb.h"
#include "tests/fuzz/fuzz_targets.h"
#include "tests/fuzz/libfuzzer_entry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return samplerd::fuzz::AbortOnBrokenInvariant("shm_control_fuzzer", samplerd::fuzz::CheckShmControlBytes(data, size));
}

// The input's first byte is the mode (the descriptors that come along), the rest the control request.
extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  return samplerd::fuzz::MutateMessage<samplerd::v1::ShmControlRequest, 1>(
      data, size, max_size, seed, [](std::minstd_rand& rng, uint8_t* mode, samplerd::v1::ShmControlRequest* request) {
        samplerd::fuzz::MutateShmControl(rng, mode, request);
      });
}
