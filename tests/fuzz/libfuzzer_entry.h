// What the libFuzzer wrappers (tests/fuzz/*_fuzzer.cc) share: the crash on a broken invariant, and the
// structure-aware half of a custom mutator. Included only by those wrappers (clang, -fsanitize=fuzzer), which
// provide LLVMFuzzerMutate.
//
//   extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
//     return samplerd::fuzz::AbortOnBrokenInvariant("request_fuzzer", CheckRequestBytes(data, size));
//   }
#ifndef SAMPLERD_TESTS_FUZZ_LIBFUZZER_ENTRY_H_
#define SAMPLERD_TESTS_FUZZ_LIBFUZZER_ENTRY_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace samplerd::fuzz {

// 0 when `failure` is empty; otherwise prints it and aborts, so that libFuzzer keeps the input as a crash.
inline int AbortOnBrokenInvariant(const char* target, const std::string& failure) {
  if (failure.empty()) return 0;
  std::fprintf(stderr, "%s: invariant broken: %s\n", target, failure.c_str());
  std::abort();
}

// A custom mutator over inputs of kPrefix raw bytes followed by a serialized Message: half of the calls (and
// inputs that do not parse) get libFuzzer's byte mutations, the others 1 to 3 calls of
// mutate(rng, prefix_bytes, &message), which may change both.
template <class Message, size_t kPrefix, class Mutate>
size_t MutateMessage(uint8_t* data, size_t size, size_t max_size, unsigned int seed, Mutate mutate) {
  constexpr size_t prefix = kPrefix;
  std::minstd_rand rng(seed);
  Message message;
  if (size < prefix || rng() % 2 == 0 || !message.ParseFromArray(data + prefix, static_cast<int>(size - prefix))) {
    return LLVMFuzzerMutate(data, size, max_size);
  }
  uint8_t head[kPrefix + 1];
  std::memcpy(head, data, prefix);
  const int mutations = 1 + static_cast<int>(rng() % 3);
  for (int i = 0; i < mutations; ++i) mutate(rng, head, &message);
  const std::string bytes = message.SerializeAsString();
  if (bytes.size() + prefix > max_size) return LLVMFuzzerMutate(data, size, max_size);
  std::memcpy(data, head, prefix);
  std::memcpy(data + prefix, bytes.data(), bytes.size());
  return bytes.size() + prefix;
}

}  // namespace samplerd::fuzz

#endif  // SAMPLERD_TESTS_FUZZ_LIBFUZZER_ENTRY_H_
