// The load generator behind `samplerctl bench`: issue 3's workloads against a samplerd, or against core alone.
//
// Workloads (the names every benchmark uses):
//   S   vocab 32000,  attention 8 heads x 1024,  1 step per request
//   L   vocab 128256, attention 32 x 4096,       1 step per request   (Llama 3's vocabulary)
//   XL  vocab 256000, attention 64 x 8192,       1 step per request
//   B   32 L-steps in one request (a continuous-batching host's batch)
//
// Each stream is a thread that plays a model host in ping-pong: send one request, wait for its response, send the
// next. Over gRPC every stream has its own channel (its own connection) and one Sample stream. The request is
// built once per stream (N(0, 2) logits and attention, as core_benchmark uses) and only the step indices change
// between sends, so the generator adds no tensor copy of its own beyond the serialization gRPC does. In-process
// (no gRPC) each thread calls core's RunStep directly on views over the same bytes. `no_compute` sends the
// metadata `samplerd-no-compute: 1`: a samplerd started with --allow_no_compute answers without core, so the
// run measures the transport alone for the same bytes (the ceiling of the end-to-end rate).
//
//   LoadOptions options;
//   options.target = "localhost:50051";
//   options.workload = Workload::kL;
//   absl::StatusOr<LoadReport> report = RunLoad(options);
//   if (report.ok()) std::puts(ReportJson(*report).c_str());
#ifndef SAMPLERD_CLIENTS_CPP_LOAD_GENERATOR_H_
#define SAMPLERD_CLIENTS_CPP_LOAD_GENERATOR_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "clients/cpp/samplerd_client.h"
#include "samplerd/v1/sampler.pb.h"

namespace samplerd::client {

enum class Workload { kS, kL, kXL, kB };

// The sizes of a workload.
struct WorkloadShape {
  int64_t vocab = 0;
  int64_t heads = 0;
  int64_t kv_len = 0;
  int steps_per_request = 1;
};

WorkloadShape ShapeOf(Workload workload);
absl::string_view WorkloadName(Workload workload);
// "S", "L", "XL" or "B" (case-insensitive); INVALID_ARGUMENT naming --workload otherwise.
absl::StatusOr<Workload> ParseWorkload(absl::string_view name);
// "f32" or "bf16" (case-insensitive) to DTYPE_F32 / DTYPE_BF16; INVALID_ARGUMENT naming --dtype otherwise.
absl::StatusOr<v1::DType> ParseDType(absl::string_view name);

// BuildRequest()
//
// One request of `workload` in `dtype`: ShapeOf(workload).steps_per_request steps, each with its own N(0, 2)
// logits and [heads, kv_len] attention (core_benchmark's distribution, so core times compare), seed 7, 64
// recent tokens, empty sequence ids and step 0. Deterministic.
v1::SampleRequest BuildRequest(Workload workload, v1::DType dtype);

// LoadOptions
struct LoadOptions {
  // gRPC target (host:port, unix:/path); unused in process.
  std::string target = "localhost:50051";
  // Core alone on this process's threads: no gRPC, no decode or encode.
  bool in_process = false;
  Workload workload = Workload::kL;
  // The tensors' dtype on the wire (and in core): DTYPE_F32 or DTYPE_BF16.
  v1::DType dtype = v1::DTYPE_F32;
  // Concurrent streams (threads), each ping-pong.
  int streams = 1;
  // Steps measured over all streams, rounded up to whole requests per stream.
  int64_t steps = 1000;
  // Requests per stream sent before the clock starts (connection set-up, server and client buffers warm).
  int warmup_requests = 3;
  // Ask the server to answer without core (samplerd-no-compute: 1); not with in_process.
  bool no_compute = false;
  // The server's --shm_socket: each stream registers a region there, writes its request's tensors into it once
  // and sends steps that reference them (docs/shm.md); empty = tensors travel as bytes.
  std::string shm_socket;
  // With shm_socket: send the steps on the control connection itself (ShmPlane::Sample) instead of a Sample
  // stream, so no gRPC call is involved (`--shm-steps control`).
  bool shm_control = false;
  // TLS and the bearer token of every stream's channel and control connection (ClientOptions); default
  // plaintext, no token.
  ClientOptions security;
  // Called now and then from the calling thread with the steps measured so far; may be empty.
  std::function<void(int64_t done, int64_t total)> progress;
};

// LoadReport
//
// Latencies are per request (send to response; for B one request carries 32 steps), in microseconds. Core
// times are per step: the server's StepResult.server_micros over gRPC (0 with no_compute), RunStep's time in
// process.
struct LoadReport {
  Workload workload = Workload::kL;
  WorkloadShape shape;
  v1::DType dtype = v1::DTYPE_F32;
  std::string mode;  // "grpc", "grpc-shm", "shm-control", "grpc-no-compute" or "in-process"
  std::string target;
  int streams = 0;
  int64_t steps = 0;          // measured (warm-up excluded)
  int64_t requests = 0;       // measured
  int64_t request_bytes = 0;  // one serialized request
  double seconds = 0;
  double steps_per_sec = 0;
  double p50_us = 0;
  double p99_us = 0;
  double core_us_p50 = 0;
  double core_us_p99 = 0;
};

// RunLoad()
//
// Runs the load and returns its figures. INVALID_ARGUMENT for bad options; the status of a stream that failed
// (e.g. UNAVAILABLE, or FAILED_PRECONDITION from a server without --allow_no_compute); INTERNAL naming the step
// when the server rejected a step or answered out of order.
absl::StatusOr<LoadReport> RunLoad(const LoadOptions& options);

// One JSON object on one line: workload, dtype, mode, target, streams, steps, requests, steps_per_request,
// request_bytes, seconds, steps_per_sec, p50_us, p99_us, core_us_p50, core_us_p99, vocab, heads, kv_len.
std::string ReportJson(const LoadReport& report);

// A few human-readable lines.
std::string ReportText(const LoadReport& report);

}  // namespace samplerd::client

#endif  // SAMPLERD_CLIENTS_CPP_LOAD_GENERATOR_H_
