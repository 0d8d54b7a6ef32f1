// samplerctl: command-line client of samplerd.
//
//   samplerctl health   [--target localhost:50051] [--service NAME]
//   samplerctl profiles [--json]
//   samplerctl sample   --logits x.npy [--attention y.npy] [--profile P] [--seed S] [--top-logprobs N] [--json]
//   samplerctl demo     [--steps 300] [--profile entropix] [--seed 7]
//   samplerctl bench    [--in-process] [--workload S|L|XL|B] [--dtype f32|bf16] [--streams N] [--steps N]
//                       [--no-compute] [--shm PATH [--shm-steps stream|control]] [--json]
//                       (clients/cpp/load_generator.h)
//   samplerctl record   --out FILE [--steps 100] [--sequences 2] [--profile P] [--seed 7]
//   samplerctl replay   FILE            (exit 1 with a diff when any answer differs from the recording)
//   samplerctl calibrate --from RECORD... --out profile.json [--base entropix|entropix-frog] [--name N]
//                       [--quantile-low 0.5] [--quantile-high 0.9] [--temperature-max 1]   (calibrate.h; no server)
//
// Every subcommand that calls a server takes --tls_ca / --tls_cert / --tls_key (PEM files; any of them, or
// --tls, turns TLS on) and --token (or $SAMPLERD_TOKEN: sent as "authorization: Bearer <token>"), for a server
// started with --tls_* and --auth_token_file (bench: on its streams and, with --shm, on the control socket).
//
// Exit codes: 0 success; 1 an RPC failed, a step was rejected, or the server is not SERVING; 2 bad usage or an
// unreadable input file.
#include <malloc.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "clients/cpp/calibrate.h"
#include "clients/cpp/load_generator.h"
#include "clients/cpp/record_replay.h"
#include "clients/cpp/samplerd_client.h"
#include "clients/cpp/synthetic_model.h"
#include "google/protobuf/util/json_util.h"
#include "xtensor/xarray.hpp"
#include "xtensor/xnpy.hpp"

namespace samplerd::client {
namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

int Fail(const absl::Status& status, absl::string_view what) {
  absl::FPrintF(stderr, "samplerctl: %s: %s\n", what, status.ToString());
  return kExitFailure;
}

std::string ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  std::string json;
  // Cannot fail for a message without Any fields.
  (void)google::protobuf::util::MessageToJsonString(message, &json, options);
  return json;
}

std::string RegimeName(v1::Regime regime) {
  std::string name = v1::Regime_Name(regime);
  return name.rfind("REGIME_", 0) == 0 ? name.substr(7) : name;
}

std::string DescribeParams(const v1::SamplingParams& p) {
  if (!p.has_temperature()) return "(none: the token was emitted without a draw)";
  return absl::StrFormat("temperature=%.4g top_k=%d top_p=%.4g min_p=%.4g", p.temperature(), p.top_k(), p.top_p(),
                         p.min_p());
}

std::string DescribeMetrics(const v1::Metrics& m) {
  std::string out =
      absl::StrFormat("logits_entropy=%.4f logits_varentropy=%.4f", m.logits_entropy(), m.logits_varentropy());
  if (m.has_attn_entropy()) {
    absl::StrAppendFormat(&out, " attn_entropy=%.4f attn_varentropy=%.4f agreement=%.4g interaction_strength=%.4f",
                          m.attn_entropy(), m.attn_varentropy(), m.agreement(), m.interaction_strength());
  }
  return out;
}

// numpy itself refuses to read headers over 10,000 bytes; a header length over this is a broken or hostile file,
// not something to allocate for.
constexpr uint32_t kMaxNpyHeaderBytes = 64 << 10;

// `offset` plus the bytes of a float32 array of `shape`; false when that does not fit in 64 bits.
bool NpySize(const std::vector<size_t>& shape, uint64_t offset, uint64_t* bytes) {
  uint64_t n = sizeof(float);
  for (const size_t d : shape) {
    if (d != 0 && n > UINT64_MAX / d) return false;
    n *= d;
  }
  if (n > UINT64_MAX - offset) return false;
  *bytes = offset + n;
  return true;
}

// Loads a float32 .npy with xtensor's reader, which trusts the header: it allocates the header length and the
// shape's bytes before reading them and ignores a short read, so a truncated file would come back with
// uninitialized elements. Hence the header length, dtype and file size are checked against the header (parsed by
// xtensor) before the load, and the stream after it.
bool LoadNpy(const std::string& path, xt::xarray<float>* out) {
  const auto refuse = [&path](absl::string_view why) {
    absl::FPrintF(stderr, "samplerctl: %s: not a float32 .npy file: %s\n", path, why);
    return false;
  };
  std::ifstream in(path, std::ios::binary);
  if (!in) return refuse("cannot be opened");
  in.seekg(0, std::ios::end);
  const std::streamoff file_bytes = in.tellg();
  in.seekg(0);
  if (!in || file_bytes < 0) return refuse("cannot be read");
  try {
    // The fixed prefix: magic and version (xtensor reads those two), then the header length, little-endian,
    // 2 bytes in version 1.0 and 4 in 2.0.
    unsigned char major = 0, minor = 0;
    xt::detail::read_magic(in, &major, &minor);
    if (!((major == 1 || major == 2) && minor == 0)) {
      return refuse(absl::StrCat("format version ", int{major}, ".", int{minor}, " (1.0 and 2.0 are read)"));
    }
    unsigned char length[4] = {};
    in.read(reinterpret_cast<char*>(length), major == 1 ? 2 : 4);
    if (!in) return refuse("shorter than a .npy header");
    const uint32_t header_bytes =
        length[0] | (uint32_t{length[1]} << 8) | (uint32_t{length[2]} << 16) | (uint32_t{length[3]} << 24);
    const uint64_t data_offset = (major == 1 ? 10 : 12) + uint64_t{header_bytes};
    if (header_bytes == 0) return refuse("its header is empty");
    if (header_bytes > kMaxNpyHeaderBytes) {
      return refuse(absl::StrCat("its header length is ", header_bytes, " bytes, over the ", kMaxNpyHeaderBytes,
                                 " a .npy header can have"));
    }
    if (!in || data_offset > static_cast<uint64_t>(file_bytes)) {
      return refuse(absl::StrCat("the file (", file_bytes, " bytes) is shorter than its header says"));
    }
    std::string header(header_bytes, '\0');
    in.read(header.data(), header_bytes);
    std::string descr;
    bool fortran_order = false;
    std::vector<size_t> shape;
    xt::detail::parse_header(header, descr, &fortran_order, shape);
    if (descr != xt::detail::build_typestring<float>()) {
      return refuse(absl::StrCat("its dtype is '", descr, "', not '", xt::detail::build_typestring<float>(), "'"));
    }
    if (shape.empty()) return refuse("a 0-d array (shape ()): logits and attention need at least one dimension");
    uint64_t expected_bytes = 0;
    if (!NpySize(shape, data_offset, &expected_bytes)) return refuse("its shape's byte count does not fit in 64 bits");
    if (expected_bytes != static_cast<uint64_t>(file_bytes)) {
      return refuse(absl::StrCat("the file has ", file_bytes, " bytes, its header and shape say ", expected_bytes));
    }

    in.seekg(0);
    auto loaded = xt::load_npy<float>(in);
    // The file may have changed since its size was taken: the load must have read every byte, and no more exist.
    if (!in || in.peek() != std::char_traits<char>::eof())
      return refuse("the file changed or failed while it was read");
    *out = std::move(loaded);
    return true;
  } catch (const std::exception& e) {
    return refuse(e.what());
  }
}

void FillTensor(const xt::xarray<float>& array, v1::Tensor* tensor) {
  std::vector<int64_t> shape(array.shape().begin(), array.shape().end());
  FillF32Tensor(absl::MakeConstSpan(array.data(), array.size()), shape, tensor);
}

int RunHealth(Client& client, const std::string& service) {
  absl::StatusOr<ServingStatus> status = client.Health(service);
  if (!status.ok()) return Fail(status.status(), "health");
  absl::PrintF("%s\n", ServingStatusName(*status));
  return *status == ServingStatus::kServing ? 0 : kExitFailure;
}

int RunProfiles(Client& client, bool json) {
  absl::StatusOr<v1::ListProfilesResponse> profiles = client.ListProfiles();
  if (!profiles.ok()) return Fail(profiles.status(), "ListProfiles");
  if (json) {
    absl::PrintF("%s\n", ToJson(*profiles));
    return 0;
  }
  for (const v1::Profile& p : profiles->profiles()) {
    absl::PrintF("%s%s  %s\n", p.name(), p.name() == profiles->default_profile() ? " (default)" : "", p.description());
    absl::PrintF("  params: %s n_adaptive_samples=%d clarifying_token=%d\n", DescribeParams(p.params()),
                 p.params().n_adaptive_samples(), p.params().clarifying_token());
    for (const v1::RegimeRule& rule : p.regimes()) {
      std::vector<std::string> bounds;
      for (const v1::Bound& b : rule.bounds()) {
        bounds.push_back(
            absl::StrFormat("%s %s %g", v1::Metric_Name(b.metric()), b.op() == v1::OP_LT ? "<" : ">", b.value()));
      }
      absl::PrintF("  %-9s if %s\n", RegimeName(rule.regime()), absl::StrJoin(bounds, " and "));
    }
    absl::PrintF("  %-9s otherwise\n", RegimeName(p.default_regime()));
  }
  return 0;
}

struct SecurityFlags {
  bool tls = false;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  std::string token;
};

// The ClientOptions of the flags; false (with the reason on stderr) when a file cannot be read.
bool MakeClientOptions(const SecurityFlags& flags, ClientOptions* options) {
  const std::pair<const std::string*, std::string*> files[] = {{&flags.tls_ca, &options->tls_ca_pem},
                                                               {&flags.tls_cert, &options->tls_cert_pem},
                                                               {&flags.tls_key, &options->tls_key_pem}};
  for (const auto& [path, pem] : files) {
    if (path->empty()) continue;
    std::ifstream in(*path, std::ios::binary);
    std::ostringstream contents;
    contents << in.rdbuf();
    if (!in || contents.str().empty()) {
      absl::FPrintF(stderr, "samplerctl: %s: cannot be read\n", *path);
      return false;
    }
    *pem = contents.str();
    options->tls = true;
  }
  if (flags.tls) options->tls = true;
  options->token = flags.token;
  return true;
}

struct SampleFlags {
  std::string logits;
  std::string attention;
  std::string profile;
  uint64_t seed = 0;
  int32_t top_logprobs = 0;
  bool json = false;
};

int RunSample(Client& client, const SampleFlags& flags) {
  v1::SampleRequest request;
  v1::Step* step = request.add_steps();
  step->set_sequence_id("samplerctl");
  step->set_profile(flags.profile);
  step->set_seed(flags.seed);
  step->set_top_logprobs(flags.top_logprobs);
  xt::xarray<float> logits;
  if (!LoadNpy(flags.logits, &logits)) return kExitUsage;
  FillTensor(logits, step->mutable_logits());
  if (!flags.attention.empty()) {
    xt::xarray<float> attention;
    if (!LoadNpy(flags.attention, &attention)) return kExitUsage;
    FillTensor(attention, step->mutable_attention());
  }

  absl::StatusOr<v1::SampleResponse> response = client.SampleOnce(request);
  if (!response.ok()) return Fail(response.status(), "SampleOnce");
  if (response->results_size() != 1) {
    return Fail(absl::InternalError(absl::StrCat(response->results_size(), " results for 1 step")), "SampleOnce");
  }
  const v1::StepResult& r = response->results(0);
  if (flags.json) {
    absl::PrintF("%s\n", ToJson(r));
  } else if (!r.has_error()) {
    absl::PrintF("token %d  logprob %.6f  regime %s  profile %s  seed %d  (%d us in core)\n", r.token(), r.logprob(),
                 RegimeName(r.regime()), r.profile(), r.seed(), r.server_micros());
    absl::PrintF("applied: %s\n", DescribeParams(r.applied()));
    absl::PrintF("metrics: %s\n", DescribeMetrics(r.metrics()));
    if (r.top_size() > 0) {
      std::vector<std::string> top;
      for (const v1::TokenLogprob& t : r.top()) top.push_back(absl::StrFormat("%d:%.4f", t.token(), t.logprob()));
      absl::PrintF("top: %s\n", absl::StrJoin(top, " "));
    }
  }
  if (r.has_error()) {
    absl::FPrintF(stderr, "samplerctl: step rejected: %s (code %d) %s\n",
                  absl::StatusCodeToString(static_cast<absl::StatusCode>(r.error().code())), r.error().code(),
                  r.error().message());
    return kExitFailure;
  }
  return 0;
}

struct DemoFlags {
  int steps = 300;
  std::string profile = "entropix";
  uint64_t seed = 7;
};

int RunDemo(Client& client, const DemoFlags& flags) {
  SyntheticModel model(SyntheticModel::Options{});
  SessionOptions options;
  options.sequence_id = "samplerctl-demo";
  options.profile = flags.profile;
  options.seed = flags.seed;
  std::unique_ptr<Session> session = client.OpenSession(options);

  std::vector<float> logits;
  std::vector<float> attention;
  std::map<std::string, int> regimes;
  int32_t previous = 0;
  absl::PrintF("%5s  %-9s  %6s  %-9s  %8s %8s  %s\n", "step", "model", "token", "regime", "entropy", "varent",
               "applied");
  for (int i = 0; i < flags.steps; ++i) {
    const uint64_t step = session->step();
    const SyntheticModel::State state = model.Next(step, previous, &logits, &attention);
    const int64_t shape[2] = {model.heads(), model.kv_len(step)};
    absl::StatusOr<StepResult> r = session->Step(logits, TensorRef(attention, shape));
    if (!r.ok()) return Fail(r.status(), absl::StrCat("step ", step));
    previous = r->token;
    ++regimes[RegimeName(r->regime)];
    absl::PrintF("%5d  %-9s  %6d  %-9s  %8.4f %8.4f  %s\n", step, SyntheticModel::StateName(state), r->token,
                 RegimeName(r->regime), r->metrics.logits_entropy(), r->metrics.logits_varentropy(),
                 DescribeParams(r->applied));
  }
  if (absl::Status s = session->Close(); !s.ok()) return Fail(s, "closing the Sample stream");
  absl::PrintF("\n%d steps, profile %s, seed %d; regimes:\n", flags.steps, flags.profile, session->seed());
  for (const auto& [name, count] : regimes) absl::PrintF("  %-9s %5d\n", name, count);
  return 0;
}

struct BenchFlags {
  bool in_process = false;
  std::string workload = "L";
  std::string dtype = "f32";
  int streams = 1;
  int64_t steps = 1000;
  int warmup = 3;
  bool no_compute = false;
  std::string shm;
  std::string shm_steps = "stream";
  bool json = false;
};

// Redraws one line on stderr: only on a terminal, so logs and CI output stay clean.
void DrawProgress(int64_t done, int64_t total) {
  constexpr int kWidth = 40;
  const int filled = total > 0 ? static_cast<int>(kWidth * done / total) : 0;
  absl::FPrintF(stderr, "\r[%s%s] %3d%% %d/%d steps", std::string(filled, '#'), std::string(kWidth - filled, '.'),
                total > 0 ? static_cast<int>(100 * done / total) : 0, done, total);
}

int RunBench(const std::string& target, const ClientOptions& security, const BenchFlags& flags) {
  // As samplerd does (service/allocator_tuning.h): without it a model host sending megabyte requests
  // page-faults on every serialization, and the run would measure that instead of samplerd.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  mallopt(M_ARENA_MAX, 1);
  LoadOptions options;
  options.security = security;
  absl::StatusOr<Workload> workload = ParseWorkload(flags.workload);
  absl::StatusOr<v1::DType> dtype = ParseDType(flags.dtype);
  for (const absl::Status& s : {workload.status(), dtype.status()}) {
    if (!s.ok()) {
      absl::FPrintF(stderr, "samplerctl: %s\n", s.message());
      return kExitUsage;
    }
  }
  options.target = target;
  options.in_process = flags.in_process;
  options.workload = *workload;
  options.dtype = *dtype;
  options.streams = flags.streams;
  options.steps = flags.steps;
  options.warmup_requests = flags.warmup;
  options.no_compute = flags.no_compute;
  options.shm_socket = flags.shm;
  options.shm_control = flags.shm_steps == "control";
  const bool terminal = isatty(STDERR_FILENO) == 1;
  if (terminal) options.progress = DrawProgress;
  absl::StatusOr<LoadReport> report = RunLoad(options);
  if (terminal) absl::FPrintF(stderr, "\r%s\r", std::string(80, ' '));
  if (!report.ok()) {
    if (report.status().code() == absl::StatusCode::kInvalidArgument) {
      absl::FPrintF(stderr, "samplerctl: %s\n", report.status().message());
      return kExitUsage;
    }
    return Fail(report.status(), "bench");
  }
  absl::PrintF("%s\n", flags.json ? ReportJson(*report) : ReportText(*report));
  return 0;
}

}  // namespace
}  // namespace samplerd::client

int main(int argc, char** argv) {
  using namespace samplerd::client;
  CLI::App app{"samplerctl: command-line client of samplerd (samplerd.v1.Sampler)."};
  app.require_subcommand(1);
  app.fallthrough();  // --target may follow the subcommand
  std::string target = "localhost:50051";
  app.add_option("--target", target, "gRPC target of the server: host:port or unix:/path")->capture_default_str();

  SecurityFlags security;
  app.add_flag("--tls", security.tls,
               "Use TLS, trusting the system's roots (implied by --tls_ca/--tls_cert/--tls_key)");
  app.add_option("--tls_ca", security.tls_ca, "PEM CA bundle the server's certificate must chain to (turns TLS on)");
  app.add_option("--tls_cert", security.tls_cert, "PEM client certificate, for a server with --tls_client_ca")
      ->needs(app.add_option("--tls_key", security.tls_key, "PEM private key of --tls_cert"));
  app.get_option("--tls_key")->needs("--tls_cert");
  app.add_option("--token", security.token, "Bearer token, for a server with --auth_token_file")
      ->envname("SAMPLERD_TOKEN");

  std::string service;
  CLI::App* health = app.add_subcommand("health", "Check grpc.health.v1 (exit 0 only when SERVING)");
  health->add_option("--service", service, "Service name to check; empty = the whole server");

  bool profiles_json = false;
  CLI::App* profiles = app.add_subcommand("profiles", "List the server's profiles with every parameter value");
  profiles->add_flag("--json", profiles_json, "Print the ListProfilesResponse as JSON");

  SampleFlags sample_flags;
  CLI::App* sample = app.add_subcommand("sample", "Sample one token from logits (and attention) in .npy files");
  sample->add_option("--logits", sample_flags.logits, "float32 .npy of shape [vocab]")
      ->required()
      ->check(CLI::ExistingFile);
  sample
      ->add_option("--attention", sample_flags.attention,
                   "float32 .npy of shape [heads, kv_len] or [layers, heads, kv_len]")
      ->check(CLI::ExistingFile);
  sample->add_option("--profile", sample_flags.profile, "Server profile; empty = the server's default");
  sample->add_option("--seed", sample_flags.seed, "Seed of the draw; 0 = the server picks one (and reports it)")
      ->capture_default_str();
  sample->add_option("--top-logprobs", sample_flags.top_logprobs, "How many top tokens to return, 0..20")
      ->capture_default_str();
  sample->add_flag("--json", sample_flags.json, "Print the StepResult as JSON");

  DemoFlags demo_flags;
  CLI::App* demo = app.add_subcommand(
      "demo", "Generate from a synthetic model (vocab 32000, 8 heads) and show the regime of each step");
  demo->add_option("--steps", demo_flags.steps, "Steps to generate")->capture_default_str()->check(CLI::PositiveNumber);
  demo->add_option("--profile", demo_flags.profile, "Server profile")->capture_default_str();
  demo->add_option("--seed", demo_flags.seed, "Seed of the generation")->capture_default_str();

  RecordOptions record_options;
  CLI::App* record = app.add_subcommand(
      "record", "Run a generation (synthetic model, sequences batched) and record every request and response");
  record->add_option("--out", record_options.out, "Recording file to write")->required();
  record->add_option("--steps", record_options.steps, "Steps per sequence")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  record->add_option("--sequences", record_options.sequences, "Sequences batched in each request")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  record->add_option("--profile", record_options.profile, "Server profile; empty = the server's default");
  record->add_option("--seed", record_options.seed, "Seed of sequence 0 (sequence k: seed + k); 0 = the server picks")
      ->capture_default_str();
  ReplayOptions replay_options;
  CLI::App* replay = app.add_subcommand(
      "replay", "Send a recording's requests to --target and check every answer is identical (exit 1 otherwise)");
  replay->add_option("file", replay_options.file, "Recording written by `samplerctl record`")
      ->required()
      ->check(CLI::ExistingFile);

  CalibrateOptions calibrate_options;
  CLI::App* calibrate = app.add_subcommand(
      "calibrate", "Fit a profile to a model from recorded generations (no server): a ProfileSet JSON for --config");
  calibrate
      ->add_option("--from", calibrate_options.from,
                   "Records: `samplerctl record` files or JSON lines of the torch host (generate.py --record)")
      ->required()
      ->expected(1, -1);
  calibrate->add_option("--out", calibrate_options.out, "ProfileSet JSON to write; - = stdout")->required();
  calibrate
      ->add_option("--base", calibrate_options.calibration.base,
                   "Profile whose shape is kept: entropix or entropix-frog")
      ->capture_default_str();
  calibrate->add_option("--name", calibrate_options.calibration.name, "Name of the calibrated profile")
      ->capture_default_str();
  calibrate
      ->add_option("--quantile-low", calibrate_options.calibration.quantile_low,
                   "Quantile for each metric's lowest base bound, in (0, 1)")
      ->capture_default_str();
  calibrate
      ->add_option("--quantile-high", calibrate_options.calibration.quantile_high,
                   "Quantile for each metric's highest base bound, in (0, 1)")
      ->capture_default_str();
  calibrate
      ->add_option("--temperature-max", calibrate_options.calibration.temperature_max,
                   "Highest temperature any regime applies over the recorded steps")
      ->capture_default_str();

  BenchFlags bench_flags;
  CLI::App* bench = app.add_subcommand(
      "bench", "Load generator: steps/s, latency and core time of a workload (S, L, XL, B) against --target");
  bench->add_flag("--in-process", bench_flags.in_process, "Run core in this process (no gRPC, no server)");
  bench
      ->add_option("--workload", bench_flags.workload,
                   "S (vocab 32000, attention 8x1024), L (128256, 32x4096), XL (256000, 64x8192), "
                   "B (32 L-steps per request)")
      ->capture_default_str();
  bench->add_option("--dtype", bench_flags.dtype, "Tensor dtype on the wire: f32 or bf16")->capture_default_str();
  bench->add_option("--streams", bench_flags.streams, "Concurrent streams (one connection and thread each)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  bench->add_option("--steps", bench_flags.steps, "Steps measured over all streams (rounded up to whole requests)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  bench->add_option("--warmup", bench_flags.warmup, "Requests per stream before the clock starts")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  bench->add_flag("--no-compute", bench_flags.no_compute,
                  "Send samplerd-no-compute: 1 (the server, started with --allow_no_compute, skips core): the "
                  "transport alone for the same bytes");
  bench->add_option("--shm", bench_flags.shm,
                    "The server's --shm_socket: tensors are written once into a shared-memory region per stream "
                    "and steps reference them (docs/shm.md); --target must be the same server");
  bench
      ->add_option("--shm-steps", bench_flags.shm_steps,
                   "With --shm, where the steps travel: \"stream\" (a Sample stream carrying the session) or "
                   "\"control\" (the control socket itself, no gRPC call)")
      ->capture_default_str()
      ->check(CLI::IsMember({"stream", "control"}));
  bench->add_flag("--json", bench_flags.json,
                  "Print one JSON object (workload, dtype, streams, steps, steps_per_sec, p50_us, p99_us, "
                  "core_us_p50, ...)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  if (calibrate->parsed()) return RunCalibrate(calibrate_options);
  ClientOptions client_options;
  if (!MakeClientOptions(security, &client_options)) return kExitUsage;
  if (bench->parsed()) return RunBench(target, client_options, bench_flags);
  Client client(target, client_options);
  if (health->parsed()) return RunHealth(client, service);
  if (profiles->parsed()) return RunProfiles(client, profiles_json);
  if (sample->parsed()) return RunSample(client, sample_flags);
  if (record->parsed()) return RunRecord(client, record_options);
  if (replay->parsed()) return RunReplay(client, replay_options);
  return RunDemo(client, demo_flags);
}
