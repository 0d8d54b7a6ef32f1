// Seed inputs for the fuzz targets, cut from the golden cases of tests/golden (docs/contract.md section 3).
//
// A golden case has up to 128,256 logits and 32 x 1000 attention scores; a seed keeps a window of 2,048
// logits around the case's argmax and at most 8 attention rows of the first and last 128 positions, so the
// structure that made the case interesting (a peak, ties, -inf tails, masked rows, huge spread or offset)
// survives in a few KiB that libFuzzer can mutate quickly. Each case yields requests in f32, bf16 and f16,
// under each built-in profile, with parameters and top_logprobs, and one batch of the first cases; and kernel
// recipes (tests/fuzz/fuzz_targets.h) for its logits and attention.
//
//   absl::StatusOr<std::vector<Seed>> seeds = GoldenSeeds("tests/golden", SeedKind::kRequest);
//   for (const Seed& s : *seeds) WriteFile(dir + "/" + s.name, s.bytes);
#ifndef SAMPLERD_TESTS_FUZZ_GOLDEN_SEEDS_H_
#define SAMPLERD_TESTS_FUZZ_GOLDEN_SEEDS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace samplerd::fuzz {

enum class SeedKind { kRequest, kKernels };

struct Seed {
  std::string name;   // file name, unique within a kind
  std::string bytes;  // a serialized SampleRequest, or a KernelRecipe
};

absl::StatusOr<std::vector<Seed>> GoldenSeeds(const std::string& golden_dir, SeedKind kind);

}  // namespace samplerd::fuzz

#endif  // SAMPLERD_TESTS_FUZZ_GOLDEN_SEEDS_H_
