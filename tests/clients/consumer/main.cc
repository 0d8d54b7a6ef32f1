// A samplerd user's program: health, one float32 step, one bfloat16 step and a batch of two sessions.
//
//   consumer unix:/run/samplerd.sock
//
// Prints one line per answer; exits 1 when any call fails or a step is rejected.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "samplerd/samplerd_client.h"

namespace {

// The bfloat16 bit pattern of `x` (round to nearest even).
uint16_t ToBf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return static_cast<uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: consumer TARGET\n");
    return 2;
  }
  samplerd::client::Client client(argv[1]);
  absl::StatusOr<samplerd::client::ServingStatus> health = client.Health();
  if (!health.ok() || *health != samplerd::client::ServingStatus::kServing) {
    std::fprintf(stderr, "health: %s\n", health.ok() ? "not serving" : health.status().ToString().c_str());
    return 1;
  }

  // Token 42 stands far above the rest: a greedy-looking distribution every profile answers with 42.
  std::vector<float> logits(1000, 0.0f);
  logits[42] = 30.0f;
  std::vector<uint16_t> bf16(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) bf16[i] = ToBf16(logits[i]);

  samplerd::client::SessionOptions options;
  options.seed = 7;
  std::unique_ptr<samplerd::client::Session> session = client.OpenSession(options);
  absl::StatusOr<samplerd::client::StepResult> f32 = session->Step(logits);
  absl::StatusOr<samplerd::client::StepResult> half = session->Step(samplerd::client::TensorRef::BF16(bf16));
  for (const auto* r : {&f32, &half}) {
    if (!r->ok()) {
      std::fprintf(stderr, "step: %s\n", r->status().ToString().c_str());
      return 1;
    }
    std::printf("step %llu token %d\n", static_cast<unsigned long long>((*r)->step), (*r)->token);
  }
  if (absl::Status closed = session->Close(); !closed.ok()) {
    std::fprintf(stderr, "close: %s\n", closed.ToString().c_str());
    return 1;
  }

  std::unique_ptr<samplerd::client::Session> a = client.OpenSession(options);
  std::unique_ptr<samplerd::client::Session> b = client.OpenSession(options);
  const samplerd::client::BatchItem items[] = {{a.get(), logits}, {b.get(), samplerd::client::TensorRef::BF16(bf16)}};
  absl::StatusOr<std::vector<absl::StatusOr<samplerd::client::StepResult>>> batch = client.SampleBatch(items);
  if (!batch.ok()) {
    std::fprintf(stderr, "batch: %s\n", batch.status().ToString().c_str());
    return 1;
  }
  for (const auto& r : *batch) {
    if (!r.ok()) {
      std::fprintf(stderr, "batch step: %s\n", r.status().ToString().c_str());
      return 1;
    }
    std::printf("batch token %d\n", r->token);
  }
  return 0;
}
