// Recording and replaying a generation: `samplerctl record` and `samplerctl replay`.
//
// `record` runs a generation against a server (the synthetic model of synthetic_model.h, several sequences
// batched in one request per step, on one Sample stream) and writes every request and its response to a file.
// `replay` sends the recorded requests, in order, on one Sample stream to a server (a fresh one, another
// build, another replica) and checks that every response equals the recorded one except for `server_micros`.
// Since every draw is a pure function of (seed, sequence_id, step) (docs/contract.md section 5), any server with the
// same profiles and the same kernels' instruction set (SAMPLERD_SIMD) must answer identically.
//
// A recorded step whose seed was 0 (the server picked one) is replayed with the seed the recorded response
// reports, so such a recording replays too.
//
// File format: the 16 bytes "samplerd-rec-v1\n", then per request a varint-length-delimited SampleRequest
// followed by a varint-length-delimited SampleResponse (google/protobuf/util/delimited_message_util.h), until
// the end of the file.
//
//   samplerctl record --out gen.rec --steps 200 --sequences 4 --seed 7      # exit 0: written
//   samplerctl --target other:50051 replay gen.rec                         # exit 0: identical; 1: a diff
#ifndef SAMPLERD_CLIENTS_CPP_RECORD_REPLAY_H_
#define SAMPLERD_CLIENTS_CPP_RECORD_REPLAY_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "clients/cpp/samplerd_client.h"
#include "samplerd/v1/sampler.pb.h"

namespace samplerd::client {

// One request and the response it got.
using Exchange = std::pair<v1::SampleRequest, v1::SampleResponse>;

// Writes / reads a recording file (format above). Reading fails with INVALID_ARGUMENT on a wrong header or a
// truncated or unparseable record, naming the file and the record index.
absl::Status WriteRecording(const std::string& path, const std::vector<Exchange>& exchanges);
absl::StatusOr<std::vector<Exchange>> ReadRecording(const std::string& path);

struct RecordOptions {
  std::string out;
  int steps = 100;      // decode steps per sequence
  int sequences = 2;    // sequences batched in each request
  std::string profile;  // empty = the server's default
  uint64_t seed = 7;    // sequence k uses seed + k; 0 = the server picks (and the recording keeps its pick)
  int32_t top_logprobs = 5;
  int32_t vocab = 32000;
  int32_t heads = 8;
};

// `samplerctl record`: returns the process exit code (0 written; 1 an RPC failed or a step was rejected;
// 2 the file cannot be written) and reports on stdout / stderr.
int RunRecord(Client& client, const RecordOptions& options);

struct ReplayOptions {
  std::string file;
  int max_diffs = 10;  // differing responses printed before giving up on details
};

// `samplerctl replay`: returns 0 when every response is identical, 1 on a difference (each printed as a diff
// of the recorded and the replayed StepResult) or an RPC failure, 2 when the file cannot be read.
int RunReplay(Client& client, const ReplayOptions& options);

}  // namespace samplerd::client

#endif  // SAMPLERD_CLIENTS_CPP_RECORD_REPLAY_H_
