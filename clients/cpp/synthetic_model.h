// A deterministic stand-in for a language model, for `samplerctl demo` and load tests.
//
// Real models are not available offline, but the server's behaviour depends only on the shape of the
// uncertainty in what it is sent. SyntheticModel produces, step after step, logits and attention whose
// uncertainty cycles through the situations that make entropix choose each regime:
//
//   kConfident    one token far above the rest          → entropy ≈ 0               (ARGMAX)
//   kFlat         all logits within a hair of each other → high entropy, varentropy ≈ 0 (CLARIFY)
//   kDominant     one token holds 90% on a flat tail   → low entropy, high varentropy (EXPLORE)
//   kSplit        one token holds 50% on a flat tail   → high entropy and varentropy (RESAMPLE)
//   kPeaks        a few close candidates               → moderate entropy             (ADAPTIVE)
//   kGaussian     N(0, σ) logits, σ varying per cycle  → ADAPTIVE or RESAMPLE
//
// Every number is a pure function of (seed, step, previous token), so a demo run is reproducible, and the
// previous token (the one the server chose) steers where the probability mass sits, as in a real model.
//
//   SyntheticModel model({});
//   SyntheticModel::State s = model.Next(step, previous_token, &logits, &attention);
//   // attention is [model.heads(), model.kv_len(step)]
#ifndef SAMPLERD_CLIENTS_CPP_SYNTHETIC_MODEL_H_
#define SAMPLERD_CLIENTS_CPP_SYNTHETIC_MODEL_H_

#include <cstdint>
#include <vector>

#include "absl/strings/string_view.h"

namespace samplerd::client {

// SyntheticModel
class SyntheticModel {
 public:
  struct Options {
    int32_t vocab = 32000;
    int32_t heads = 8;
    // KV positions before the first generated token; step s attends over prompt_len + s positions.
    int32_t prompt_len = 16;
    uint64_t seed = 7;
  };

  enum class State { kConfident, kFlat, kDominant, kSplit, kPeaks, kGaussian };
  static constexpr int kNumStates = 6;
  // Steps spent in a state before the next one.
  static constexpr int kRunLength = 3;

  explicit SyntheticModel(Options options);

  // Writes the logits ([vocab]) and pre-softmax attention ([heads, kv_len(step)]) of `step`, whose preceding
  // token was `previous_token`, and returns the state they were drawn from.
  State Next(uint64_t step, int32_t previous_token, std::vector<float>* logits, std::vector<float>* attention) const;

  int32_t vocab() const { return options_.vocab; }
  int32_t heads() const { return options_.heads; }
  int64_t kv_len(uint64_t step) const { return options_.prompt_len + static_cast<int64_t>(step); }

  static absl::string_view StateName(State state);

 private:
  Options options_;
};

}  // namespace samplerd::client

#endif  // SAMPLERD_CLIENTS_CPP_SYNTHETIC_MODEL_H_
