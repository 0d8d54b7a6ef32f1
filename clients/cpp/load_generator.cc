#include "clients/cpp/load_generator.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "clients/cpp/shm_plane.h"
#include "core/profile.h"
#include "core/step_engine.h"
#include "core/tensor_view.h"
#include "grpcpp/grpcpp.h"
#include "samplerd/v1/sampler.grpc.pb.h"

namespace samplerd::client {
namespace {

using Clock = std::chrono::steady_clock;

// The server's switch for answers without core (service/sampler_service.h).
constexpr char kNoComputeMetadata[] = "samplerd-no-compute";
// Every step carries this many recent tokens (a model host's usual penalty window is 64 or more; the bytes are
// negligible next to the tensors, the penalties' cost is not).
constexpr int kRecentTokens = 64;
// Fixed so runs draw the same tokens and the server keeps no per-sequence seed.
constexpr uint64_t kSeed = 7;

double MicrosSince(Clock::time_point start, Clock::time_point end) {
  return std::chrono::duration<double, std::micro>(end - start).count();
}

std::string EncodeTensorBytes(const std::vector<float>& values, v1::DType dtype) {
  if (dtype == v1::DTYPE_BF16) {
    std::string bytes(values.size() * 2, '\0');
    for (size_t i = 0; i < values.size(); ++i) {
      const uint16_t b = FloatToBFloat16(values[i]);
      std::memcpy(&bytes[2 * i], &b, 2);
    }
    return bytes;
  }
  std::string bytes(values.size() * sizeof(float), '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

v1::SampleRequest BuildShapedRequest(const WorkloadShape& shape, v1::DType dtype) {
  std::mt19937 gen(42);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(static_cast<size_t>(shape.vocab));
  std::vector<float> attention(static_cast<size_t>(shape.heads * shape.kv_len));
  v1::SampleRequest request;
  for (int i = 0; i < shape.steps_per_request; ++i) {
    for (float& x : logits) x = normal(gen);
    for (float& x : attention) x = normal(gen);
    v1::Step* step = request.add_steps();
    step->set_seed(kSeed);
    v1::Tensor* l = step->mutable_logits();
    l->set_dtype(dtype);
    l->add_shape(shape.vocab);
    l->set_data(EncodeTensorBytes(logits, dtype));
    v1::Tensor* a = step->mutable_attention();
    a->set_dtype(dtype);
    a->add_shape(shape.heads);
    a->add_shape(shape.kv_len);
    a->set_data(EncodeTensorBytes(attention, dtype));
    for (int t = 0; t < kRecentTokens; ++t) step->add_recent_tokens(static_cast<int32_t>(gen() % shape.vocab));
  }
  return request;
}

void NameSequences(int stream, v1::SampleRequest* request) {
  for (int i = 0; i < request->steps_size(); ++i) {
    request->mutable_steps(i)->set_sequence_id(absl::StrCat("bench-", stream, "-", i));
  }
}

// Nearest-rank percentile; sorts `values`.
double Percentile(std::vector<double>* values, double q) {
  if (values->empty()) return 0;
  std::sort(values->begin(), values->end());
  const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(values->size())));
  return (*values)[std::min(values->size() - 1, rank == 0 ? 0 : rank - 1)];
}

// Every stream starts measuring at the same moment, after its warm-up.
class StartLine {
 public:
  explicit StartLine(int streams) : waiting_for_(streams) {}

  // Blocks until every stream has arrived; returns the common start time.
  Clock::time_point ArriveAndWait() {
    std::unique_lock<std::mutex> lock(mu_);
    if (--waiting_for_ == 0) {
      start_ = Clock::now();
      cv_.notify_all();
    } else {
      cv_.wait(lock, [this] { return waiting_for_ == 0; });
    }
    return start_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int waiting_for_;
  Clock::time_point start_;
};

// What one stream measured.
struct StreamStats {
  std::vector<double> latency_us;  // per request
  std::vector<double> core_us;     // per step
  int64_t steps = 0;
  Clock::time_point start;
  Clock::time_point end;
  absl::Status status;
};

// Checks that `response` answers `request` step for step, without errors.
absl::Status CheckResponse(const v1::SampleRequest& request, const v1::SampleResponse& response) {
  if (response.results_size() != request.steps_size()) {
    return absl::InternalError(
        absl::StrCat(response.results_size(), " results for a request of ", request.steps_size(), " steps"));
  }
  for (int i = 0; i < request.steps_size(); ++i) {
    const v1::StepResult& r = response.results(i);
    if (r.has_error()) {
      return absl::InternalError(absl::StrCat("step ", i, " (", r.sequence_id(), ") rejected: ", r.error().message()));
    }
    if (r.sequence_id() != request.steps(i).sequence_id() || r.step() != request.steps(i).step()) {
      return absl::InternalError(
          absl::StrCat("result ", i, " answers ", r.sequence_id(), "/", r.step(), ", not the request's step ", i));
    }
  }
  return absl::OkStatus();
}

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::UnavailableError("the stream ended early without an error");
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

// One model host on its own connection, ping-pong over one Sample stream.
void RunGrpcStream(const LoadOptions& options, int index, const v1::SampleRequest& prototype, int64_t requests,
                   StartLine* start_line, std::atomic<int64_t>* progress, StreamStats* stats) {
  grpc::ChannelArguments args;
  // A B request is ~33 MB in f32: no client-side limit (the server's --max_message_bytes applies).
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  // Each stream its own TCP connection, as separate model hosts would have; without it gRPC shares one
  // subchannel between channels with the same target and arguments.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(options.target, MakeCredentials(options.security), args);
  std::unique_ptr<v1::Sampler::Stub> stub = v1::Sampler::NewStub(channel);
  v1::SampleRequest request = prototype;
  NameSequences(index, &request);
  absl::Status status;
  // With --shm the tensors are written into the region once, like a host whose logits are already there.
  std::unique_ptr<ShmPlane> plane;
  if (!options.shm_socket.empty()) {
    absl::StatusOr<std::unique_ptr<ShmPlane>> connected =
        ShmPlane::Connect(options.shm_socket, ShmBytesFor(request), "samplerctl-bench", options.security.token);
    if (connected.ok()) {
      plane = *std::move(connected);
      status = ReferenceTensors(*plane, &request);
    } else {
      status = connected.status();
    }
  }
  grpc::ClientContext context;
  if (options.no_compute) context.AddMetadata(kNoComputeMetadata, "1");
  AddBearerToken(options.security.token, &context);
  if (plane != nullptr) plane->Attach(&context);
  // On the control connection no gRPC call is made at all.
  const bool control = plane != nullptr && options.shm_control;
  std::unique_ptr<grpc::ClientReaderWriter<v1::SampleRequest, v1::SampleResponse>> stream;
  if (!control) stream = stub->Sample(&context);

  v1::SampleResponse response;
  uint64_t step_index = 0;
  bool broken = false;
  auto round_trip = [&]() -> absl::Status {
    for (v1::Step& step : *request.mutable_steps()) step.set_step(step_index);
    ++step_index;
    if (control) {
      if (absl::Status s = plane->Sample(request, &response); !s.ok()) return s;
      return CheckResponse(request, response);
    }
    if (!stream->Write(request) || !stream->Read(&response)) {
      broken = true;
      return FromGrpc(stream->Finish());
    }
    return CheckResponse(request, response);
  };

  for (int w = 0; w < options.warmup_requests && status.ok(); ++w) status = round_trip();
  // Arrive even after a failure, so the other streams are not left waiting.
  stats->start = start_line->ArriveAndWait();
  for (int64_t r = 0; r < requests && status.ok(); ++r) {
    const Clock::time_point t0 = Clock::now();
    status = round_trip();
    const Clock::time_point t1 = Clock::now();
    if (!status.ok()) break;
    stats->latency_us.push_back(MicrosSince(t0, t1));
    for (const v1::StepResult& result : response.results()) stats->core_us.push_back(result.server_micros());
    stats->steps += request.steps_size();
    progress->fetch_add(request.steps_size(), std::memory_order_relaxed);
  }
  stats->end = Clock::now();
  if (!broken && stream != nullptr) {
    if (status.ok()) {
      stream->WritesDone();
      const grpc::Status finished = stream->Finish();
      if (!finished.ok()) status = FromGrpc(finished);
    } else {
      context.TryCancel();
      (void)stream->Finish();
    }
  }
  stats->status = status;
}

// Core alone: RunStep over views of the request's bytes, as the server's workers call it.
void RunInProcessStream(const LoadOptions& options, const v1::SampleRequest& request, int64_t requests,
                        StartLine* start_line, std::atomic<int64_t>* progress, StreamStats* stats) {
  const std::shared_ptr<const ProfileRegistry> registry = ProfileRegistry::BuiltIn();
  const TensorLimits limits;
  Workspace workspace;
  StepOutput output;
  uint64_t step_index = 0;
  auto run_request = [&](bool measured) -> absl::Status {
    for (const v1::Step& step : request.steps()) {
      StepInput in;
      in.sequence_id = "bench";
      in.step = step_index;
      in.seed = step.seed();
      in.logits = RawTensor{static_cast<int>(step.logits().dtype()),
                            absl::MakeConstSpan(step.logits().shape().data(), step.logits().shape_size()),
                            step.logits().data()};
      in.attention = RawTensor{static_cast<int>(step.attention().dtype()),
                               absl::MakeConstSpan(step.attention().shape().data(), step.attention().shape_size()),
                               step.attention().data()};
      in.recent_tokens = absl::MakeConstSpan(step.recent_tokens().data(), step.recent_tokens_size());
      const Clock::time_point t0 = Clock::now();
      const absl::Status s = RunStep(*registry, limits, in, &workspace, &output);
      const Clock::time_point t1 = Clock::now();
      if (!s.ok()) return s;
      if (measured) stats->core_us.push_back(MicrosSince(t0, t1));
    }
    ++step_index;
    return absl::OkStatus();
  };
  absl::Status status;
  for (int w = 0; w < options.warmup_requests && status.ok(); ++w) status = run_request(false);
  stats->start = start_line->ArriveAndWait();
  for (int64_t r = 0; r < requests && status.ok(); ++r) {
    const Clock::time_point t0 = Clock::now();
    status = run_request(true);
    const Clock::time_point t1 = Clock::now();
    if (!status.ok()) break;
    stats->latency_us.push_back(MicrosSince(t0, t1));
    stats->steps += request.steps_size();
    progress->fetch_add(request.steps_size(), std::memory_order_relaxed);
  }
  stats->end = Clock::now();
  stats->status = status;
}

std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      absl::StrAppendFormat(&out, "\\u%04x", c);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

absl::string_view DTypeName(v1::DType dtype) { return dtype == v1::DTYPE_BF16 ? "bf16" : "f32"; }

}  // namespace

v1::SampleRequest BuildRequest(Workload workload, v1::DType dtype) {
  return BuildShapedRequest(ShapeOf(workload), dtype);
}

WorkloadShape ShapeOf(Workload workload) {
  switch (workload) {
    case Workload::kS:
      return {32000, 8, 1024, 1};
    case Workload::kL:
      return {128256, 32, 4096, 1};
    case Workload::kXL:
      return {256000, 64, 8192, 1};
    case Workload::kB:
      return {128256, 32, 4096, 32};
  }
  return {};
}

absl::string_view WorkloadName(Workload workload) {
  switch (workload) {
    case Workload::kS:
      return "S";
    case Workload::kL:
      return "L";
    case Workload::kXL:
      return "XL";
    case Workload::kB:
      return "B";
  }
  return "?";
}

absl::StatusOr<Workload> ParseWorkload(absl::string_view name) {
  const std::string upper = absl::AsciiStrToUpper(name);
  for (Workload w : {Workload::kS, Workload::kL, Workload::kXL, Workload::kB}) {
    if (upper == WorkloadName(w)) return w;
  }
  return absl::InvalidArgumentError(absl::StrCat("--workload: must be S, L, XL or B, got \"", name, "\""));
}

absl::StatusOr<v1::DType> ParseDType(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "f32") return v1::DTYPE_F32;
  if (lower == "bf16") return v1::DTYPE_BF16;
  return absl::InvalidArgumentError(absl::StrCat("--dtype: must be f32 or bf16, got \"", name, "\""));
}

absl::StatusOr<LoadReport> RunLoad(const LoadOptions& options) {
  if (options.streams < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--streams: must be >= 1, got ", options.streams));
  }
  if (options.steps < 1) return absl::InvalidArgumentError(absl::StrCat("--steps: must be >= 1, got ", options.steps));
  if (options.warmup_requests < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--warmup: must be >= 0, got ", options.warmup_requests));
  }
  if (options.dtype != v1::DTYPE_F32 && options.dtype != v1::DTYPE_BF16) {
    return absl::InvalidArgumentError("--dtype: must be f32 or bf16");
  }
  if (options.in_process && !options.shm_socket.empty()) {
    return absl::InvalidArgumentError("--shm needs a server, not --in-process");
  }
  if (options.shm_control && options.shm_socket.empty()) {
    return absl::InvalidArgumentError("--shm-steps control needs --shm");
  }
  if (options.shm_control && options.no_compute) {
    return absl::InvalidArgumentError("--shm-steps control runs core: not with --no-compute");
  }
  if (options.in_process && options.no_compute) {
    return absl::InvalidArgumentError("--no-compute measures the transport: it needs a server, not --in-process");
  }

  LoadReport report;
  report.workload = options.workload;
  report.shape = ShapeOf(options.workload);
  report.dtype = options.dtype;
  report.mode = options.in_process            ? "in-process"
                : options.no_compute          ? "grpc-no-compute"
                : options.shm_control         ? "shm-control"
                : !options.shm_socket.empty() ? "grpc-shm"
                                              : "grpc";
  report.target = options.in_process ? "" : options.target;
  report.streams = options.streams;

  const v1::SampleRequest prototype = BuildRequest(options.workload, options.dtype);
  report.request_bytes = static_cast<int64_t>(prototype.ByteSizeLong());
  const int64_t per_round = int64_t{options.streams} * report.shape.steps_per_request;
  const int64_t requests_per_stream = std::max<int64_t>(1, (options.steps + per_round - 1) / per_round);
  const int64_t total_steps = requests_per_stream * per_round;

  StartLine start_line(options.streams);
  std::atomic<int64_t> progress{0};
  std::atomic<int> running{options.streams};
  std::vector<StreamStats> stats(static_cast<size_t>(options.streams));
  std::vector<std::thread> threads;
  for (int i = 0; i < options.streams; ++i) {
    threads.emplace_back([&, i] {
      StreamStats* s = &stats[static_cast<size_t>(i)];
      if (options.in_process) {
        RunInProcessStream(options, prototype, requests_per_stream, &start_line, &progress, s);
      } else {
        RunGrpcStream(options, i, prototype, requests_per_stream, &start_line, &progress, s);
      }
      running.fetch_sub(1);
    });
  }
  while (running.load() > 0) {
    if (options.progress) options.progress(progress.load(std::memory_order_relaxed), total_steps);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (std::thread& t : threads) t.join();
  if (options.progress) options.progress(progress.load(), total_steps);

  std::vector<double> latency;
  std::vector<double> core;
  Clock::time_point start = stats[0].start;
  Clock::time_point end = stats[0].end;
  for (StreamStats& s : stats) {
    if (!s.status.ok()) return s.status;
    latency.insert(latency.end(), s.latency_us.begin(), s.latency_us.end());
    core.insert(core.end(), s.core_us.begin(), s.core_us.end());
    report.steps += s.steps;
    start = std::min(start, s.start);
    end = std::max(end, s.end);
  }
  report.requests = static_cast<int64_t>(latency.size());
  report.seconds = std::chrono::duration<double>(end - start).count();
  report.steps_per_sec = report.seconds > 0 ? static_cast<double>(report.steps) / report.seconds : 0;
  report.p50_us = Percentile(&latency, 0.50);
  report.p99_us = Percentile(&latency, 0.99);
  report.core_us_p50 = Percentile(&core, 0.50);
  report.core_us_p99 = Percentile(&core, 0.99);
  return report;
}

std::string ReportJson(const LoadReport& r) {
  return absl::StrFormat(
      "{\"workload\": %s, \"dtype\": %s, \"mode\": %s, \"target\": %s, \"streams\": %d, \"steps\": %d, "
      "\"requests\": %d, \"steps_per_request\": %d, \"request_bytes\": %d, \"seconds\": %.6f, "
      "\"steps_per_sec\": %.3f, \"p50_us\": %.1f, \"p99_us\": %.1f, \"core_us_p50\": %.1f, \"core_us_p99\": %.1f, "
      "\"vocab\": %d, \"heads\": %d, \"kv_len\": %d}",
      JsonString(WorkloadName(r.workload)), JsonString(DTypeName(r.dtype)), JsonString(r.mode), JsonString(r.target),
      r.streams, r.steps, r.requests, r.shape.steps_per_request, r.request_bytes, r.seconds, r.steps_per_sec, r.p50_us,
      r.p99_us, r.core_us_p50, r.core_us_p99, r.shape.vocab, r.shape.heads, r.shape.kv_len);
}

std::string ReportText(const LoadReport& r) {
  std::string where = r.mode == "in-process" ? "in process (core only, no gRPC)"
                      : r.mode == "shm-control"
                          ? absl::StrCat("shared memory, steps on the control socket (no gRPC call), server ", r.target)
                          : absl::StrCat(r.mode == "grpc"       ? "gRPC"
                                         : r.mode == "grpc-shm" ? "gRPC, tensors in shared memory"
                                                                : "gRPC, no compute",
                                         " to ", r.target);
  std::string out = absl::StrFormat(
      "workload %s (vocab %d, attention %dx%d, %d step%s/request, %.2f MB/request), %s, %d stream%s, %s\n",
      WorkloadName(r.workload), r.shape.vocab, r.shape.heads, r.shape.kv_len, r.shape.steps_per_request,
      r.shape.steps_per_request == 1 ? "" : "s", static_cast<double>(r.request_bytes) / 1e6, DTypeName(r.dtype),
      r.streams, r.streams == 1 ? "" : "s", where);
  absl::StrAppendFormat(&out, "  %d steps in %.3f s: %.1f steps/s\n", r.steps, r.seconds, r.steps_per_sec);
  absl::StrAppendFormat(&out, "  latency per request: p50 %.1f us, p99 %.1f us\n", r.p50_us, r.p99_us);
  absl::StrAppendFormat(&out, "  core per step: p50 %.1f us, p99 %.1f us%s\n", r.core_us_p50, r.core_us_p99,
                        r.mode == "in-process"        ? " (RunStep)"
                        : r.mode == "grpc-no-compute" ? " (no compute: the server skipped core)"
                                                      : " (server_micros)");
  return out;
}

}  // namespace samplerd::client
