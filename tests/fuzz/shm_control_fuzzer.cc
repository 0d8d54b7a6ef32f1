// libFuzzer target: a mode byte and arbitrary bytes as one shared-memory control packet through
// ShmControlServer::HandlePacket (tests/fuzz/fuzz_targets.h, CheckShmControlBytes). Half of the mutations are
// structure-aware (MutateShmControl on the parsed request: sample steps referencing the connection's region,
// another client's or an unknown one), half are libFuzzer's own byte mutations.
//
//   build-fuzz/tests/fuzz/shm_control_fuzzer -max_total_time=60 CORPUS_DIR SEED_DIR
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

#include "samplerd/v1/sampler.pb.h"
#include "tests/fuzz/fuzz_targets.h"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string failure = samplerd::fuzz::CheckShmControlBytes(data, size);
  if (!failure.empty()) {
    std::fprintf(stderr, "shm_control_fuzzer: invariant broken: %s\n", failure.c_str());
    std::abort();
  }
  return 0;
}

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  std::minstd_rand rng(seed);
  samplerd::v1::ShmControlRequest request;
  if (size == 0 || rng() % 2 == 0 || !request.ParseFromArray(data + 1, static_cast<int>(size - 1))) {
    return LLVMFuzzerMutate(data, size, max_size);
  }
  uint8_t mode = data[0];
  const int mutations = 1 + static_cast<int>(rng() % 3);
  for (int i = 0; i < mutations; ++i) samplerd::fuzz::MutateShmControl(rng, &mode, &request);
  const std::string bytes = request.SerializeAsString();
  if (bytes.size() + 1 > max_size) return LLVMFuzzerMutate(data, size, max_size);
  data[0] = mode;
  std::memcpy(data + 1, bytes.data(), bytes.size());
  return bytes.size() + 1;
}
