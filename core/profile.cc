#include "core/profile.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "core/field_error.h"
#include "core/small_file.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"

namespace samplerd {
namespace {

// The reference value of every coefficient (golden/cases.json, the entropix profile), in the proto's text format.
constexpr char kReferenceCoefficients[] = R"pb(
  clarify_temperature_offset: 1.3
  clarify_temperature_attn_entropy: 0.2
  clarify_temperature_max: 1.5
  explore_temperature_offset: 1.2
  explore_temperature_interaction_strength: 0.3
  explore_temperature_max: 1.5
  explore_top_k_agreement: 0.5
  explore_top_k_min: 5
  resample_temperature_offset: 2.0
  resample_temperature_attn_varentropy: 0.5
  resample_temperature_min: 2.0
  resample_top_p_attn_entropy: 0.2
  resample_top_p_min: 0.5
  adaptive_temperature_logits_entropy: 0.3
  adaptive_temperature_logits_varentropy: 0.3
  adaptive_temperature_attn_entropy: 0.2
  adaptive_temperature_attn_varentropy: 0.2
  adaptive_temperature_agreement: 0.2
  adaptive_top_p_attn_varentropy: 0.1
  adaptive_top_p_min: 0.1
  adaptive_top_p_max: 1.0
  adaptive_top_k_interaction_strength: 0.3
  adaptive_top_k_agreement: 0.2
  adaptive_top_k_min: 1
  adaptive_top_k_max: 100
  adaptive_min_p_logits_entropy: 0.5
  adaptive_min_p_logits_varentropy: 0.5
  adaptive_min_p_min: 0.01
  adaptive_min_p_max: 0.5
)pb";

// The reference profiles (golden/cases.json "profiles"), in the config file format.
constexpr char kBuiltInJson[] = R"json({
  "defaultProfile": "entropix",
  "profiles": [
    {
      "name": "entropix",
      "description": "Entropix V2 (torch sampler on main): logits-only decision tree, reference formulas for each regime's parameters",
      "params": {"temperature": 0.666, "topK": 27, "topP": 0.9, "minP": 0.03,
                 "nAdaptiveSamples": 5, "clarifyingToken": 2564},
      "regimes": [
        {"regime": "REGIME_ARGMAX", "bounds": [
          {"metric": "METRIC_LOGITS_ENTROPY", "op": "OP_LT", "value": 0.1},
          {"metric": "METRIC_LOGITS_VARENTROPY", "op": "OP_LT", "value": 0.1}]},
        {"regime": "REGIME_CLARIFY", "bounds": [
          {"metric": "METRIC_LOGITS_ENTROPY", "op": "OP_GT", "value": 3.0},
          {"metric": "METRIC_LOGITS_VARENTROPY", "op": "OP_LT", "value": 0.1}]},
        {"regime": "REGIME_EXPLORE", "bounds": [
          {"metric": "METRIC_LOGITS_ENTROPY", "op": "OP_LT", "value": 5.0},
          {"metric": "METRIC_LOGITS_VARENTROPY", "op": "OP_GT", "value": 5.0}]},
        {"regime": "REGIME_RESAMPLE", "bounds": [
          {"metric": "METRIC_LOGITS_ENTROPY", "op": "OP_GT", "value": 5.0},
          {"metric": "METRIC_LOGITS_VARENTROPY", "op": "OP_GT", "value": 5.0}]}
      ],
      "defaultRegime": "REGIME_ADAPTIVE"
    },
    {
      "name": "entropix-frog",
      "description": "Entropix 'frog' variant: six-metric conditions; ADAPTIVE temperature from entropies only, min_p from varentropy only",
      "params": {"temperature": 0.666, "topK": 27, "topP": 0.9, "minP": 0.03,
                 "nAdaptiveSamples": 5, "clarifyingToken": 2564},
      "regimes": [
        {"regime": "REGIME_ARGMAX", "bounds": [
          {"metric": "METRIC_LOGITS_ENTROPY", "op": "OP_LT", "value": 0.01},
          {"metric": "METRIC_LOGITS_VARENTROPY", "op": "OP_LT", "value": 0.05},
          {"metric": "METRIC_ATTN_ENTROPY", "op": "OP_LT", "value": 11.915},
          {"metric": "METRIC_ATTN_VARENTROPY", "op": "OP_LT", "value": 0.001},
          {"metric": "METRIC_AGREEMENT", "op": "OP_LT", "value": 2e-06},
          {"metric": "METRIC_INTERACTION_STRENGTH", "op": "OP_LT", "value": 0.2}]},
        {"regime": "REGIME_CLARIFY", "bounds": [
          {"metric": "METRIC_LOGITS_ENTROPY", "op": "OP_GT", "value": 2.1},
          {"metric": "METRIC_LOGITS_VARENTROPY", "op": "OP_LT", "value": 0.05},
          {"metric": "METRIC_ATTN_ENTROPY", "op": "OP_LT", "value": 11.915},
          {"metric": "METRIC_ATTN_VARENTROPY", "op": "OP_LT", "value": 0.001},
          {"metric": "METRIC_AGREEMENT", "op": "OP_LT", "value": 2e-06},
          {"metric": "METRIC_INTERACTION_STRENGTH", "op": "OP_LT", "value": 0.2}]},
        {"regime": "REGIME_EXPLORE", "bounds": [
          {"metric": "METRIC_LOGITS_ENTROPY", "op": "OP_LT", "value": 2.1},
          {"metric": "METRIC_LOGITS_VARENTROPY", "op": "OP_GT", "value": 5.8},
          {"metric": "METRIC_ATTN_ENTROPY", "op": "OP_LT", "value": 11.915},
          {"metric": "METRIC_ATTN_VARENTROPY", "op": "OP_GT", "value": 0.009},
          {"metric": "METRIC_AGREEMENT", "op": "OP_LT", "value": 2e-06},
          {"metric": "METRIC_INTERACTION_STRENGTH", "op": "OP_GT", "value": 0.2}]},
        {"regime": "REGIME_RESAMPLE", "bounds": [
          {"metric": "METRIC_LOGITS_ENTROPY", "op": "OP_GT", "value": 0.7},
          {"metric": "METRIC_LOGITS_VARENTROPY", "op": "OP_GT", "value": 5.8},
          {"metric": "METRIC_ATTN_ENTROPY", "op": "OP_GT", "value": 11.926},
          {"metric": "METRIC_ATTN_VARENTROPY", "op": "OP_GT", "value": 0.009},
          {"metric": "METRIC_AGREEMENT", "op": "OP_GT", "value": 5e-06},
          {"metric": "METRIC_INTERACTION_STRENGTH", "op": "OP_GT", "value": 0.264}]}
      ],
      "defaultRegime": "REGIME_ADAPTIVE",
      "coefficients": {"adaptiveTemperatureLogitsVarentropy": 0.0, "adaptiveTemperatureAttnVarentropy": 0.0,
                       "adaptiveMinPLogitsEntropy": 0.0}
    },
    {
      "name": "fixed",
      "description": "no adaptation: every step is REGIME_FIXED and uses the profile's (or the request's) parameters",
      "params": {"temperature": 0.666, "topK": 27, "topP": 0.9, "minP": 0.03,
                 "nAdaptiveSamples": 1, "clarifyingToken": 2564},
      "defaultRegime": "REGIME_FIXED"
    }
  ]
})json";

std::string Field(absl::string_view prefix, absl::string_view name) {
  return prefix.empty() ? std::string(name) : absl::StrCat(prefix, ".", name);
}

bool IsDecidingRegime(v1::Regime r) {
  return r == v1::REGIME_ARGMAX || r == v1::REGIME_CLARIFY || r == v1::REGIME_EXPLORE || r == v1::REGIME_RESAMPLE ||
         r == v1::REGIME_ADAPTIVE || r == v1::REGIME_FIXED;
}

// No field of ProfileSet is a list of lists, yet protobuf 3.21's JSON parser flattens an array inside an array into
// the repeated field around it: {"profiles": [[]]} would load as no profiles at all. So such a file is refused,
// naming where the inner array is ("profiles[0].regimes[1]", with the file's JSON keys). The search runs over the
// google.protobuf.Value the same parser makes of the file, so it sees the document as protobuf does. Keys in sorted
// order, so that the path named does not depend on map order.
void FindNestedArray(const google::protobuf::Value& value, const std::string& path, bool in_array, std::string* found) {
  if (!found->empty()) return;
  if (value.has_list_value()) {
    if (in_array) {
      *found = path;
      return;
    }
    const auto& elements = value.list_value().values();
    for (int i = 0; i < elements.size() && found->empty(); ++i) {
      FindNestedArray(elements[i], absl::StrCat(path, "[", i, "]"), true, found);
    }
  } else if (value.has_struct_value()) {
    const auto& fields = value.struct_value().fields();
    std::vector<std::string> keys;
    for (const auto& [key, unused] : fields) keys.push_back(key);
    std::sort(keys.begin(), keys.end());
    for (const std::string& key : keys) {
      FindNestedArray(fields.at(key), path.empty() ? Excerpt(key) : absl::StrCat(path, ".", Excerpt(key)), false,
                      found);
      if (!found->empty()) return;
    }
  }
}

// Arrays and objects a config may nest: a ProfileSet nests 5 deep (profiles, a profile, its regimes, a regime, its
// bounds), so this leaves room and nothing more.
constexpr int kMaxConfigDepth = 32;

// Strict JSON (RFC 8259), nested at most kMaxConfigDepth deep, read in one linear pass (nlohmann's SAX parser keeps
// no tree). protobuf 3.21's JSON parser takes time quadratic in the depth of nested arrays: a 120 KB file of them
// held a reload, and the SIGTERM that came during it, for minutes.
absl::Status CheckJson(absl::string_view json, absl::string_view source) {
  struct DepthBound final : nlohmann::json_sax<nlohmann::json> {
    int depth = 0;
    bool too_deep = false;
    std::string error;
    bool Enter() { return !(too_deep = ++depth > kMaxConfigDepth); }
    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(number_integer_t) override { return true; }
    bool number_unsigned(number_unsigned_t) override { return true; }
    bool number_float(number_float_t, const string_t&) override { return true; }
    bool string(string_t&) override { return true; }
    bool binary(binary_t&) override { return true; }
    bool start_object(std::size_t) override { return Enter(); }
    bool key(string_t&) override { return true; }
    bool end_object() override { return --depth, true; }
    bool start_array(std::size_t) override { return Enter(); }
    bool end_array() override { return --depth, true; }
    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
      error = e.what();
      return false;
    }
  } bound;
  nlohmann::json::sax_parse(json.begin(), json.end(), &bound);
  if (bound.too_deep) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": nested more than ", kMaxConfigDepth, " deep; a samplerd.v1.ProfileSet nests 5"));
  }
  if (!bound.error.empty()) return absl::InvalidArgumentError(absl::StrCat(source, ": not JSON: ", bound.error));
  return absl::OkStatus();
}

absl::StatusOr<v1::ProfileSet> ParseProfileSet(absl::string_view json, absl::string_view source) {
  if (absl::Status s = CheckJson(json, source); !s.ok()) return s;
  google::protobuf::Value tree;
  if (!google::protobuf::util::JsonStringToMessage(std::string(json), &tree).ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": parses as JSON but not as a google.protobuf.Value"));
  }
  std::string nested;
  FindNestedArray(tree, "", false, &nested);
  if (!nested.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", nested,
                     ": an array inside an array; no field of samplerd.v1.ProfileSet is a list of lists (protobuf's "
                     "JSON parser would flatten it)"));
  }
  v1::ProfileSet config;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status = google::protobuf::util::JsonStringToMessage(std::string(json), &config, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": not a samplerd.v1.ProfileSet in protobuf JSON: ", status.ToString()));
  }
  return config;
}

}  // namespace

absl::string_view BuiltInProfilesJson() { return kBuiltInJson; }

const v1::Coefficients& ReferenceCoefficients() {
  static const v1::Coefficients* const kReference = [] {
    auto* c = new v1::Coefficients();
    if (!google::protobuf::TextFormat::ParseFromString(kReferenceCoefficients, c))
      std::abort();  // pinned by ProfileTest
    return c;
  }();
  return *kReference;
}

absl::StatusOr<Profile> Profile::FromProto(const v1::Profile& proto, absl::string_view prefix) {
  if (proto.name().empty()) return InvalidFieldError(Field(prefix, "name"), "must not be empty");
  if (absl::Status s = ValidateSamplingParams(proto.params(), Field(prefix, "params")); !s.ok()) return s;
  // Unset: the reference behaviour, ADAPTIVE when no rule matches.
  const v1::Regime default_regime =
      proto.default_regime() == v1::REGIME_UNSPECIFIED ? v1::REGIME_ADAPTIVE : proto.default_regime();
  if (!IsDecidingRegime(default_regime)) {
    return InvalidFieldError(Field(prefix, "default_regime"),
                             absl::StrCat("must be a regime (REGIME_ADAPTIVE or REGIME_FIXED usually), got ",
                                          v1::Regime_Name(proto.default_regime())));
  }

  Profile profile;
  profile.default_regime_ = default_regime;
  // Base parameters: unset ones mean "filter off" (temperature 1) so that a minimal profile is usable.
  ApplyOverrides(proto.params(), &profile.base_);
  profile.base_.logit_bias = nullptr;

  for (int i = 0; i < proto.regimes_size(); ++i) {
    const v1::RegimeRule& rule = proto.regimes(i);
    const std::string rule_field = absl::StrCat(Field(prefix, "regimes"), "[", i, "]");
    if (!IsDecidingRegime(rule.regime())) {
      return InvalidFieldError(rule_field + ".regime",
                               absl::StrCat("must be a regime, got ", v1::Regime_Name(rule.regime())));
    }
    RegimeRule resolved{rule.regime(), {}};
    for (int j = 0; j < rule.bounds_size(); ++j) {
      const v1::Bound& b = rule.bounds(j);
      const std::string bound_field = absl::StrCat(rule_field, ".bounds[", j, "]");
      if (b.metric() == v1::METRIC_UNSPECIFIED || !v1::Metric_IsValid(b.metric())) {
        return InvalidFieldError(bound_field + ".metric",
                                 absl::StrCat("must name a metric (METRIC_LOGITS_ENTROPY, ...), got ", b.metric()));
      }
      if (b.op() != v1::OP_LT && b.op() != v1::OP_GT) {
        return InvalidFieldError(bound_field + ".op", "must be OP_LT or OP_GT");
      }
      if (!std::isfinite(b.value())) {
        return InvalidFieldError(bound_field + ".value", absl::StrCat("must be finite, got ", b.value()));
      }
      resolved.bounds.push_back({b.metric(), b.op(), b.value()});
    }
    profile.rules_.push_back(std::move(resolved));
  }

  // Only the coefficients the profile sets are checked: the reference values are finite.
  const v1::Coefficients& coefficients = proto.coefficients();
  std::vector<const google::protobuf::FieldDescriptor*> set_fields;
  coefficients.GetReflection()->ListFields(coefficients, &set_fields);
  for (const google::protobuf::FieldDescriptor* fd : set_fields) {
    const double v = coefficients.GetReflection()->GetDouble(coefficients, fd);
    if (!std::isfinite(v)) {
      return InvalidFieldError(Field(prefix, absl::StrCat("coefficients.", fd->name())),
                               absl::StrCat("must be finite, got ", v));
    }
  }

  // The clamps of the formulas need min <= max (std::clamp's precondition), with the reference values filling in
  // what the profile does not set.
  v1::Coefficients resolved = ReferenceCoefficients();
  resolved.MergeFrom(coefficients);
  const struct {
    const char* min_name;
    double min;
    const char* max_name;
    double max;
  } ranges[] = {
      {"adaptive_top_p_min", resolved.adaptive_top_p_min(), "adaptive_top_p_max", resolved.adaptive_top_p_max()},
      {"adaptive_top_k_min", resolved.adaptive_top_k_min(), "adaptive_top_k_max", resolved.adaptive_top_k_max()},
      {"adaptive_min_p_min", resolved.adaptive_min_p_min(), "adaptive_min_p_max", resolved.adaptive_min_p_max()},
  };
  for (const auto& r : ranges) {
    if (r.min > r.max) {
      return InvalidFieldError(Field(prefix, absl::StrCat("coefficients.", r.min_name)),
                               absl::StrCat("must be at most ", r.max_name, " (", r.max, "), got ", r.min));
    }
  }

  // The resolved proto: every parameter and coefficient in force, for ListProfiles.
  profile.proto_ = proto;
  profile.proto_.set_default_regime(default_regime);
  v1::SamplingParams* params = profile.proto_.mutable_params();
  const auto bias = proto.params().logit_bias();
  ToProto(profile.base_, params);
  *params->mutable_logit_bias() = bias;
  *profile.proto_.mutable_coefficients() = resolved;
  return profile;
}

std::shared_ptr<const ProfileRegistry> ProfileRegistry::BuiltIn() {
  static const auto* const kRegistry = [] {
    absl::StatusOr<v1::ProfileSet> config = ParseProfileSet(kBuiltInJson, "built-in profiles");
    if (!config.ok()) std::abort();  // a bug in kBuiltInJson; pinned by ProfileTest
    auto registry = CreateOver({}, *config);
    if (!registry.ok()) std::abort();  // a bug in kBuiltInJson; pinned by ProfileTest
    return new std::shared_ptr<const ProfileRegistry>(*std::move(registry));
  }();
  return *kRegistry;
}

absl::StatusOr<std::shared_ptr<const ProfileRegistry>> ProfileRegistry::Create(const v1::ProfileSet& config) {
  return CreateOver(BuiltIn()->profiles(), config);
}

absl::StatusOr<std::shared_ptr<const ProfileRegistry>> ProfileRegistry::CreateOver(std::vector<Profile> base,
                                                                                   const v1::ProfileSet& config) {
  auto registry = std::shared_ptr<ProfileRegistry>(new ProfileRegistry());
  registry->profiles_ = std::move(base);
  registry->profiles_.reserve(registry->profiles_.size() + config.profiles_size());
  registry->index_.reserve(registry->profiles_.size() + config.profiles_size());
  for (size_t i = 0; i < registry->profiles_.size(); ++i) registry->index_.emplace(registry->profiles_[i].name(), i);
  absl::flat_hash_set<std::string> seen;
  seen.reserve(config.profiles_size());
  for (int i = 0; i < config.profiles_size(); ++i) {
    const std::string prefix = absl::StrCat("profiles[", i, "]");
    absl::StatusOr<Profile> profile = Profile::FromProto(config.profiles(i), prefix);
    if (!profile.ok()) return profile.status();
    if (!seen.insert(profile->name()).second) {
      return InvalidFieldError(prefix + ".name", absl::StrCat("duplicate profile name \"", profile->name(), "\""));
    }
    const auto [at, added] = registry->index_.try_emplace(profile->name(), registry->profiles_.size());
    if (added) {
      registry->profiles_.push_back(*std::move(profile));
    } else {
      registry->profiles_[at->second] = *std::move(profile);  // in the base entry's place
    }
  }
  if (!config.default_profile().empty()) registry->default_profile_ = config.default_profile();
  if (registry->Find(registry->default_profile_) == nullptr) {
    return InvalidFieldError("default_profile", absl::StrCat("names no profile: \"", registry->default_profile_, "\""));
  }
  return std::shared_ptr<const ProfileRegistry>(std::move(registry));
}

absl::StatusOr<std::shared_ptr<const ProfileRegistry>> ProfileRegistry::FromJson(absl::string_view json) {
  absl::StatusOr<v1::ProfileSet> config = ParseProfileSet(json, "profile config");
  if (!config.ok()) return config.status();
  return Create(*config);
}

absl::StatusOr<std::shared_ptr<const ProfileRegistry>> ProfileRegistry::FromJsonFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadSmallFile(path, kMaxConfigBytes);
  if (!text.ok()) {
    return absl::Status(text.status().code(), absl::StrCat("profile config \"", path, "\" ", text.status().message()));
  }
  absl::StatusOr<v1::ProfileSet> config = ParseProfileSet(*text, path);
  if (!config.ok()) return config.status();
  return Create(*config);
}

const Profile* ProfileRegistry::Find(absl::string_view name) const {
  if (name.empty()) name = default_profile_;
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &profiles_[it->second];
}

}  // namespace samplerd
