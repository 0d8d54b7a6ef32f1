#include "clients/cpp/calibrate.h"

#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "clients/cpp/record_replay.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"

namespace samplerd::client {
namespace {

constexpr char kRecordingHeader[] = "samplerd-rec-v1\n";
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

StepMetrics FromProto(const v1::Metrics& m) {
  StepMetrics out;
  if (m.has_logits_entropy()) out.logits_entropy = m.logits_entropy();
  if (m.has_logits_varentropy()) out.logits_varentropy = m.logits_varentropy();
  if (m.has_attn_entropy()) out.attn_entropy = m.attn_entropy();
  if (m.has_attn_varentropy()) out.attn_varentropy = m.attn_varentropy();
  if (m.has_agreement()) out.agreement = m.agreement();
  if (m.has_interaction_strength()) out.interaction_strength = m.interaction_strength();
  return out;
}

absl::StatusOr<std::vector<StepMetrics>> ReadJsonLines(const std::string& path, std::ifstream& in) {
  std::vector<StepMetrics> steps;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json obj = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (obj.is_discarded() || !obj.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", n, ": not a JSON object"));
    }
    if (obj.value("kind", "") != "step") continue;
    StepMetrics m;
    const auto metrics = obj.find("metrics");
    if (metrics != obj.end() && metrics->is_object()) {
      auto get = [&](const char* name, std::optional<double>* out) -> absl::Status {
        const auto v = metrics->find(name);
        if (v == metrics->end() || v->is_null()) return absl::OkStatus();
        if (!v->is_number()) {
          return absl::InvalidArgumentError(absl::StrCat(path, ":", n, ": metrics.", name, " is not a number"));
        }
        *out = v->get<double>();
        return absl::OkStatus();
      };
      for (auto [name, field] : {std::pair{"logits_entropy", &m.logits_entropy},
                                 {"logits_varentropy", &m.logits_varentropy},
                                 {"attn_entropy", &m.attn_entropy},
                                 {"attn_varentropy", &m.attn_varentropy},
                                 {"agreement", &m.agreement},
                                 {"interaction_strength", &m.interaction_strength}}) {
        if (absl::Status s = get(name, field); !s.ok()) return s;
      }
    }
    steps.push_back(m);
  }
  return steps;
}

}  // namespace

absl::StatusOr<std::vector<StepMetrics>> ReadRecordMetrics(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot be read"));
  std::string head(sizeof(kRecordingHeader) - 1, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<size_t>(in.gcount()));
  if (head == kRecordingHeader) {
    absl::StatusOr<std::vector<Exchange>> recording = ReadRecording(path);
    if (!recording.ok()) return recording.status();
    std::vector<StepMetrics> steps;
    for (const auto& [request, response] : *recording) {
      for (const v1::StepResult& r : response.results()) {
        if (!r.has_error()) steps.push_back(FromProto(r.metrics()));
      }
    }
    return steps;
  }
  in.clear();
  in.seekg(0);
  return ReadJsonLines(path, in);
}

int RunCalibrate(const CalibrateOptions& options) {
  std::vector<StepMetrics> steps;
  for (const std::string& path : options.from) {
    absl::StatusOr<std::vector<StepMetrics>> more = ReadRecordMetrics(path);
    if (!more.ok()) {
      absl::FPrintF(stderr, "samplerctl calibrate: %s\n", more.status().message());
      return kExitUsage;
    }
    steps.insert(steps.end(), more->begin(), more->end());
  }
  absl::StatusOr<Calibration> c = Calibrate(steps, options.calibration);
  if (!c.ok()) {
    absl::FPrintF(stderr, "samplerctl calibrate: %s\n", c.status().message());
    return kExitUsage;
  }
  google::protobuf::util::JsonPrintOptions print;
  print.add_whitespace = true;
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(c->profile_set, &json, print);
  if (options.out == "-") {
    absl::PrintF("%s", json);
  } else {
    std::ofstream out(options.out, std::ios::trunc);
    out << json;
    out.close();
    if (!out) {
      absl::FPrintF(stderr, "samplerctl calibrate: %s: cannot be written\n", options.out);
      return kExitFailure;
    }
  }
  // The report goes to stderr, so that `--out -` stays a clean config.
  absl::FPrintF(stderr, "calibrated profile \"%s\" from %d steps (%d with attention, %d without metrics skipped)\n",
                options.calibration.name, c->steps, c->attention_steps, c->steps_without_metrics);
  for (const CalibratedBound& b : c->bounds) {
    absl::FPrintF(stderr, "  %-16s %-27s %s %-9g -> %-12.6g (quantile %.3g)\n", v1::Regime_Name(b.regime),
                  v1::Metric_Name(b.metric), b.op == v1::OP_LT ? "<" : ">", b.base_value, b.value, b.quantile);
  }
  absl::FPrintF(stderr, "  ADAPTIVE temperature over the steps: %.4g .. %.4g (coefficients x %.4g)\n",
                c->adaptive_temperature_min, c->adaptive_temperature_max, c->temperature_scale);
  if (options.out != "-") absl::FPrintF(stderr, "wrote %s\n", options.out);
  return 0;
}

}  // namespace samplerd::client
