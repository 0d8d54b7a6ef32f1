#include "tests/fuzz/fuzz_targets.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/field_error.h"
#include "core/metrics.h"
#include "core/profile.h"
#include "core/reduce_kernels.h"
#include "core/step_engine.h"
#include "core/tensor_view.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/util/message_differencer.h"
#include "service/request_wire.h"
#include "service/sampler_service.h"
#include "service/seed_table.h"
#include "service/server_config.h"
#include "service/shm_control_server.h"
#include "service/shm_registry.h"
#include "tests/service/run_request.h"

namespace samplerd::fuzz {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr int64_t kMaxKernelElements = 1000000;

// Reads little-endian integers from the front of a byte range; missing bytes read as 0.
class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t U8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint32_t U32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(U8()) << (8 * i);
    return v;
  }
  const uint8_t* rest() const { return data_ + std::min(pos_, size_); }
  size_t rest_size() const { return pos_ < size_ ? size_ - pos_ : 0; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

bool Bad(float v) { return std::isnan(v) || v == kInf; }

// |got - want| <= abs + rel * |want|, and both finite.
bool Near(double got, double want, double abs, double rel) {
  return std::isfinite(got) && std::isfinite(want) && std::abs(got - want) <= abs + rel * std::abs(want);
}

// ---------------------------------------------------------------------------------------------------------------
// Request target.

// The harness's shared-memory region: a sealed memfd of kShmBytes filled with N(0, 2) floats, registered for
// one session. A TensorRef whose region is "r" in a fuzz input means this region (its real id is random).
constexpr uint64_t kShmBytes = 1 << 20;
constexpr char kShmAlias[] = "r";

// A memfd holding `bytes`, with `seals` added (0 for none); aborts when the kernel refuses.
int Memfd(const std::string& bytes, unsigned seals) {
  const int fd = memfd_create("fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0 || ftruncate(fd, static_cast<off_t>(bytes.size())) != 0 ||
      pwrite(fd, bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size()) ||
      (seals != 0 && fcntl(fd, F_ADD_SEALS, seals) != 0)) {
    std::fprintf(stderr, "fuzz: cannot make a shared-memory region: %s\n", std::strerror(errno));
    std::abort();
  }
  return fd;
}

struct ShmHarness {
  std::shared_ptr<ShmRegistry> registry;
  std::string session;
  std::string region;
  std::string bytes;  // the region's contents, for materializing references
};

const ShmHarness& Shm() {
  static const ShmHarness* const harness = [] {
    auto* h = new ShmHarness();
    h->registry = std::make_shared<ShmRegistry>(ShmRegistry::Limits{1, 1, kShmBytes});
    h->session = *h->registry->OpenSession();
    std::vector<float> values(kShmBytes / sizeof(float));
    std::mt19937 rng(17);
    std::normal_distribution<float> normal(0.0f, 2.0f);
    for (float& v : values) v = normal(rng);
    h->bytes.assign(reinterpret_cast<const char*>(values.data()), kShmBytes);
    const int fd = Memfd(h->bytes, F_SEAL_SHRINK | F_SEAL_SEAL);
    absl::StatusOr<ShmRegistry::Registered> r = h->registry->Register(h->session, fd, "fuzz");
    close(fd);
    if (!r.ok()) {
      std::fprintf(stderr, "fuzz: %s\n", r.status().ToString().c_str());
      std::abort();
    }
    h->region = r->region;
    return h;
  }();
  return *harness;
}

const SamplerService& Service() {
  static const SamplerService* const service = [] {
    SamplerService::Options options;
    options.config.workers = 1;
    options.profiles = ProfileRegistry::BuiltIn();
    options.shm = Shm().registry;
    absl::StatusOr<std::unique_ptr<SamplerService>> s = SamplerService::Create(std::move(options));
    if (!s.ok()) {
      std::fprintf(stderr, "fuzz: SamplerService::Create: %s\n", s.status().ToString().c_str());
      std::abort();
    }
    return s->release();
  }();
  return *service;
}

// `ref` as the inline tensor it stands for, when it is one the server must accept as a reference (region "r",
// known dtype, shape of dimensions >= 1, aligned and within the region); nullopt when the server must refuse the
// reference itself (an error naming "<name>_ref...") or leave the tensor's checks to core.
enum class RefVerdict { kBytes, kRefError, kCoreChecks };
RefVerdict Materialize(const v1::TensorRef& ref, v1::Tensor* tensor) {
  if (ref.region() != kShmAlias) return RefVerdict::kRefError;
  tensor->set_dtype(ref.dtype());
  tensor->mutable_shape()->CopyFrom(ref.shape());
  const uint64_t item = ref.dtype() == v1::DTYPE_F32                                      ? 4
                        : (ref.dtype() == v1::DTYPE_F16 || ref.dtype() == v1::DTYPE_BF16) ? 2
                                                                                          : 0;
  if (item == 0) return RefVerdict::kCoreChecks;
  unsigned __int128 bytes = item;
  for (const int64_t d : ref.shape()) {
    if (d < 1) return RefVerdict::kCoreChecks;
    bytes *= static_cast<unsigned __int128>(d);
    if (bytes > std::numeric_limits<uint64_t>::max()) return RefVerdict::kRefError;
  }
  if (ref.offset() % item != 0 || ref.offset() > kShmBytes || bytes > kShmBytes - ref.offset()) {
    return RefVerdict::kRefError;
  }
  tensor->set_data(Shm().bytes.substr(static_cast<size_t>(ref.offset()), static_cast<size_t>(bytes)));
  return RefVerdict::kBytes;
}

// Checks a request with tensor references: each step is answered as its materialized twin (the same tensors
// inline) when its references are good, and with an INVALID_ARGUMENT naming the reference otherwise. Replaces
// `request` by the twin for the inline checks that follow.
std::string CheckReferences(v1::SampleRequest* request) {
  v1::SampleRequest twin = *request;
  std::vector<bool> ref_error(static_cast<size_t>(request->steps_size()), false);
  for (int i = 0; i < request->steps_size(); ++i) {
    v1::Step* step = request->mutable_steps(i);
    v1::Step* inline_step = twin.mutable_steps(i);
    if (step->has_logits_ref() && step->logits_ref().region() == kShmAlias) {
      step->mutable_logits_ref()->set_region(Shm().region);
    }
    if (step->has_attention_ref() && step->attention_ref().region() == kShmAlias) {
      step->mutable_attention_ref()->set_region(Shm().region);
    }
    if (step->has_logits_ref()) {
      if (step->has_logits()) {
        ref_error[static_cast<size_t>(i)] = true;
      } else if (Materialize(twin.steps(i).logits_ref(), inline_step->mutable_logits()) == RefVerdict::kRefError) {
        ref_error[static_cast<size_t>(i)] = true;
      }
      inline_step->clear_logits_ref();
    }
    if (!ref_error[static_cast<size_t>(i)] && step->has_attention_ref()) {
      if (step->has_attention()) {
        ref_error[static_cast<size_t>(i)] = true;
      } else if (Materialize(twin.steps(i).attention_ref(), inline_step->mutable_attention()) ==
                 RefVerdict::kRefError) {
        ref_error[static_cast<size_t>(i)] = true;
      }
      inline_step->clear_attention_ref();
    }
  }
  const SamplerService& service = Service();
  SeedTable seeds, twin_seeds;
  v1::SampleResponse by_ref, by_bytes;
  if (!RunRequest(service, *request, &seeds, &by_ref, Shm().session).ok()) return "";  // too many steps
  // Seed 0 means a seed the server picks; the twin uses the ones it picked.
  for (int i = 0; i < twin.steps_size(); ++i) {
    if (!by_ref.results(i).has_error()) twin.mutable_steps(i)->set_seed(by_ref.results(i).seed());
  }
  if (!RunRequest(service, twin, &twin_seeds, &by_bytes).ok()) return "the inline twin was refused";
  for (int i = 0; i < request->steps_size(); ++i) {
    v1::StepResult a = by_ref.results(i);
    v1::StepResult b = by_bytes.results(i);
    const std::string where = absl::StrCat("step ", i, " (referenced): ");
    if (ref_error[static_cast<size_t>(i)]) {
      // The first failing check may also be an earlier core check of the step (profile, params, ...), but a
      // reference that must fail never yields a token.
      if (!a.has_error()) return absl::StrCat(where, "a bad reference was answered");
      continue;
    }
    if (a.has_error() && absl::StrContains(a.error().field(), "_ref")) {
      return absl::StrCat(where, "a good reference was refused: ", a.error().message());
    }
    a.clear_server_micros();
    b.clear_server_micros();
    if (a.SerializeAsString() != b.SerializeAsString()) {
      return absl::StrCat(where, "answered differently from the same tensors inline");
    }
  }
  for (int i = twin.steps_size() - 1; i >= 0; --i) {
    if (ref_error[static_cast<size_t>(i)]) twin.mutable_steps()->DeleteSubrange(i, 1);
  }
  *request = std::move(twin);
  return "";
}

// The float32 view of a tensor the server accepted (the same decode core used).
std::optional<FloatView> View(const v1::Tensor& t, std::vector<float>* scratch) {
  RawTensor raw;
  raw.dtype = static_cast<int>(t.dtype());
  raw.shape = absl::Span<const int64_t>(t.shape().data(), static_cast<size_t>(t.shape_size()));
  raw.data = t.data();
  TensorLimits limits;
  limits.max_vocab = std::numeric_limits<int64_t>::max();
  limits.max_attention_elements = std::numeric_limits<int64_t>::max();
  absl::StatusOr<FloatView> v = ValidateTensor(raw, TensorRole::kLogits, limits, "logits", scratch);
  if (!v.ok()) return std::nullopt;
  return *v;
}

std::string CheckResult(const v1::Step& step, const v1::StepResult& r, int index) {
  const std::string where = absl::StrCat("step ", index, " (sequence_id \"", step.sequence_id(), "\"): ");
  if (r.sequence_id() != step.sequence_id() || r.step() != step.step()) {
    return absl::StrCat(where, "the result echoes (\"", r.sequence_id(), "\", ", r.step(), ") instead of step ",
                        step.step());
  }
  if (r.has_error()) {
    const int code = r.error().code();
    if (code != 3 && code != 5 && code != 8) {
      return absl::StrCat(where, "error code ", code,
                          " is not INVALID_ARGUMENT, NOT_FOUND or RESOURCE_EXHAUSTED: ", r.error().message());
    }
    if (r.error().field().empty()) return absl::StrCat(where, "an error without a field: ", r.error().message());
    if (!absl::StartsWith(r.error().message(), r.error().field())) {
      return absl::StrCat(where, "the message \"", r.error().message(), "\" does not name the field \"",
                          r.error().field(), "\"");
    }
    return "";
  }

  std::vector<float> scratch;
  const std::optional<FloatView> logits = View(step.logits(), &scratch);
  if (!logits.has_value() || step.logits().shape_size() != 1) {
    return absl::StrCat(where, "accepted logits that do not decode as [vocab]");
  }
  const int64_t vocab = logits->cols;
  if (r.token() < 0 || r.token() >= vocab) return absl::StrCat(where, "token ", r.token(), " outside [0, ", vocab, ")");
  if (r.regime() == v1::REGIME_UNSPECIFIED) return absl::StrCat(where, "no regime");
  if (r.profile().empty()) return absl::StrCat(where, "no profile");
  if (r.seed() == 0 || (step.seed() != 0 && r.seed() != step.seed())) {
    return absl::StrCat(where, "seed ", r.seed(), " for a requested seed of ", step.seed());
  }

  // The chosen token's logprob: <= 0, never NaN; -inf only when that token's logit is -inf (an emitted
  // clarifying token can be one) or so far below the max that float cannot hold the difference.
  const float z = logits->data[r.token()];
  float max_z = -kInf;
  for (int64_t i = 0; i < vocab; ++i) max_z = std::max(max_z, logits->data[i]);
  if (std::isnan(r.logprob()) || r.logprob() > 0.0f) return absl::StrCat(where, "logprob ", r.logprob());
  if (!std::isfinite(r.logprob()) && z != -kInf && static_cast<double>(z) - max_z > -static_cast<double>(FLT_MAX)) {
    return absl::StrCat(where, "logprob ", r.logprob(), " for token ", r.token(), " whose logit is ", z, " (max ",
                        max_z, ")");
  }

  const v1::Metrics& m = r.metrics();
  if (!m.has_logits_entropy() || !m.has_logits_varentropy()) return absl::StrCat(where, "logits metrics missing");
  const double max_bits = std::log2(static_cast<double>(vocab));
  if (!(std::isfinite(m.logits_entropy()) && m.logits_entropy() >= 0.0f &&
        m.logits_entropy() <= max_bits * (1 + 1e-5) + 1e-5)) {
    return absl::StrCat(where, "logits_entropy ", m.logits_entropy(), " outside [0, log2(", vocab, ")]");
  }
  if (!(std::isfinite(m.logits_varentropy()) && m.logits_varentropy() >= 0.0f)) {
    return absl::StrCat(where, "logits_varentropy ", m.logits_varentropy());
  }
  const bool attention_metrics =
      m.has_attn_entropy() || m.has_attn_varentropy() || m.has_agreement() || m.has_interaction_strength();
  if (attention_metrics) {
    if (!step.has_attention()) return absl::StrCat(where, "attention metrics without attention");
    if (!(m.has_attn_entropy() && m.has_attn_varentropy() && m.has_agreement() && m.has_interaction_strength())) {
      return absl::StrCat(where, "only some attention metrics");
    }
    const int64_t kv_len = step.attention().shape(step.attention().shape_size() - 1);
    const double max_attn_bits = std::log2(static_cast<double>(kv_len));
    if (!(std::isfinite(m.attn_entropy()) && m.attn_entropy() >= 0.0f &&
          m.attn_entropy() <= max_attn_bits * (1 + 1e-5) + 1e-5)) {
      return absl::StrCat(where, "attn_entropy ", m.attn_entropy(), " outside [0, log2(", kv_len, ")]");
    }
    if (!(std::isfinite(m.attn_varentropy()) && m.attn_varentropy() >= 0.0f)) {
      return absl::StrCat(where, "attn_varentropy ", m.attn_varentropy());
    }
    if (!(std::isfinite(m.agreement()) && m.agreement() >= 0.0f && m.agreement() <= 2.0f + 1e-5f)) {
      return absl::StrCat(where, "agreement ", m.agreement());
    }
    if (!(std::isfinite(m.interaction_strength()) && m.interaction_strength() >= 0.0f)) {
      return absl::StrCat(where, "interaction_strength ", m.interaction_strength());
    }
  }

  if (r.has_applied() && r.applied().has_temperature()) {
    const v1::SamplingParams& a = r.applied();
    if (!(std::isfinite(a.temperature()) && a.temperature() >= 0.0f)) {
      return absl::StrCat(where, "applied temperature ", a.temperature());
    }
    if (a.top_k() < 0) return absl::StrCat(where, "applied top_k ", a.top_k());
    if (!(a.top_p() > 0.0f && a.top_p() <= 1.0f)) return absl::StrCat(where, "applied top_p ", a.top_p());
    if (!(a.min_p() >= 0.0f && a.min_p() <= 1.0f)) return absl::StrCat(where, "applied min_p ", a.min_p());
    if (a.n_adaptive_samples() < 1 || a.n_adaptive_samples() > kMaxAdaptiveSamples) {
      return absl::StrCat(where, "applied n_adaptive_samples ", a.n_adaptive_samples());
    }
  }

  // `top` lists tokens of finite logprob only (docs/contract.md): every token whose logprob must be finite (as
  // above) is a candidate, a token whose logit is -inf never is; the ones in between are float's call.
  int64_t surely_finite = 0, not_masked = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    const float x = logits->data[i];
    if (x == -kInf) continue;
    ++not_masked;
    if (static_cast<double>(x) - max_z > -static_cast<double>(FLT_MAX)) ++surely_finite;
  }
  const int64_t least_top = std::min<int64_t>(step.top_logprobs(), surely_finite);
  const int64_t most_top = std::min<int64_t>(step.top_logprobs(), not_masked);
  if (r.top_size() < least_top || r.top_size() > most_top) {
    return absl::StrCat(where, r.top_size(), " top tokens, want ", least_top, " to ", most_top);
  }
  for (int i = 0; i < r.top_size(); ++i) {
    const v1::TokenLogprob& t = r.top(i);
    if (t.token() < 0 || t.token() >= vocab) return absl::StrCat(where, "top token ", t.token(), " out of range");
    if (!std::isfinite(t.logprob()) || t.logprob() > 0.0f) return absl::StrCat(where, "top logprob ", t.logprob());
    if (i > 0 && !(t.logprob() <= r.top(i - 1).logprob())) {
      return absl::StrCat(where, "top logprobs not descending at ", i);
    }
    for (int j = 0; j < i; ++j) {
      if (r.top(j).token() == t.token()) return absl::StrCat(where, "top token ", t.token(), " listed twice");
    }
  }
  return "";
}

// ---------------------------------------------------------------------------------------------------------------
// Kernel target: float64 references of docs/contract.md section 3.

struct LogitsReference {
  double entropy = 0, varentropy = 0;
};

LogitsReference ReferenceLogits(const float* x, int64_t n, float max) {
  double z = 0, s1 = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (x[i] == -kInf) continue;
    const double d = static_cast<double>(x[i]) - max;
    const double e = std::exp(d);
    z += e;
    s1 += e * d;
  }
  const double mean = s1 / z;
  double m2 = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (x[i] == -kInf) continue;
    const double d = static_cast<double>(x[i]) - max;
    m2 += std::exp(d) * (d - mean) * (d - mean);
  }
  LogitsReference ref;
  ref.entropy = (std::log(z) - mean) / std::log(2.0);
  ref.varentropy = m2 / z / (std::log(2.0) * std::log(2.0));
  return ref;
}

std::string CheckLogits(const std::vector<float>& values) {
  const int64_t n = static_cast<int64_t>(values.size());
  const float* x = values.data();
  bool bad = false, all_neg_inf = true;
  float max = -kInf;
  int64_t argmax = 0;
  for (int64_t i = 0; i < n; ++i) {
    bad = bad || Bad(x[i]);
    if (x[i] != -kInf) all_neg_inf = false;
    if (!std::isnan(x[i]) && x[i] > max) {
      max = x[i];
      argmax = i;
    }
  }
  FloatView view;
  view.data = x;
  view.cols = n;
  MetricsScratch scratch;
  absl::StatusOr<LogitsSummary> s = SummarizeLogits(view, &scratch);
  const bool want_error = n == 0 || bad || all_neg_inf;
  if (!s.ok()) {
    if (!want_error) return absl::StrCat("logits n=", n, ": rejected valid logits: ", s.status().ToString());
    const std::string field = ErrorField(s.status());
    if (s.status().code() != absl::StatusCode::kInvalidArgument ||
        (field != "logits.data" && field != "logits.shape")) {
      return absl::StrCat("logits n=", n, ": unclear error: ", s.status().ToString());
    }
    return "";
  }
  if (want_error) return absl::StrCat("logits n=", n, ": accepted (NaN/+inf/all -inf/empty) logits");
  if (s->max_logit != max || s->argmax != argmax) {
    return absl::StrCat("logits n=", n, ": max ", s->max_logit, " at ", s->argmax, ", want ", max, " at ", argmax);
  }
  if (!std::isfinite(s->log_normalizer) || s->log_normalizer < 0) {
    return absl::StrCat("logits n=", n, ": log_normalizer ", s->log_normalizer);
  }
  const LogitsReference ref = ReferenceLogits(x, n, max);
  if (!Near(s->entropy, ref.entropy, 1e-5, 1e-4) || s->entropy < 0) {
    return absl::StrCat("logits n=", n, ": entropy ", s->entropy, ", float64 reference ", ref.entropy);
  }
  if (!Near(s->varentropy, ref.varentropy, 1e-5, 1e-3) || s->varentropy < 0) {
    return absl::StrCat("logits n=", n, ": varentropy ", s->varentropy, ", float64 reference ", ref.varentropy);
  }
  return "";
}

std::string CheckAttention(const std::vector<float>& values, int64_t rows) {
  const int64_t cols = static_cast<int64_t>(values.size()) / rows;
  const float* s = values.data();
  bool bad = false;
  std::vector<uint8_t> used(static_cast<size_t>(rows), 0);
  int64_t used_rows = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < cols; ++k) {
      const float v = s[r * cols + k];
      bad = bad || Bad(v);
      if (v != -kInf) used[static_cast<size_t>(r)] = 1;
    }
    used_rows += used[static_cast<size_t>(r)];
  }
  FloatView view;
  view.data = s;
  view.rows = rows;
  view.cols = cols;
  MetricsScratch scratch;
  absl::StatusOr<std::optional<AttentionMetrics>> a = ComputeAttentionMetrics(view, &scratch);
  const std::string what = absl::StrCat("attention [", rows, ", ", cols, "]: ");
  if (!a.ok()) {
    if (!bad) return absl::StrCat(what, "rejected valid attention: ", a.status().ToString());
    if (a.status().code() != absl::StatusCode::kInvalidArgument || ErrorField(a.status()) != "attention.data") {
      return absl::StrCat(what, "unclear error: ", a.status().ToString());
    }
    return "";
  }
  if (bad) return absl::StrCat(what, "accepted NaN/+inf attention");
  if (used_rows == 0) {
    if (a->has_value()) return absl::StrCat(what, "metrics for attention that is entirely -inf");
    return "";
  }
  if (!a->has_value()) return absl::StrCat(what, "no metrics though ", used_rows, " rows are not all -inf");
  const AttentionMetrics& m = **a;
  if (m.rows_used != used_rows) return absl::StrCat(what, "rows_used ", m.rows_used, ", want ", used_rows);

  // Reference in float64.
  std::vector<double> probs(static_cast<size_t>(rows * cols), 0.0), h;
  std::vector<double> col_mean(static_cast<size_t>(cols), 0.0);
  double abs_sum = 0;
  int64_t finite = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (!used[static_cast<size_t>(r)]) continue;
    const float* row = s + r * cols;
    double mx = -INFINITY;
    for (int64_t k = 0; k < cols; ++k) mx = std::max(mx, static_cast<double>(row[k]));
    double z = 0;
    for (int64_t k = 0; k < cols; ++k) {
      if (row[k] == -kInf) continue;
      z += std::exp(static_cast<double>(row[k]) - mx);
      abs_sum += std::abs(static_cast<double>(row[k]));
      ++finite;
    }
    double hr = 0;
    for (int64_t k = 0; k < cols; ++k) {
      const double p = row[k] == -kInf ? 0.0 : std::exp(static_cast<double>(row[k]) - mx) / z;
      probs[static_cast<size_t>(r * cols + k)] = p;
      col_mean[static_cast<size_t>(k)] += p / static_cast<double>(used_rows);
      hr -= p * std::log2(std::clamp(p, 1e-10, 1.0));
    }
    h.push_back(hr);
  }
  double mean_h = 0;
  for (double v : h) mean_h += v / static_cast<double>(h.size());
  double var_h = 0;
  for (double v : h) var_h += (v - mean_h) * (v - mean_h) / static_cast<double>(h.size());
  double deviation = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (!used[static_cast<size_t>(r)]) continue;
    for (int64_t k = 0; k < cols; ++k) {
      deviation += std::abs(probs[static_cast<size_t>(r * cols + k)] - col_mean[static_cast<size_t>(k)]);
    }
  }
  const double agreement = deviation / (static_cast<double>(used_rows) * static_cast<double>(cols));
  const double interaction = abs_sum / static_cast<double>(finite);

  if (!Near(m.entropy, mean_h, 1e-5, 1e-4)) {
    return absl::StrCat(what, "attn_entropy ", m.entropy, ", float64 reference ", mean_h);
  }
  if (!Near(m.varentropy, var_h, 1e-5, 1e-3)) {
    return absl::StrCat(what, "attn_varentropy ", m.varentropy, ", float64 reference ", var_h);
  }
  if (!Near(m.agreement, agreement, 1e-6, 1e-3) || m.agreement < 0) {
    return absl::StrCat(what, "agreement ", m.agreement, ", float64 reference ", agreement);
  }
  if (!Near(m.interaction_strength, interaction, 0, 1e-5)) {
    return absl::StrCat(what, "interaction_strength ", m.interaction_strength, ", float64 reference ", interaction);
  }
  return "";
}

// Every instruction set finds the same max, argmax, min and first bad index, and (without NaN) the k-th largest
// value that a selection finds.
std::string CheckKernelTablesAgree(const std::vector<float>& values) {
  const int64_t n = static_cast<int64_t>(values.size());
  const std::vector<const kernels::KernelTable*> tables = kernels::AvailableKernels();
  if (n > 0 && std::none_of(values.begin(), values.end(), [](float v) { return std::isnan(v); })) {
    std::vector<int32_t> keys(static_cast<size_t>(kernels::KthLargestKeys(n)));
    for (const int64_t k : {int64_t{1}, (n + 1) / 2, n}) {
      std::vector<float> sorted = values;
      std::nth_element(sorted.begin(), sorted.begin() + (k - 1), sorted.end(), std::greater<float>());
      const float want = sorted[static_cast<size_t>(k - 1)];
      for (const kernels::KernelTable* t : tables) {
        const float got = t->KthLargest(values.data(), n, k, keys.data());
        if (got != want) {
          return absl::StrCat("n=", n, ": ", t->name, " kth_largest k=", k, " gives ", got, ", a selection ", want);
        }
      }
    }
  }
  const kernels::ScanResult first = tables[0]->ScanMax(values.data(), n, nullptr);
  const kernels::RowScan first_row = tables[0]->ScanRow(values.data(), n);
  for (const kernels::KernelTable* t : tables) {
    const kernels::ScanResult s = t->ScanMax(values.data(), n, nullptr);
    if (s.first_bad != first.first_bad ||
        (first.first_bad < 0 && (s.max != first.max || s.argmax != first.argmax || s.min != first.min))) {
      return absl::StrCat("n=", n, ": ", t->name, " scan_max (", s.max, " at ", s.argmax, ", min ", s.min, ", bad at ",
                          s.first_bad, ") differs from ", tables[0]->name, " (", first.max, " at ", first.argmax,
                          ", min ", first.min, ", bad at ", first.first_bad, ")");
    }
    const kernels::RowScan r = t->ScanRow(values.data(), n);
    // With a NaN present the row is rejected and the count is meaningless (SSE2 compares NaN != -inf as true).
    if (r.first_bad != first_row.first_bad || (r.first_bad < 0 && r.finite_count != first_row.finite_count)) {
      return absl::StrCat("n=", n, ": ", t->name, " scan_row (bad at ", r.first_bad, ", ", r.finite_count,
                          " not -inf) differs from ", tables[0]->name, " (bad at ", first_row.first_bad, ", ",
                          first_row.finite_count, ")");
    }
  }
  return "";
}

}  // namespace

const std::vector<float>& SpecialFloats() {
  static const std::vector<float> values = {
      0.0f,
      -0.0f,
      1.0f,
      -1.0f,
      FLT_MAX,
      -FLT_MAX,
      FLT_MIN,
      -FLT_MIN,
      1e-45f,
      -1e-45f,
      1.1754942e-38f /* largest denormal */,
      std::nanf(""),
      kInf,
      -kInf,
      1e30f,
      -1e30f,
      88.72f,
      -87.33f,
      -103.97f,
      -150.0f,
      -151.0f,
      1e-30f,
      3.4e38f,
      -3.4e38f,
      16777216.0f,
      0.5f,
      2564.0f,
      -1e-7f,
      1e10f,
      -1e10f,
  };
  return values;
}

KernelRecipe ReadKernelRecipe(const uint8_t* data, size_t size) {
  ByteReader in(data, size);
  KernelRecipe recipe;
  const uint8_t flags = in.U8();
  recipe.attention = (flags & 1) != 0;
  recipe.count = static_cast<int64_t>(in.U32() % (kMaxKernelElements + 1));
  // Large arrays cost ~50 ms each under ASan: one recipe in four may have one, the others stay <= 4096.
  if ((flags & 6) != 6) recipe.count %= 4097;
  const uint8_t rows = in.U8();
  recipe.rows = recipe.attention ? 1 + rows % 64 : 1;
  recipe.count -= recipe.count % recipe.rows;
  const uint8_t fill = in.U8();
  const uint8_t arg = in.U8();
  const std::vector<float>& special = SpecialFloats();
  std::vector<std::pair<uint32_t, uint8_t>> pokes(in.U8());
  for (auto& [index, value] : pokes) {
    index = in.U32();
    value = in.U8();
  }
  recipe.values.resize(static_cast<size_t>(recipe.count));
  if (recipe.count == 0) return recipe;
  if (fill == 0) {
    const size_t payload = in.rest_size() / sizeof(float);
    if (payload == 0) {
      std::fill(recipe.values.begin(), recipe.values.end(), 0.0f);
    } else {
      for (size_t i = 0; i < recipe.values.size(); ++i) {
        std::memcpy(&recipe.values[i], in.rest() + (i % payload) * sizeof(float), sizeof(float));
      }
    }
  } else if (fill == 1) {
    std::fill(recipe.values.begin(), recipe.values.end(), special[arg % special.size()]);
  } else {
    std::minstd_rand gen(arg + 1);
    std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
    const float scale = std::ldexp(1.0f, static_cast<int>(fill) - 130);
    for (float& v : recipe.values) v = unit(gen) * scale;
  }
  for (const auto& [index, value] : pokes) {
    recipe.values[index % recipe.values.size()] = special[value % special.size()];
  }
  return recipe;
}

std::string EncodeKernelRecipe(bool attention, int64_t rows, const std::vector<float>& values) {
  std::string out;
  out.push_back(attention ? 1 : 0);
  const uint32_t count = static_cast<uint32_t>(values.size());
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((count >> (8 * i)) & 0xff));
  out.push_back(static_cast<char>((rows - 1) % 64));
  out.push_back(0);  // fill: tile the payload
  out.push_back(0);
  out.push_back(0);  // no pokes
  out.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  return out;
}

std::string CheckKernelBytes(const uint8_t* data, size_t size) {
  const KernelRecipe recipe = ReadKernelRecipe(data, size);
  if (std::string f = CheckKernelTablesAgree(recipe.values); !f.empty()) return f;
  if (recipe.attention && recipe.count > 0) return CheckAttention(recipe.values, recipe.rows);
  return CheckLogits(recipe.values);
}

// The unknown fields of `message` and of every message in it, as the parse kept them.
int64_t CountUnknownFields(const google::protobuf::Message& message) {
  const google::protobuf::Reflection& reflection = *message.GetReflection();
  int64_t count = reflection.GetUnknownFields(message).field_count();
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  reflection.ListFields(message, &fields);
  for (const google::protobuf::FieldDescriptor* field : fields) {
    if (field->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) continue;
    if (!field->is_repeated()) {
      count += CountUnknownFields(reflection.GetMessage(message, field));
      continue;
    }
    for (int i = 0; i < reflection.FieldSize(message, field); ++i) {
      count += CountUnknownFields(reflection.GetRepeatedMessage(message, field, i));
    }
  }
  return count;
}

// CheckRequestWire, which the service runs before the parse, against what the parse made of the same bytes.
std::string CheckWireAgreesWithTheParse(const uint8_t* data, size_t size, const v1::SampleRequest& request) {
  const int64_t max_steps = ServerConfig().max_steps_per_request;
  google::protobuf::io::ArrayInputStream wire(data, static_cast<int>(size));
  const absl::Status checked = CheckRequestWire(*v1::SampleRequest::descriptor(), &wire, max_steps);
  if (checked.ok()) {
    if (request.steps_size() > max_steps) {
      return absl::StrCat("the wire check let ", request.steps_size(), " steps through");
    }
    const int64_t unknown = CountUnknownFields(request);
    if (unknown > kMaxUnknownFields + kUnknownFieldsPerStep * request.steps_size()) {
      return absl::StrCat("the wire check let ", unknown, " unknown fields through");
    }
  } else if (request.steps_size() > max_steps &&
             checked != TooManyStepsError(max_steps, absl::StrCat("more than ", max_steps))) {
    return absl::StrCat("over the step limit, the wire check said ", checked.ToString());
  } else if (request.steps_size() <= max_steps && absl::StrContains(checked.message(), "--max_steps_per_request")) {
    return absl::StrCat(request.steps_size(), " steps refused by the wire check: ", checked.ToString());
  }
  return "";
}

std::string CheckRequestBytes(const uint8_t* data, size_t size) {
  v1::SampleRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return "";
  if (std::string f = CheckWireAgreesWithTheParse(data, size, request); !f.empty()) return f;
  const SamplerService& service = Service();
  const bool has_refs = std::any_of(request.steps().begin(), request.steps().end(),
                                    [](const v1::Step& s) { return s.has_logits_ref() || s.has_attention_ref(); });
  if (has_refs) {
    if (std::string f = CheckReferences(&request); !f.empty()) return f;
  }

  SeedTable seeds;
  v1::SampleResponse first;
  const absl::Status status = RunRequest(service, request, &seeds, &first);
  if (!status.ok()) {
    if (status.code() != absl::StatusCode::kResourceExhausted ||
        request.steps_size() <= ServerConfig().max_steps_per_request) {
      return absl::StrCat("a request of ", request.steps_size(), " steps failed: ", status.ToString());
    }
    return "";
  }
  if (first.results_size() != request.steps_size()) {
    return absl::StrCat(first.results_size(), " results for ", request.steps_size(), " steps");
  }
  for (int i = 0; i < request.steps_size(); ++i) {
    if (std::string f = CheckResult(request.steps(i), first.results(i), i); !f.empty()) return f;
  }

  // Replay with the reported seeds, on the warm workspace (one worker): every answer is the same.
  v1::SampleRequest replay = request;
  for (int i = 0; i < replay.steps_size(); ++i) {
    if (!first.results(i).has_error()) replay.mutable_steps(i)->set_seed(first.results(i).seed());
  }
  SeedTable replay_seeds;
  v1::SampleResponse second;
  if (!RunRequest(service, replay, &replay_seeds, &second).ok()) return "the replay failed";
  for (v1::SampleResponse* r : {&first, &second}) {
    for (v1::StepResult& result : *r->mutable_results()) {
      result.clear_server_micros();
      if (result.has_error()) result.clear_seed();
    }
  }
  google::protobuf::util::MessageDifferencer differ;
  std::string diff;
  differ.ReportDifferencesToString(&diff);
  if (!differ.Compare(first, second)) return absl::StrCat("the replay with the reported seeds differs:\n", diff);
  return "";
}

// ---------------------------------------------------------------------------------------------------------------
// Structure-aware mutation.

namespace {

template <class T>
T Pick(std::minstd_rand& rng, std::initializer_list<T> values) {
  return *(values.begin() + rng() % values.size());
}

float SpecialFloat(std::minstd_rand& rng) { return SpecialFloats()[rng() % SpecialFloats().size()]; }

int32_t SpecialInt32(std::minstd_rand& rng, int64_t vocab) {
  vocab = std::clamp<int64_t>(vocab, 0, int64_t{1} << 30);  // no overflow below
  return Pick<int32_t>(rng, {0, 1, -1, 2, 5, 20, 21, 64, 65, 100, 1024, 2564, std::numeric_limits<int32_t>::max(),
                             std::numeric_limits<int32_t>::min(), static_cast<int32_t>(vocab),
                             static_cast<int32_t>(vocab - 1), static_cast<int32_t>(vocab + 1)});
}

int64_t SpecialDim(std::minstd_rand& rng, int64_t current) {
  current = std::clamp<int64_t>(current, -(int64_t{1} << 40), int64_t{1} << 40);  // no overflow below
  return Pick<int64_t>(
      rng, {0, -1, 1, 2, current - 1, current + 1, current * 2, int64_t{1} << 31, int64_t{1} << 32, int64_t{1} << 40,
            int64_t{1} << 62, std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min()});
}

// Writes a special value over element `index` of a tensor in its own dtype.
void PokeTensor(std::minstd_rand& rng, v1::Tensor* t, bool all) {
  std::string* data = t->mutable_data();
  const size_t item = t->dtype() == v1::DTYPE_F32 ? 4 : 2;
  if (data->size() < item) return;
  const float v = SpecialFloat(rng);
  char bytes[4];
  if (item == 4) {
    std::memcpy(bytes, &v, 4);
  } else {
    const uint16_t h = t->dtype() == v1::DTYPE_BF16 ? FloatToBFloat16(v) : FloatToHalf(v);
    std::memcpy(bytes, &h, 2);
  }
  const size_t n = data->size() / item;
  if (all) {
    for (size_t i = 0; i < n; ++i) std::memcpy(data->data() + i * item, bytes, item);
  } else {
    const size_t count = 1 + rng() % 4;
    for (size_t c = 0; c < count; ++c) std::memcpy(data->data() + (rng() % n) * item, bytes, item);
  }
}

void MutateTensor(std::minstd_rand& rng, v1::Tensor* t) {
  switch (rng() % 8) {
    case 0:
    case 1:
      PokeTensor(rng, t, false);
      break;
    case 2:
      PokeTensor(rng, t, true);
      break;
    case 3:
      t->set_dtype(static_cast<v1::DType>(rng() % 5));
      break;
    case 4:
      if (t->shape_size() > 0) {
        const int i = static_cast<int>(rng() % t->shape_size());
        t->set_shape(i, SpecialDim(rng, t->shape(i)));
      }
      break;
    case 5:
      if (rng() % 2 && t->shape_size() > 0) {
        t->mutable_shape()->RemoveLast();
      } else {
        t->add_shape(Pick<int64_t>(rng, {1, 2, 0, -1}));
      }
      break;
    case 6:
      t->mutable_data()->resize(rng() % 2 ? t->data().size() / 2 : t->data().size() + 1 + rng() % 7);
      break;
    default: {
      // A consistent reshape: [n] -> [a, n / a].
      int64_t n = 1;
      for (int64_t d : t->shape()) {
        if (__builtin_mul_overflow(n, d, &n)) n = 0;
      }
      const int64_t a = Pick<int64_t>(rng, {1, 2, 4, 8});
      if (n > 0 && n % a == 0) {
        t->clear_shape();
        t->add_shape(a);
        t->add_shape(n / a);
      }
      break;
    }
  }
}

void MutateParams(std::minstd_rand& rng, v1::SamplingParams* p, int64_t vocab) {
  switch (rng() % 12) {
    case 0:
      p->set_temperature(SpecialFloat(rng));
      break;
    case 1:
      p->set_top_k(SpecialInt32(rng, vocab));
      break;
    case 2:
      p->set_top_p(SpecialFloat(rng));
      break;
    case 3:
      p->set_min_p(SpecialFloat(rng));
      break;
    case 4:
      p->set_repetition_penalty(SpecialFloat(rng));
      break;
    case 5:
      p->set_frequency_penalty(SpecialFloat(rng));
      break;
    case 6:
      p->set_presence_penalty(SpecialFloat(rng));
      break;
    case 7:
      (*p->mutable_logit_bias())[SpecialInt32(rng, vocab)] = SpecialFloat(rng);
      break;
    case 8:
      p->set_n_adaptive_samples(SpecialInt32(rng, vocab));
      break;
    case 9:
      p->set_clarifying_token(SpecialInt32(rng, vocab));
      break;
    case 10:
      p->Clear();
      break;
    default:
      // Valid but extreme values together.
      p->set_temperature(Pick<float>(rng, {FLT_MAX, 1e-45f, 1e30f, 0.0f, 100.0f}));
      p->set_top_k(Pick<int32_t>(rng, {0, 1, std::numeric_limits<int32_t>::max()}));
      p->set_top_p(Pick<float>(rng, {1e-45f, 1.0f, 0.5f}));
      p->set_min_p(Pick<float>(rng, {0.0f, 1.0f, 1e-45f}));
      break;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Shared-memory control target.

// The control socket's world: a registry with a connection's session (owning a sealed copy of the request
// harness's region, the fuzz input's alias "r") and another client's session (its region is alias "f"), and a
// service resolving references in that registry. The connection may register up to kControlRegions - 1 more.
constexpr int kControlRegions = 4;
constexpr int64_t kControlMaxMessageBytes = 64 << 10;  // below kMaxPacketBytes, so both limits are reachable
constexpr char kForeignAlias[] = "f";

struct ControlHarness {
  std::shared_ptr<ShmRegistry> registry;
  std::unique_ptr<SamplerService> service;
  ShmControlServer::Options options;
  std::string session;  // the connection's
  std::string region;   // its region ("r")
  std::string foreign;  // the other client's region ("f")
};

ControlHarness& Control() {
  static ControlHarness* const harness = [] {
    auto* h = new ControlHarness();
    h->registry = std::make_shared<ShmRegistry>(ShmRegistry::Limits{2, kControlRegions, 8 * kShmBytes});
    h->session = *h->registry->OpenSession();
    std::string other = *h->registry->OpenSession();
    for (auto [session, region] : {std::pair{&h->session, &h->region}, std::pair{&other, &h->foreign}}) {
      const int fd = Memfd(Shm().bytes, F_SEAL_SHRINK | F_SEAL_SEAL);
      absl::StatusOr<ShmRegistry::Registered> r = h->registry->Register(*session, fd, "fuzz");
      close(fd);
      if (!r.ok()) {
        std::fprintf(stderr, "fuzz: %s\n", r.status().ToString().c_str());
        std::abort();
      }
      *region = r->region;
    }
    SamplerService::Options options;
    options.config.workers = 1;
    options.profiles = ProfileRegistry::BuiltIn();
    options.shm = h->registry;
    absl::StatusOr<std::unique_ptr<SamplerService>> s = SamplerService::Create(std::move(options));
    if (!s.ok()) {
      std::fprintf(stderr, "fuzz: SamplerService::Create: %s\n", s.status().ToString().c_str());
      std::abort();
    }
    h->service = *std::move(s);
    h->options.registry = h->registry;
    h->options.service = h->service.get();
    h->options.max_message_bytes = kControlMaxMessageBytes;
    return h;
  }();
  return *harness;
}

// Replaces the aliases "r" and "f" of a sample's tensor references by the harness's region ids.
bool ResolveAliases(v1::ShmControlRequest* request) {
  bool changed = false;
  const ControlHarness& h = Control();
  auto resolve = [&](v1::TensorRef* ref) {
    if (ref->region() == kShmAlias || ref->region() == kForeignAlias) {
      ref->set_region(ref->region() == kShmAlias ? h.region : h.foreign);
      changed = true;
    }
  };
  for (v1::Step& step : *request->mutable_sample()->mutable_steps()) {
    if (step.has_logits_ref()) resolve(step.mutable_logits_ref());
    if (step.has_attention_ref()) resolve(step.mutable_attention_ref());
  }
  return changed;
}

// The descriptors a fuzz input's first byte asks to come with the packet.
std::vector<int> ControlFds(uint8_t mode) {
  switch (mode & 7) {
    case 1:
      return {Memfd(std::string(4096, 'x'), F_SEAL_SHRINK | F_SEAL_SEAL)};
    case 2:
      return {Memfd(std::string(4096, 'x'), 0)};
    case 3:
      return {Memfd(std::string(4096, 'x'), F_SEAL_SHRINK | F_SEAL_SEAL), Memfd(std::string(64, 'y'), 0)};
    case 4:
      return {-1};  // ancillary data the kernel truncated
    case 5: {
      int p[2];
      if (pipe2(p, O_CLOEXEC) != 0) std::abort();
      close(p[1]);
      return {p[0]};
    }
    default:
      return {};
  }
}

std::string CheckControlAnswer(const v1::ShmControlRequest& request, bool parsed, size_t length,
                               const std::vector<int>& fds, const v1::ShmControlResponse& response) {
  const ControlHarness& h = Control();
  const auto code = static_cast<absl::StatusCode>(response.code());
  if (response.session() != h.session) return "the answer does not carry the connection's session";
  if (code != absl::StatusCode::kOk) {
    if (response.message().empty()) return absl::StrCat("error code ", response.code(), " without a message");
    if (response.has_sample() || !response.region().empty()) return "an error answer carries a result";
  }
  if (length > ShmControlServer::kMaxPacketBytes) {
    return code == absl::StatusCode::kResourceExhausted ? "" : "an oversized packet is not RESOURCE_EXHAUSTED";
  }
  if (!parsed) return code == absl::StatusCode::kInvalidArgument ? "" : "an unparsable packet is not INVALID_ARGUMENT";
  const bool one_fd = fds.size() == 1 && fds[0] >= 0;
  switch (request.kind_case()) {
    case v1::ShmControlRequest::kRegister:
      if (!one_fd && code != absl::StatusCode::kInvalidArgument) {
        return absl::StrCat("a register packet with ", fds.size(), " usable descriptors is not INVALID_ARGUMENT");
      }
      if (code == absl::StatusCode::kOk && (response.region().empty() || response.size() == 0)) {
        return "a registered region has no id or size";
      }
      return "";
    case v1::ShmControlRequest::kUnregister:
      if (!fds.empty() && code != absl::StatusCode::kInvalidArgument) {
        return "an unregister packet with a descriptor is not INVALID_ARGUMENT";
      }
      // Aliases are not resolved for unregister, and real ids are random: no region here is the connection's.
      return code == absl::StatusCode::kOk ? "an unknown region was unregistered" : "";
    case v1::ShmControlRequest::kSample: {
      if (!fds.empty() && code != absl::StatusCode::kInvalidArgument) {
        return "a sample packet with a descriptor is not INVALID_ARGUMENT";
      }
      if (fds.empty() && static_cast<int64_t>(length) > kControlMaxMessageBytes &&
          code != absl::StatusCode::kResourceExhausted) {
        return "a sample packet over --max_message_bytes is not RESOURCE_EXHAUSTED";
      }
      if (code != absl::StatusCode::kOk) return "";
      const v1::SampleRequest& sample = request.sample();
      if (!response.has_sample() || response.sample().results_size() != sample.steps_size()) {
        return absl::StrCat("a sample of ", sample.steps_size(), " steps got ", response.sample().results_size(),
                            " results");
      }
      for (int i = 0; i < sample.steps_size(); ++i) {
        const v1::Step& step = sample.steps(i);
        const v1::StepResult& r = response.sample().results(i);
        const std::string where = absl::StrCat("step ", i, ": ");
        if (r.sequence_id() != step.sequence_id() || r.step() != step.step()) {
          return absl::StrCat(where, "the result echoes another step");
        }
        if (r.has_error() && (r.error().code() == 0 || r.error().message().empty())) {
          return absl::StrCat(where, "an error without a code or message");
        }
        const bool bad_ref = (step.has_logits_ref() && step.logits_ref().region() != h.region) ||
                             (step.has_attention_ref() && step.attention_ref().region() != h.region);
        if (bad_ref && !r.has_error())
          return absl::StrCat(where, "a reference to an unknown or foreign region was answered");
        if (r.has_error() && absl::StrContains(r.error().field(), "_ref") &&
            r.error().code() != static_cast<int>(absl::StatusCode::kInvalidArgument)) {
          return absl::StrCat(where, "a bad reference is error ", r.error().code(),
                              ", not INVALID_ARGUMENT: ", r.error().message());
        }
      }
      return "";
    }
    default:
      return code == absl::StatusCode::kInvalidArgument ? "" : "a packet naming no operation is not INVALID_ARGUMENT";
  }
}

}  // namespace

void MutateRequest(std::minstd_rand& rng, v1::SampleRequest* request) {
  if (request->steps_size() == 0) {
    request->add_steps();
    return;
  }
  v1::Step* step = request->mutable_steps(static_cast<int>(rng() % request->steps_size()));
  const int64_t vocab = step->logits().shape_size() > 0 ? step->logits().shape(0) : 0;
  switch (rng() % 15) {
    case 0:
    case 1:
    case 2:
      MutateTensor(rng, step->mutable_logits());
      break;
    case 3:
    case 4:
      if (step->has_attention()) {
        MutateTensor(rng, step->mutable_attention());
      } else {
        // Attention of shape [2, k] built from the logits' bytes (so it has the right dtype and length).
        const v1::Tensor& l = step->logits();
        v1::Tensor* a = step->mutable_attention();
        a->set_dtype(l.dtype());
        a->add_shape(1 + rng() % 2);
        a->add_shape(vocab > 0 ? vocab : 1);
        std::string data = l.data();
        if (a->shape(0) == 2) data += l.data();
        a->set_data(data);
      }
      break;
    case 5:
      step->clear_attention();
      break;
    case 6:
    case 7:
    case 8:
      MutateParams(rng, step->mutable_params(), vocab);
      break;
    case 9: {
      const int32_t token = rng() % 2 ? SpecialInt32(rng, vocab) : static_cast<int32_t>(vocab > 0 ? rng() % vocab : 0);
      const int repeat = 1 + static_cast<int>(rng() % 50);
      for (int i = 0; i < repeat; ++i) step->add_recent_tokens(token);
      break;
    }
    case 10:
      step->set_top_logprobs(Pick<int32_t>(rng, {0, 1, 5, 20, 21, -1, std::numeric_limits<int32_t>::max()}));
      break;
    case 11:
      step->set_profile(Pick<const char*>(rng, {"", "entropix", "entropix-frog", "fixed", "nope"}));
      break;
    case 13: {
      // The logits as a reference into the harness's region ("r"): in bounds and aligned, or not.
      v1::TensorRef* ref = step->mutable_logits_ref();
      ref->set_region(rng() % 8 ? kShmAlias : "feedface");
      ref->set_dtype(Pick<v1::DType>(rng, {v1::DTYPE_F32, v1::DTYPE_F16, v1::DTYPE_BF16, static_cast<v1::DType>(7)}));
      ref->clear_shape();
      ref->add_shape(rng() % 8 ? 1 + static_cast<int64_t>(rng() % 60000) : SpecialDim(rng, 1000));
      ref->set_offset(
          rng() % 4 ? 4 * (rng() % 4096)
                    : Pick<uint64_t>(rng, {1, 2, kShmBytes, kShmBytes - 4, std::numeric_limits<uint64_t>::max()}));
      if (rng() % 4) step->clear_logits();
      break;
    }
    case 12:
      step->set_seed(Pick<uint64_t>(rng, {0, 1, std::numeric_limits<uint64_t>::max()}));
      step->set_step(Pick<uint64_t>(rng, {0, 1, std::numeric_limits<uint64_t>::max()}));
      step->set_sequence_id(Pick<const char*>(rng, {"", "a", "b", "seq-0"}));
      break;
    default:
      if (rng() % 2 && request->steps_size() < 8) {
        *request->add_steps() = *step;
      } else if (request->steps_size() > 1) {
        request->mutable_steps()->DeleteSubrange(static_cast<int>(rng() % request->steps_size()), 1);
      }
      break;
  }
}

std::string CheckShmControlBytes(const uint8_t* data, size_t size) {
  ControlHarness& h = Control();
  const uint8_t mode = size > 0 ? data[0] : 0;
  std::string packet = size > 0 ? std::string(reinterpret_cast<const char*>(data) + 1, size - 1) : std::string();
  v1::ShmControlRequest request;
  bool parsed = request.ParseFromString(packet);
  if (parsed && request.has_sample() && ResolveAliases(&request)) parsed = request.SerializeToString(&packet);
  size_t length = packet.size();
  if ((mode & 8) != 0 || length > ShmControlServer::kMaxPacketBytes) length = ShmControlServer::kMaxPacketBytes + 1;
  const std::vector<int> fds = ControlFds(mode);

  ShmControlServer::ConnectionState state;
  state.session = h.session;
  state.authenticated = true;
  v1::ShmControlResponse response;
  packet.resize(std::max(packet.size(), std::min(length, ShmControlServer::kMaxPacketBytes)));
  ShmControlServer::HandlePacket(h.options, &state, packet.data(), length, fds, &response);
  for (int f : fds) {
    if (f >= 0) close(f);
  }
  std::string failure = CheckControlAnswer(request, parsed, length, fds, response);
  if (state.admitted) h.service->ReleaseStream();
  if (response.code() == 0 && !response.region().empty()) {
    if (absl::Status s = h.registry->Unregister(h.session, response.region()); !s.ok() && failure.empty()) {
      failure = absl::StrCat("the region just registered cannot be unregistered: ", s.ToString());
    }
  }
  return failure;
}

void MutateShmControl(std::minstd_rand& rng, uint8_t* mode, v1::ShmControlRequest* request) {
  switch (rng() % 8) {
    case 0:
      *mode = static_cast<uint8_t>(rng() % 16);
      break;
    case 1:
      request->mutable_register_()->set_name(Pick<const char*>(rng, {"", "host-0", "\xff\xfe", "a/b"}));
      break;
    case 2:
      request->mutable_unregister()->set_region(Pick<const char*>(rng, {"", "r", "f", "feedface"}));
      break;
    case 3:
      request->set_authorization(Pick<const char*>(rng, {"", "Bearer x", "Basic y"}));
      break;
    default: {
      MutateRequest(rng, request->mutable_sample());
      // Point a step's references at the connection's region, another client's, or none known.
      v1::SampleRequest* sample = request->mutable_sample();
      if (sample->steps_size() > 0) {
        v1::Step* step = sample->mutable_steps(static_cast<int>(rng() % sample->steps_size()));
        const char* region = Pick<const char*>(rng, {kShmAlias, kShmAlias, kForeignAlias, "0000"});
        if (step->has_logits_ref()) step->mutable_logits_ref()->set_region(region);
        if (step->has_attention_ref()) step->mutable_attention_ref()->set_region(region);
      }
      break;
    }
  }
}

std::vector<std::string> ShmControlSeeds() {
  std::vector<std::string> seeds;
  auto add = [&](uint8_t mode, const v1::ShmControlRequest& request) {
    seeds.push_back(std::string(1, static_cast<char>(mode)) + request.SerializeAsString());
  };
  v1::ShmControlRequest reg;
  reg.mutable_register_()->set_name("host-0");
  add(1, reg);  // a sealed memfd: registered
  add(0, reg);  // none: refused
  add(2, reg);  // unsealed: refused
  v1::ShmControlRequest unreg;
  unreg.mutable_unregister()->set_region("feedface");
  add(0, unreg);
  for (const char* region : {kShmAlias, kForeignAlias, "feedface"}) {
    v1::ShmControlRequest sample;
    v1::Step* step = sample.mutable_sample()->add_steps();
    step->set_sequence_id("s");
    step->set_seed(7);
    v1::TensorRef* logits = step->mutable_logits_ref();
    logits->set_region(region);
    logits->set_dtype(v1::DTYPE_F32);
    logits->add_shape(2048);
    v1::TensorRef* attention = step->mutable_attention_ref();
    attention->set_region(region);
    attention->set_dtype(v1::DTYPE_F32);
    attention->add_shape(4);
    attention->add_shape(64);
    attention->set_offset(8192);
    *sample.mutable_sample()->add_steps() = *step;
    sample.mutable_sample()->mutable_steps(1)->mutable_logits_ref()->set_dtype(v1::DTYPE_BF16);
    add(0, sample);
    if (region == kShmAlias) add(8, sample);  // as if over kMaxPacketBytes
  }
  add(0, v1::ShmControlRequest());                    // no operation
  seeds.push_back(std::string("\0\xff\xff\xff", 4));  // not a message
  return seeds;
}

}  // namespace samplerd::fuzz
