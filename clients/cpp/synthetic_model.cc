#include "clients/cpp/synthetic_model.h"

#include <cmath>

namespace samplerd::client {
namespace {

uint64_t Mix(uint64_t x) {  // SplitMix64's finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A counter-based standard normal (Box-Muller over two 32-bit uniforms): element `i` of stream `key`.
float Normal(uint64_t key, uint64_t i) {
  const uint64_t bits = Mix(key ^ Mix(i));
  const double u1 = (static_cast<double>(bits >> 32) + 0.5) / 4294967296.0;  // (0, 1)
  const double u2 = static_cast<double>(bits & 0xffffffffu) / 4294967296.0;
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

// σ of the kGaussian state in successive cycles: low σ reads as ADAPTIVE, high σ (varentropy ≈ σ²/ln²2 > 5)
// as RESAMPLE.
constexpr float kGaussianSigmas[] = {0.5f, 1.5f, 2.5f, 4.0f};

}  // namespace

SyntheticModel::SyntheticModel(Options options) : options_(options) {}

absl::string_view SyntheticModel::StateName(State state) {
  switch (state) {
    case State::kConfident:
      return "confident";
    case State::kFlat:
      return "flat";
    case State::kDominant:
      return "dominant";
    case State::kSplit:
      return "split";
    case State::kPeaks:
      return "peaks";
    case State::kGaussian:
      return "gaussian";
  }
  return "?";
}

SyntheticModel::State SyntheticModel::Next(uint64_t step, int32_t previous_token, std::vector<float>* logits,
                                           std::vector<float>* attention) const {
  const uint64_t cycle = step / (kRunLength * kNumStates);
  const State state = static_cast<State>((step / kRunLength) % kNumStates);
  const uint64_t key = Mix(options_.seed ^ Mix(step * 0x100000001b3ull + static_cast<uint32_t>(previous_token)));
  const int64_t vocab = options_.vocab;
  const int32_t favourite = static_cast<int32_t>(Mix(key) % static_cast<uint64_t>(vocab));

  // Background spread and the favourite's lift above it. Lifts of ln(r * (V - 1)) give the favourite
  // probability r / (1 + r) against a flat tail.
  float spread = 1.0f;
  float lift = 0.0f;
  switch (state) {
    case State::kConfident:
      lift = 40.0f;
      break;
    case State::kFlat:
      spread = 0.05f;
      break;
    case State::kDominant:
      spread = 0.01f;
      lift = static_cast<float>(std::log(9.0 * static_cast<double>(vocab - 1)));
      break;
    case State::kSplit:
      spread = 0.01f;
      lift = static_cast<float>(std::log(static_cast<double>(vocab - 1)));
      break;
    case State::kPeaks:
      break;
    case State::kGaussian:
      spread = kGaussianSigmas[cycle % (sizeof(kGaussianSigmas) / sizeof(kGaussianSigmas[0]))];
      break;
  }
  logits->resize(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) (*logits)[i] = spread * Normal(key, static_cast<uint64_t>(i));
  (*logits)[favourite] += lift;
  if (state == State::kPeaks) {
    // Four close candidates far above an N(0, 1) background.
    for (int j = 0; j < 4; ++j) (*logits)[(favourite + j * (vocab / 7)) % vocab] = 25.0f - 0.4f * j;
  }

  // Attention: confident heads agree on one recent position; flat ones spread evenly; the others mix focused
  // and diffuse heads, so agreement and interaction strength move with the state too.
  const int64_t kv = kv_len(step);
  const uint64_t attention_key = Mix(key ^ 0xa77e4710ull);
  attention->resize(static_cast<size_t>(options_.heads * kv));
  for (int32_t h = 0; h < options_.heads; ++h) {
    float scale = 1.0f;
    float focus = 0.0f;
    int64_t focus_pos = kv - 1;
    switch (state) {
      case State::kConfident:
        focus = 8.0f;
        break;
      case State::kFlat:
        scale = 0.1f;
        break;
      case State::kDominant:
      case State::kPeaks:
        focus = 5.0f;
        focus_pos = static_cast<int64_t>(Mix(attention_key + h) % static_cast<uint64_t>(kv));
        break;
      case State::kSplit:
        scale = 2.0f;
        break;
      case State::kGaussian:
        scale = 0.5f * spread;
        break;
    }
    float* row = attention->data() + h * kv;
    for (int64_t k = 0; k < kv; ++k) row[k] = scale * Normal(attention_key, static_cast<uint64_t>(h * kv + k));
    row[focus_pos] += focus;
  }
  return state;
}

}  // namespace samplerd::client
