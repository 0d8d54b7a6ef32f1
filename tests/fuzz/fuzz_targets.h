// The bodies of samplerd's fuzz targets, as plain functions, so that libFuzzer (tests/fuzz/*_fuzzer.cc, clang
// with -fsanitize=fuzzer) and the regression test (tests/fuzz/fuzz_regression_test.cc, any compiler) run the
// same code on the same bytes.
//
// Each target returns an empty string when every invariant held, else a description of the first one that
// failed; the libFuzzer wrappers abort on a non-empty answer, so a broken invariant is a crash like a
// sanitizer report and lands in the crash file libFuzzer writes (tests/fuzz/libfuzzer_entry.h).
//
//   std::string failure = samplerd::fuzz::CheckRequestBytes(data, size);
//   if (!failure.empty()) { fprintf(stderr, "%s\n", failure.c_str()); abort(); }
//
// Targets:
//   CheckRequestBytes  arbitrary bytes -> SampleRequest parse -> SamplerService::StartRequest (decode,
//                      validate, core RunStep, encode), twice: every step is answered, in order, with either a
//                      documented error code naming a field or a result whose token, logprob, metrics, applied
//                      parameters and top tokens are in range and finite; the replay with the reported seeds
//                      gives the same answer. CheckRequestWire on the same bytes lets through no request the
//                      parse finds over the step limit or over its unknown fields' allowance, and refuses no other for
//                      steps.
//   CheckKernelBytes   a recipe (KernelRecipe) for a float array of 0..1e6 elements with ±FLT_MAX, denormals,
//                      NaN, ±inf -> SummarizeLogits / ComputeAttentionMetrics: a clear INVALID_ARGUMENT exactly
//                      when the contract says so, otherwise finite metrics in their ranges that agree with a
//                      float64 reference; every instruction set's kernels agree on max and first bad index.
//   CheckShmControlBytes  a mode byte (bits 0-2: the descriptors that come along: 0 none, 1 a sealed memfd,
//                      2 an unsealed one, 3 two, 4 one the kernel dropped, 5 a pipe; bit 3: the packet was over
//                      kMaxPacketBytes) and a packet -> ShmControlServer::HandlePacket on a connection of a real
//                      ShmRegistry and SamplerService: every answer carries the session and is an error with a
//                      message or a result; oversized packets are RESOURCE_EXHAUSTED, unparsable ones and
//                      register packets without exactly one descriptor INVALID_ARGUMENT; a sample is answered with
//                      one result per step, and a step referencing an unknown or another client's region (aliases
//                      "r" = the connection's region, "f" = another client's) is a per-step error.
#ifndef SAMPLERD_TESTS_FUZZ_FUZZ_TARGETS_H_
#define SAMPLERD_TESTS_FUZZ_FUZZ_TARGETS_H_

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "samplerd/v1/sampler.pb.h"

namespace samplerd::fuzz {

std::string CheckRequestBytes(const uint8_t* data, size_t size);
std::string CheckKernelBytes(const uint8_t* data, size_t size);
std::string CheckShmControlBytes(const uint8_t* data, size_t size);

// One structure-aware mutation of `request` (a step's tensors, shapes, dtypes, parameters, tokens, profile,
// seed set to edge values; steps duplicated or dropped), for the request fuzzer's custom mutator: byte-level
// mutations alone rarely keep a 128 KiB logits payload parseable.
void MutateRequest(std::minstd_rand& rng, v1::SampleRequest* request);

// One structure-aware mutation of a control fuzz input: its mode byte, or its request's operation, token or
// sample (MutateRequest, then references pointed at the connection's region, another client's or an unknown one).
void MutateShmControl(std::minstd_rand& rng, uint8_t* mode, v1::ShmControlRequest* request);

// Hand-made inputs for CheckShmControlBytes: register with each descriptor kind, unregister, samples referencing
// each region alias, an oversized packet, an empty request and garbage.
std::vector<std::string> ShmControlSeeds();

// KernelRecipe
//
// How CheckKernelBytes reads its input, so that a few bytes can describe a million-element array:
//   byte 0        flags: bit 0 = attention (else logits); bits 1 and 2 both set = a large array allowed
//   bytes 1..4    element count, little-endian, taken modulo 1,000,001 (then modulo 4,097 unless large)
//   byte 5        attention rows (1 + value % 64; the element count is rounded down to a multiple)
//   byte 6        fill: 0 = tile the payload floats, 1 = one special value, 2..255 = pseudo-random values
//                 whose magnitude is 2^(fill - 130) (so denormal through near-FLT_MAX)
//   byte 7        special value index (for fill 1) / random seed (for fill >= 2)
//   byte 8        number of pokes P, then P x (u32 index modulo count, u8 special value index)
//   the rest      payload floats (little-endian), tiled for fill 0
struct KernelRecipe {
  bool attention = false;
  int64_t count = 0;
  int64_t rows = 1;
  std::vector<float> values;
};
KernelRecipe ReadKernelRecipe(const uint8_t* data, size_t size);

// The special float values a recipe or a mutation can pick (±0, ±1, ±FLT_MAX, FLT_MIN, denormals, NaN, ±inf,
// exp's overflow and underflow thresholds, ...).
const std::vector<float>& SpecialFloats();

// Encodes a recipe for `values` (fill 0), the inverse of ReadKernelRecipe for seeds.
std::string EncodeKernelRecipe(bool attention, int64_t rows, const std::vector<float>& values);

}  // namespace samplerd::fuzz

#endif  // SAMPLERD_TESTS_FUZZ_FUZZ_TARGETS_H_
