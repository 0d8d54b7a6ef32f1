#include "clients/cpp/record_replay.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "clients/cpp/synthetic_model.h"
#include "google/protobuf/io/zero_copy_stream_impl.h"
#include "google/protobuf/util/delimited_message_util.h"
#include "google/protobuf/util/message_differencer.h"

namespace samplerd::client {
namespace {

constexpr char kHeader[] = "samplerd-rec-v1\n";
constexpr size_t kHeaderSize = sizeof(kHeader) - 1;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr size_t kMaxRecentTokens = 1024;  // as the clients' sessions

using SampleStream = grpc::ClientReaderWriter<v1::SampleRequest, v1::SampleResponse>;

// A Sample stream on the client's current endpoint.
struct Stream {
  explicit Stream(Client& client) : stub(v1::Sampler::NewStub(client.channel())) {
    client.Authorize(&context);
    rw = stub->Sample(&context);
  }
  absl::Status RoundTrip(const v1::SampleRequest& request, v1::SampleResponse* response) {
    if (rw->Write(request) && rw->Read(response)) return absl::OkStatus();
    rw->WritesDone();
    const grpc::Status status = rw->Finish();
    return status.ok() ? absl::UnavailableError("the stream ended without an answer") : FromGrpcStatus(status);
  }
  absl::Status Close() {
    rw->WritesDone();
    return FromGrpcStatus(rw->Finish());
  }
  std::unique_ptr<v1::Sampler::Stub> stub;
  grpc::ClientContext context;
  std::unique_ptr<SampleStream> rw;
};

}  // namespace

absl::Status WriteRecording(const std::string& path, const std::vector<Exchange>& exchanges) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot be written"));
  bool ok = true;
  {
    google::protobuf::io::FileOutputStream out(fd);
    {
      google::protobuf::io::CodedOutputStream coded(&out);
      coded.WriteRaw(kHeader, kHeaderSize);
    }
    for (const auto& [request, response] : exchanges) {
      ok = ok && google::protobuf::util::SerializeDelimitedToZeroCopyStream(request, &out) &&
           google::protobuf::util::SerializeDelimitedToZeroCopyStream(response, &out);
    }
    ok = out.Flush() && ok;
  }
  ok = close(fd) == 0 && ok;
  if (!ok) return absl::InvalidArgumentError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Exchange>> ReadRecording(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot be read"));
  google::protobuf::io::FileInputStream in(fd);
  in.SetCloseOnDelete(true);
  std::string header;
  {
    google::protobuf::io::CodedInputStream coded(&in);
    if (!coded.ReadString(&header, static_cast<int>(kHeaderSize)) || header != kHeader) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": not a samplerd recording (no \"samplerd-rec-v1\" header)"));
    }
  }
  std::vector<Exchange> exchanges;
  while (true) {
    Exchange e;
    bool clean_eof = false;
    if (!google::protobuf::util::ParseDelimitedFromZeroCopyStream(&e.first, &in, &clean_eof)) {
      if (clean_eof) break;
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": request ", exchanges.size(), " is truncated or unparseable"));
    }
    if (!google::protobuf::util::ParseDelimitedFromZeroCopyStream(&e.second, &in, &clean_eof)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": response ", exchanges.size(), " is missing, truncated or unparseable"));
    }
    exchanges.push_back(std::move(e));
  }
  return exchanges;
}

int RunRecord(Client& client, const RecordOptions& options) {
  struct Sequence {
    std::string id;
    uint64_t seed;
    int32_t previous = 0;
    std::vector<int32_t> recent;
  };
  std::vector<Sequence> sequences;
  std::vector<SyntheticModel> models;  // one per sequence, each with its own model seed
  for (int k = 0; k < options.sequences; ++k) {
    sequences.push_back({absl::StrCat("record-", k), options.seed == 0 ? 0 : options.seed + k, 0, {}});
    SyntheticModel::Options model_options;
    model_options.vocab = options.vocab;
    model_options.heads = options.heads;
    model_options.seed = 7 + static_cast<uint64_t>(k);
    models.emplace_back(model_options);
  }

  Stream stream(client);
  std::vector<Exchange> exchanges;
  std::vector<float> logits, attention;
  for (int step = 0; step < options.steps; ++step) {
    v1::SampleRequest request;
    for (size_t k = 0; k < sequences.size(); ++k) {
      const Sequence& s = sequences[k];
      const SyntheticModel& model = models[k];
      model.Next(static_cast<uint64_t>(step), s.previous, &logits, &attention);
      v1::Step* st = request.add_steps();
      st->set_sequence_id(s.id);
      st->set_step(static_cast<uint64_t>(step));
      st->set_seed(s.seed);
      st->set_profile(options.profile);
      st->set_top_logprobs(options.top_logprobs);
      const int64_t logits_shape[] = {model.vocab()};
      FillF32Tensor(logits, logits_shape, st->mutable_logits());
      const int64_t attention_shape[] = {model.heads(), model.kv_len(static_cast<uint64_t>(step))};
      FillF32Tensor(attention, attention_shape, st->mutable_attention());
      st->mutable_recent_tokens()->Add(s.recent.begin(), s.recent.end());
    }
    v1::SampleResponse response;
    if (absl::Status s = stream.RoundTrip(request, &response); !s.ok()) {
      absl::FPrintF(stderr, "samplerctl record: step %d: %s\n", step, s.ToString());
      return kExitFailure;
    }
    if (response.results_size() != request.steps_size()) {
      absl::FPrintF(stderr, "samplerctl record: step %d: %d results for %d steps\n", step, response.results_size(),
                    request.steps_size());
      return kExitFailure;
    }
    for (int k = 0; k < response.results_size(); ++k) {
      const v1::StepResult& r = response.results(k);
      if (r.has_error()) {
        absl::FPrintF(stderr, "samplerctl record: step %d of %s rejected: %s\n", step, r.sequence_id(),
                      r.error().message());
        return kExitFailure;
      }
      Sequence& s = sequences[static_cast<size_t>(k)];
      s.seed = r.seed();  // adopts the server's pick when the seed was 0, as a session does
      s.previous = r.token();
      s.recent.push_back(r.token());
      if (s.recent.size() > kMaxRecentTokens) s.recent.erase(s.recent.begin());
    }
    exchanges.emplace_back(std::move(request), std::move(response));
  }
  if (absl::Status s = stream.Close(); !s.ok()) {
    absl::FPrintF(stderr, "samplerctl record: closing the stream: %s\n", s.ToString());
    return kExitFailure;
  }
  if (absl::Status s = WriteRecording(options.out, exchanges); !s.ok()) {
    absl::FPrintF(stderr, "samplerctl record: %s\n", s.message());
    return kExitUsage;
  }
  absl::PrintF("recorded %d requests (%d sequences x %d steps) in %s\n", exchanges.size(), options.sequences,
               options.steps, options.out);
  return 0;
}

int RunReplay(Client& client, const ReplayOptions& options) {
  absl::StatusOr<std::vector<Exchange>> recording = ReadRecording(options.file);
  if (!recording.ok()) {
    absl::FPrintF(stderr, "samplerctl replay: %s\n", recording.status().message());
    return kExitUsage;
  }
  Stream stream(client);
  int differing_steps = 0, total_steps = 0;
  for (size_t i = 0; i < recording->size(); ++i) {
    const auto& [recorded_request, recorded_response] = (*recording)[i];
    v1::SampleRequest request = recorded_request;
    for (int k = 0; k < request.steps_size() && k < recorded_response.results_size(); ++k) {
      // The seed the server picked for a seed-0 step is what reproduces it.
      if (request.steps(k).seed() == 0) request.mutable_steps(k)->set_seed(recorded_response.results(k).seed());
    }
    v1::SampleResponse replayed;
    if (absl::Status s = stream.RoundTrip(request, &replayed); !s.ok()) {
      absl::FPrintF(stderr, "samplerctl replay: request %d: %s\n", i, s.ToString());
      return kExitFailure;
    }
    if (replayed.results_size() != recorded_response.results_size()) {
      absl::PrintF("request %d: %d results, recorded %d\n", i, replayed.results_size(),
                   recorded_response.results_size());
      ++differing_steps;
      continue;
    }
    for (int k = 0; k < replayed.results_size(); ++k) {
      ++total_steps;
      v1::StepResult want = recorded_response.results(k);
      v1::StepResult got = replayed.results(k);
      want.clear_server_micros();
      got.clear_server_micros();
      google::protobuf::util::MessageDifferencer differ;
      std::string diff;
      differ.ReportDifferencesToString(&diff);
      if (differ.Compare(want, got)) continue;
      if (++differing_steps <= options.max_diffs) {
        absl::PrintF("request %d, step result %d (sequence_id \"%s\", step %d) differs (recorded -> replayed):\n%s", i,
                     k, want.sequence_id(), want.step(), diff);
      }
    }
  }
  if (absl::Status s = stream.Close(); !s.ok()) {
    absl::FPrintF(stderr, "samplerctl replay: closing the stream: %s\n", s.ToString());
    return kExitFailure;
  }
  if (differing_steps > 0) {
    absl::PrintF("replay: %d of %d step results differ from %s\n", differing_steps, total_steps, options.file);
    return kExitFailure;
  }
  absl::PrintF("replay: %d requests, %d step results identical to %s\n", recording->size(), total_steps, options.file);
  return 0;
}

}  // namespace samplerd::client
