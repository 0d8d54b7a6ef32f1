// libFuzzer target: arbitrary bytes as a SampleRequest through the service's per-request path
// (tests/fuzz/fuzz_targets.h, CheckRequestBytes). Half of the mutations are structure-aware (MutateRequest on
// the parsed request), half are libFuzzer's own byte mutations.
//
//   build-fuzz/tests/fuzz/request_fuzzer -max_total_time=60 CORPUS_DIR SEED_DIR
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
  const std::string failure = samplerd::fuzz::CheckRequestBytes(data, size);
  if (!failure.empty()) {
    std::fprintf(stderr, "request_fuzzer: invariant broken: %s\n", failure.c_str());
    std::abort();
  }
  return 0;
}

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  std::minstd_rand rng(seed);
  samplerd::v1::SampleRequest request;
  if (rng() % 2 == 0 || !request.ParseFromArray(data, static_cast<int>(size))) {
    return LLVMFuzzerMutate(data, size, max_size);
  }
  const int mutations = 1 + static_cast<int>(rng() % 3);
  for (int i = 0; i < mutations; ++i) samplerd::fuzz::MutateRequest(rng, &request);
  const std::string bytes = request.SerializeAsString();
  if (bytes.size() > max_size) return LLVMFuzzerMutate(data, size, max_size);
  std::memcpy(data, bytes.data(), bytes.size());
  return bytes.size();
}
