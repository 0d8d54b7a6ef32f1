// The C++ conformance driver: sends tests/conformance/requests.json through the C++ client library
// (samplerd::client, clients/cpp) and writes one record per answered step in the suite's canonical format
// (tests/conformance/README.md).
//
//   samplerd_conformance_cpp --target 127.0.0.1:50051 --requests tests/conformance/requests.json
//       --golden tests/golden --out cpp.txt
//
// float32 golden requests go through `Session::Step`. The library's Session sends float32 only and one sequence
// per stream, so the bfloat16 golden requests and the batched float32/float16/bfloat16 generation are built
// here and sent with `Client::SampleOnce`, keeping each sequence's state (step, seed, recent tokens) the way a
// Session does.
//
// With `--shm SOCKET` (the server's --shm_socket; --target then a unix: address of the same server) every request
// goes over the shared-memory plane: the client's channel carries an interceptor that moves each SampleRequest's
// tensors into a region with ReferenceTensors (malformed tensors stay inline) and adds the session metadata. The
// driver sends one request at a time, so each request may reuse the region from byte 0.
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "clients/cpp/samplerd_client.h"
#include "clients/cpp/shm_plane.h"
#include "grpcpp/support/client_interceptor.h"
#include "nlohmann/json.hpp"

namespace {

namespace v1 = samplerd::v1;
using nlohmann::json;

// Every client of the suite sends this many recent tokens (their common default).
constexpr size_t kMaxRecent = 1024;

struct Array {
  std::vector<float> data;
  std::vector<int64_t> shape;
};

Array ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() < 10 || static_cast<unsigned char>(bytes[0]) != 0x93 || bytes.compare(1, 5, "NUMPY") != 0) {
    throw std::runtime_error(path + ": not a .npy file");
  }
  const int major = bytes[6];
  const size_t start = major == 1 ? 10 : 12;
  uint32_t header_len = 0;
  std::memcpy(&header_len, bytes.data() + 8, major == 1 ? 2 : 4);
  const std::string header = bytes.substr(start, header_len);
  std::smatch m;
  if (header.find("'descr': '<f4'") == std::string::npos ||
      header.find("'fortran_order': False") == std::string::npos ||
      !std::regex_search(header, m, std::regex(R"('shape':\s*\(([^)]*)\))"))) {
    throw std::runtime_error(path + ": expected little-endian float32 in C order, header " + header);
  }
  Array a;
  std::stringstream dims(m[1].str());
  std::string d;
  size_t n = 1;
  while (std::getline(dims, d, ',')) {
    if (d.find_first_not_of(" ") == std::string::npos) continue;
    a.shape.push_back(std::stoll(d));
    n *= static_cast<size_t>(a.shape.back());
  }
  a.data.resize(n);
  std::memcpy(a.data.data(), bytes.data() + start + header_len, 4 * n);
  return a;
}

// The scripted model (README.md, "The scripted generation").
uint32_t Fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

struct StepInputs {
  Array logits, attention;
};

StepInputs ScriptedStep(const json& gen, uint32_t salt, int t, int32_t prev) {
  static constexpr int32_t kPeaks[4] = {0, 40, 80, 127};
  const int vocab = gen["vocab"], layers = gen["layers"], heads = gen["heads"], kv_base = gen["kv_base"];
  const uint32_t key = Fmix32(salt ^ Fmix32(static_cast<uint32_t>(t) * 0x9e3779b1u + static_cast<uint32_t>(prev)));
  const float scale = std::ldexp(1.0f, -static_cast<int>(key % 7));
  std::vector<int32_t> k(vocab);
  for (int i = 0; i < vocab; ++i)
    k[i] = static_cast<int32_t>(Fmix32(key ^ (static_cast<uint32_t>(i) * 0x27d4eb2du)) % 128) - 64;
  k[(prev * 31 + 7 + t) % vocab] = kPeaks[(key >> 8) % 4];
  if (key % 13 == 0) std::fill(k.begin(), k.end(), 0);
  StepInputs x;
  x.logits.shape = {vocab};
  for (int32_t v : k) x.logits.data.push_back(static_cast<float>(v) * scale);

  const int kv = kv_base + t;
  const uint32_t akey = Fmix32(key ^ 0xa77eu);
  const float ascale = std::ldexp(1.0f, -static_cast<int>(akey % 5));
  x.attention.shape = {layers, heads, kv};
  for (int j = 0; j < layers * heads * kv; ++j) {
    const uint32_t h = Fmix32(akey ^ (static_cast<uint32_t>(j) * 0x165667b1u));
    x.attention.data.push_back((h >> 24) % 23 == 0 ? -INFINITY
                                                   : static_cast<float>(static_cast<int32_t>(h % 128) - 64) * ascale);
  }
  return x;
}

uint32_t Bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return b;
}

// float32 -> float16 / bfloat16 bit patterns for values those types hold exactly (the suite never rounds).
uint16_t F16Bits(float v) {
  const uint32_t b = Bits(v);
  const uint16_t sign = (b >> 16) & 0x8000;
  const int exp = (b >> 23) & 0xff;
  const uint32_t mant = b & 0x7fffff;
  if (exp == 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  if (exp == 0 && mant == 0) return sign;
  const int e = exp - 127 + 15;
  if (e < 1 || e > 30 || (mant & 0x1fff) != 0) throw std::runtime_error("value not exact in float16");
  return static_cast<uint16_t>(sign | (e << 10) | (mant >> 13));
}

uint16_t BF16Bits(float v) {
  const uint32_t b = Bits(v);
  if (b & 0xffff) throw std::runtime_error("value not exact in bfloat16");
  return static_cast<uint16_t>(b >> 16);
}

void FillTensor(const Array& a, const std::string& dtype, v1::Tensor* t) {
  if (dtype == "f32") {
    samplerd::client::FillF32Tensor(a.data, a.shape, t);
    return;
  }
  std::vector<uint16_t> bits(a.data.size());
  for (size_t i = 0; i < bits.size(); ++i) bits[i] = dtype == "f16" ? F16Bits(a.data[i]) : BF16Bits(a.data[i]);
  t->set_dtype(dtype == "f16" ? v1::DTYPE_F16 : v1::DTYPE_BF16);
  t->mutable_shape()->Assign(a.shape.begin(), a.shape.end());
  t->set_data(bits.data(), 2 * bits.size());
}

std::optional<v1::SamplingParams> ToParams(const json& p) {
  if (p.is_null()) return std::nullopt;
  v1::SamplingParams out;
  for (const auto& [k, v] : p.items()) {
    if (k == "temperature")
      out.set_temperature(v.get<float>());
    else if (k == "top_k")
      out.set_top_k(v.get<int32_t>());
    else if (k == "top_p")
      out.set_top_p(v.get<float>());
    else if (k == "min_p")
      out.set_min_p(v.get<float>());
    else if (k == "repetition_penalty")
      out.set_repetition_penalty(v.get<float>());
    else if (k == "frequency_penalty")
      out.set_frequency_penalty(v.get<float>());
    else if (k == "presence_penalty")
      out.set_presence_penalty(v.get<float>());
    else if (k == "n_adaptive_samples")
      out.set_n_adaptive_samples(v.get<int32_t>());
    else if (k == "clarifying_token")
      out.set_clarifying_token(v.get<int32_t>());
    else
      throw std::runtime_error("unknown parameter " + k);
  }
  return out;
}

std::string Hex(bool has, float v) {
  if (!has) return "-";
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08x", Bits(v));
  return buf;
}

std::string Int(bool has, int64_t v) { return has ? std::to_string(v) : "-"; }

// The canonical record of a StepResult message (what the server answered, field by field).
std::string Record(const std::string& id, const v1::StepResult& r) {
  if (r.has_error()) {
    return id + " step=" + std::to_string(r.step()) + " error=" + std::to_string(r.error().code()) +
           " field=" + r.error().field();
  }
  const auto& a = r.applied();
  const auto& m = r.metrics();
  std::string regime = v1::Regime_Name(r.regime());
  regime = regime.substr(std::strlen("REGIME_"));
  std::ostringstream o;
  o << id << " step=" << r.step() << " token=" << r.token() << " regime=" << regime
    << " logprob=" << Hex(true, r.logprob()) << " applied=" << Hex(a.has_temperature(), a.temperature()) << ","
    << Int(a.has_top_k(), a.top_k()) << "," << Hex(a.has_top_p(), a.top_p()) << "," << Hex(a.has_min_p(), a.min_p())
    << "," << Hex(a.has_repetition_penalty(), a.repetition_penalty()) << ","
    << Hex(a.has_frequency_penalty(), a.frequency_penalty()) << ","
    << Hex(a.has_presence_penalty(), a.presence_penalty()) << ","
    << Int(a.has_n_adaptive_samples(), a.n_adaptive_samples()) << ","
    << Int(a.has_clarifying_token(), a.clarifying_token())
    << " metrics=" << Hex(m.has_logits_entropy(), m.logits_entropy()) << ","
    << Hex(m.has_logits_varentropy(), m.logits_varentropy()) << "," << Hex(m.has_attn_entropy(), m.attn_entropy())
    << "," << Hex(m.has_attn_varentropy(), m.attn_varentropy()) << "," << Hex(m.has_agreement(), m.agreement()) << ","
    << Hex(m.has_interaction_strength(), m.interaction_strength()) << " top=";
  for (int i = 0; i < r.top_size(); ++i) {
    o << (i ? "," : "") << r.top(i).token() << ":" << Hex(true, r.top(i).logprob());
  }
  o << " seed=" << r.seed() << " profile=" << r.profile();
  return o.str();
}

// The same record from the library's StepResult (the Session path).
std::string Record(const std::string& id, const samplerd::client::StepResult& s, const std::string& sequence_id) {
  v1::StepResult r;
  r.set_sequence_id(sequence_id);
  r.set_step(s.step);
  r.set_token(s.token);
  r.set_logprob(s.logprob);
  r.set_regime(s.regime);
  *r.mutable_applied() = s.applied;
  *r.mutable_metrics() = s.metrics;
  for (const auto& [token, logprob] : s.top) {
    auto* t = r.add_top();
    t->set_token(token);
    t->set_logprob(logprob);
  }
  r.set_seed(s.seed);
  r.set_profile(s.profile);
  return Record(id, r);
}

// How many tensors went by reference, and how many requests could not be referenced and went as bytes.
struct ShmCounts {
  std::atomic<int> references{0};
  std::atomic<int> as_bytes{0};
};

// Rewrites the SampleRequests of one call (Sample or SampleOnce) into references to `plane`, counting them.
class ShmInterceptor : public grpc::experimental::Interceptor {
 public:
  ShmInterceptor(const samplerd::client::ShmPlane* plane, ShmCounts* counts, bool sample)
      : plane_(plane), counts_(counts), sample_(sample) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (sample_ && methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace(samplerd::client::kShmSessionMetadata, plane_->session());
    }
    if (sample_ && methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      auto request = std::make_unique<v1::SampleRequest>();
      if (const void* message = methods->GetSendMessage(); message != nullptr) {
        *request = *static_cast<const v1::SampleRequest*>(message);
      } else {  // already serialized (the async API serializes early)
        std::vector<grpc::Slice> slices;
        (void)methods->GetSerializedSendMessage()->Dump(&slices);
        std::string wire;
        for (const grpc::Slice& slice : slices) wire.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
        if (!request->ParseFromString(wire)) request.reset();
      }
      // A request that cannot be referenced goes as bytes and the driver fails at the end (no exception may
      // cross gRPC's code).
      if (request == nullptr || !samplerd::client::ReferenceTensors(*plane_, request.get()).ok()) {
        ++counts_->as_bytes;
        methods->Proceed();
        return;
      }
      for (const v1::Step& st : request->steps()) counts_->references += st.has_logits_ref() + st.has_attention_ref();
      sent_ = std::move(request);  // alive until serialized: the next message of the call comes after this one's answer
      methods->ModifySendMessage(sent_.get());
    }
    methods->Proceed();
  }

 private:
  const samplerd::client::ShmPlane* plane_;
  ShmCounts* counts_;
  const bool sample_;
  std::unique_ptr<v1::SampleRequest> sent_;
};

class ShmInterceptorFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  ShmInterceptorFactory(const samplerd::client::ShmPlane* plane, ShmCounts* counts) : plane_(plane), counts_(counts) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo* info) override {
    const std::string method = info->method();
    return new ShmInterceptor(plane_, counts_,
                              method == "/samplerd.v1.Sampler/Sample" || method == "/samplerd.v1.Sampler/SampleOnce");
  }

 private:
  const samplerd::client::ShmPlane* plane_;
  ShmCounts* counts_;
};

struct Sequence {
  std::string id;
  std::string profile;
  uint64_t seed = 0;
  uint32_t salt = 0;
  std::optional<v1::SamplingParams> params;
  std::vector<int32_t> recent;
  uint64_t step = 0;
  int32_t prev = 0;
};

int Run(const std::map<std::string, std::string>& args) {
  std::ifstream in(args.at("requests"));
  const json doc = json::parse(in);
  const std::string golden_dir = args.at("golden");
  // With --shm, the client's channel sends every request's tensors by reference.
  std::unique_ptr<samplerd::client::ShmPlane> plane;
  ShmCounts counts;
  std::unique_ptr<samplerd::client::Client> client_holder;
  if (args.count("shm")) {
    absl::StatusOr<std::unique_ptr<samplerd::client::ShmPlane>> p =
        samplerd::client::ShmPlane::Connect(args.at("shm"), 64 << 20, "conformance-cpp");
    if (!p.ok()) throw std::runtime_error(p.status().ToString());
    plane = std::move(*p);
    std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> factories;
    factories.push_back(std::make_unique<ShmInterceptorFactory>(plane.get(), &counts));
    grpc::ChannelArguments channel_args;
    channel_args.SetMaxReceiveMessageSize(64 << 20);
    channel_args.SetMaxSendMessageSize(64 << 20);
    client_holder = std::make_unique<samplerd::client::Client>(grpc::experimental::CreateCustomChannelWithInterceptors(
        args.at("target"), grpc::InsecureChannelCredentials(), channel_args, std::move(factories)));
  } else {
    client_holder = std::make_unique<samplerd::client::Client>(args.at("target"));
  }
  samplerd::client::Client& client = *client_holder;
  std::vector<std::string> lines;
  std::map<std::string, Array> cache;
  auto load = [&](const std::string& f) -> const Array& {
    auto it = cache.find(f);
    if (it == cache.end()) it = cache.emplace(f, ReadNpy(golden_dir + "/" + f)).first;
    return it->second;
  };

  for (const json& g : doc["golden"]) {
    const std::string id = g["id"];
    const std::string dtype = g["dtype"];
    const Array& logits = load(g["logits"]);
    const Array* attention = g["attention"].is_null() ? nullptr : &load(g["attention"]);
    const uint64_t seed = std::stoull(g["seed"].get<std::string>());
    const std::vector<int32_t> recent = g["recent_tokens"];
    samplerd::client::StepOptions step_options;
    step_options.top_logprobs = g["top_logprobs"];
    step_options.params = ToParams(g["params"]);
    if (dtype == "f32") {
      samplerd::client::SessionOptions o;
      o.sequence_id = id;
      o.profile = g["profile"];
      o.seed = seed;
      o.prompt_tail = recent;
      o.max_recent_tokens = kMaxRecent;
      std::unique_ptr<samplerd::client::Session> session = client.OpenSession(o);
      std::optional<samplerd::client::TensorRef> att;
      if (attention) att = samplerd::client::TensorRef(attention->data, attention->shape);
      absl::StatusOr<samplerd::client::StepResult> r = session->Step(logits.data, att, step_options);
      if (r.ok()) {
        lines.push_back(Record(id, *r, id));
      } else if (r.status().code() == absl::StatusCode::kInvalidArgument) {
        // A rejected step: the library reports the server's code and "field: message".
        const std::string msg(r.status().message());
        lines.push_back(id + " step=0 error=" + std::to_string(static_cast<int>(r.status().code())) +
                        " field=" + msg.substr(0, msg.find(':')));
      } else {
        std::cerr << id << ": " << r.status() << "\n";
        return 1;
      }
      (void)session->Close();
      continue;
    }
    v1::SampleRequest req;
    v1::Step* st = req.add_steps();
    st->set_sequence_id(id);
    st->set_step(0);
    FillTensor(logits, dtype, st->mutable_logits());
    if (attention) FillTensor(*attention, dtype, st->mutable_attention());
    st->mutable_recent_tokens()->Assign(recent.begin(), recent.end());
    if (step_options.params) *st->mutable_params() = *step_options.params;
    st->set_profile(g["profile"].get<std::string>());
    st->set_seed(seed);
    st->set_top_logprobs(step_options.top_logprobs);
    absl::StatusOr<v1::SampleResponse> resp = client.SampleOnce(req);
    if (!resp.ok() || resp->results_size() != 1) {
      std::cerr << id << ": " << resp.status() << "\n";
      return 1;
    }
    lines.push_back(Record(id, resp->results(0)));
  }

  const json& gen = doc["generation"];
  std::vector<Sequence> seqs;
  for (const json& q : gen["sequences"]) {
    Sequence s;
    s.id = q["id"];
    s.profile = q["profile"];
    s.seed = std::stoull(q["seed"].get<std::string>());
    s.salt = q["salt"];
    s.params = ToParams(q["params"]);
    s.recent = q["prompt"].get<std::vector<int32_t>>();
    s.prev = s.recent.back();
    seqs.push_back(std::move(s));
  }
  const std::vector<std::string> dtypes = gen["dtypes"];
  for (int t = 0; t < gen["steps"].get<int>(); ++t) {
    const std::string& dtype = dtypes[t % dtypes.size()];
    v1::SampleRequest req;
    for (const Sequence& s : seqs) {
      const StepInputs x = ScriptedStep(gen, s.salt, t, s.prev);
      v1::Step* st = req.add_steps();
      st->set_sequence_id(s.id);
      st->set_step(s.step);
      FillTensor(x.logits, dtype, st->mutable_logits());
      FillTensor(x.attention, dtype, st->mutable_attention());
      st->mutable_recent_tokens()->Assign(s.recent.begin(), s.recent.end());
      if (s.params) *st->mutable_params() = *s.params;
      st->set_profile(s.profile);
      st->set_seed(s.seed);
    }
    absl::StatusOr<v1::SampleResponse> resp = client.SampleOnce(req);
    if (!resp.ok() || resp->results_size() != static_cast<int>(seqs.size())) {
      std::cerr << "generation step " << t << ": " << resp.status() << "\n";
      return 1;
    }
    for (size_t i = 0; i < seqs.size(); ++i) {
      const v1::StepResult& r = resp->results(static_cast<int>(i));
      Sequence& s = seqs[i];
      if (r.has_error() || r.sequence_id() != s.id || r.step() != s.step) {
        std::cerr << "generation step " << t << ": " << r.ShortDebugString() << "\n";
        return 1;
      }
      lines.push_back(Record(s.id, r));
      if (s.seed == 0) s.seed = r.seed();
      ++s.step;
      s.prev = r.token();
      s.recent.push_back(r.token());
      if (s.recent.size() > kMaxRecent) s.recent.erase(s.recent.begin());
    }
  }
  if (plane != nullptr) {
    // A driver that silently sent bytes would prove nothing about the plane.
    if (counts.references == 0 || counts.as_bytes > 0) {
      throw std::runtime_error(absl::StrCat(counts.references.load(), " tensors sent by reference, ",
                                            counts.as_bytes.load(), " requests as bytes"));
    }
    std::cerr << "cpp: " << counts.references << " tensors sent by reference\n";
  }
  std::ofstream out(args.at("out"));
  for (const std::string& l : lines) out << l << "\n";
  return out.good() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> args;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k.rfind("--", 0) == 0) args[k.substr(2)] = argv[i + 1];
  }
  for (const char* k : {"target", "requests", "golden", "out"}) {
    if (!args.count(k)) {
      std::cerr
          << "usage: samplerd_conformance_cpp --target ADDR --requests FILE --golden DIR --out FILE [--shm SOCKET]\n";
      return 2;
    }
  }
  try {
    return Run(args);
  } catch (const std::exception& e) {
    std::cerr << "samplerd_conformance_cpp: " << e.what() << "\n";
    return 1;
  }
}
