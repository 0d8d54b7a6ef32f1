// Pins the profiles: the built-in ones carry exactly golden/cases.json's values, configs load through
// protobuf's JSON mapping, replace or add profiles, and bad configs are rejected naming the field.
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "core/field_error.h"
#include "core/profile.h"
#include "gtest/gtest.h"
#include "tests/core/golden_cases.h"

namespace samplerd {
namespace {

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

TEST(ProfileTest, BuiltInProfilesEqualTheGoldenProfiles) {
  const auto registry = ProfileRegistry::BuiltIn();
  EXPECT_EQ(registry->default_profile(), "entropix");
  const auto& golden = testing::GoldenJson()["profiles"];
  ASSERT_EQ(registry->profiles().size(), golden.size());
  for (const auto& [name, g] : golden.items()) {
    SCOPED_TRACE(name);
    const Profile* p = registry->Find(name);
    ASSERT_NE(p, nullptr);
    const SamplingConfig base = p->base();
    EXPECT_FLOAT_EQ(base.temperature, g["params"]["temperature"].get<float>());
    EXPECT_EQ(base.top_k, g["params"]["top_k"].get<int>());
    EXPECT_FLOAT_EQ(base.top_p, g["params"]["top_p"].get<float>());
    EXPECT_FLOAT_EQ(base.min_p, g["params"]["min_p"].get<float>());
    EXPECT_EQ(base.clarifying_token, g["clarifying_token"].get<int>());
    EXPECT_EQ(base.n_adaptive_samples, g["n_adaptive_samples"].get<int>());
    EXPECT_EQ(v1::Regime_Name(p->default_regime()), "REGIME_" + g["default_regime"].get<std::string>());
    ASSERT_EQ(p->rules().size(), g["regimes"].size());
    for (size_t i = 0; i < p->rules().size(); ++i) {
      const auto& gr = g["regimes"][i];
      EXPECT_EQ(v1::Regime_Name(p->rules()[i].regime), "REGIME_" + gr["regime"].get<std::string>());
      ASSERT_EQ(p->rules()[i].bounds.size(), gr["bounds"].size());
      for (size_t j = 0; j < gr["bounds"].size(); ++j) {
        const Bound& b = p->rules()[i].bounds[j];
        EXPECT_EQ(v1::Metric_Name(b.metric), "METRIC_" + Upper(gr["bounds"][j]["metric"].get<std::string>()));
        EXPECT_EQ(b.op == v1::OP_LT ? "<" : ">", gr["bounds"][j]["op"].get<std::string>());
        EXPECT_DOUBLE_EQ(b.value, gr["bounds"][j]["value"].get<double>());
      }
    }
    // Every coefficient the golden profile lists (the adaptive_score_* terms have no effect: deviation 6).
    const auto* descriptor = v1::Coefficients::descriptor();
    const auto& resolved = p->proto().coefficients();
    for (const auto& [coef, value] : g["coefficients"].items()) {
      if (coef.rfind("adaptive_score", 0) == 0) continue;
      const auto* field = descriptor->FindFieldByName(coef);
      ASSERT_NE(field, nullptr) << coef;
      EXPECT_DOUBLE_EQ(resolved.GetReflection()->GetDouble(resolved, field), value.get<double>()) << coef;
    }
  }
}

TEST(ProfileTest, EveryCoefficientResolvesToAValue) {
  // A proto field without a reference value would resolve to an unset 0. Every field must come back set in the
  // resolved proto, and set in the reference.
  const Profile* p = ProfileRegistry::BuiltIn()->Find("entropix");
  const auto* descriptor = v1::Coefficients::descriptor();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    EXPECT_TRUE(p->proto().coefficients().GetReflection()->HasField(p->proto().coefficients(), descriptor->field(i)))
        << descriptor->field(i)->name();
    EXPECT_TRUE(ReferenceCoefficients().GetReflection()->HasField(ReferenceCoefficients(), descriptor->field(i)))
        << descriptor->field(i)->name();
  }
}

TEST(ProfileTest, ConfigAddsAndReplacesProfiles) {
  auto registry = ProfileRegistry::FromJson(R"({
    "defaultProfile": "cautious",
    "profiles": [
      {"name": "cautious", "params": {"temperature": 0.5, "topK": 20},
       "regimes": [{"regime": "REGIME_ARGMAX", "bounds": [{"metric": "METRIC_LOGITS_ENTROPY", "op": "OP_LT", "value": 1.0}]}],
       "defaultRegime": "REGIME_ADAPTIVE", "coefficients": {"adaptive_top_k_max": 50}},
      {"name": "fixed", "params": {"temperature": 1.0}, "default_regime": "REGIME_FIXED"}
    ]})");
  ASSERT_TRUE(registry.ok()) << registry.status();
  EXPECT_EQ((*registry)->default_profile(), "cautious");
  EXPECT_EQ((*registry)->Find("")->name(), "cautious");
  EXPECT_EQ((*registry)->profiles().size(), 4u);
  EXPECT_EQ((*registry)->Find("cautious")->coefficients().adaptive_top_k_max(), 50);
  EXPECT_EQ((*registry)->Find("cautious")->coefficients().adaptive_top_k_min(), 1) << "unset: reference value";
  EXPECT_FLOAT_EQ((*registry)->Find("fixed")->base().temperature, 1.0f);
  EXPECT_EQ((*registry)->Find("fixed")->base().top_k, 0) << "replaced, not merged";
  EXPECT_NE((*registry)->Find("entropix"), nullptr);
}

struct BadConfig {
  const char* name;
  const char* json;
  const char* mentions;
};

class ProfileConfigRejectsTest : public ::testing::TestWithParam<BadConfig> {};

TEST_P(ProfileConfigRejectsTest, NamesTheProblem) {
  auto registry = ProfileRegistry::FromJson(GetParam().json);
  ASSERT_FALSE(registry.ok());
  EXPECT_EQ(registry.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(registry.status().message().find(GetParam().mentions), absl::string_view::npos)
      << registry.status().message();
}

INSTANTIATE_TEST_SUITE_P(
    Catalogue, ProfileConfigRejectsTest,
    ::testing::Values(
        BadConfig{"not_json", "{profiles: [", "not JSON"},
        BadConfig{"unknown_field", R"({"profiles": [{"name": "x", "temperature": 1}]})", "temperature"},
        BadConfig{"empty_name", R"({"profiles": [{"params": {}}]})", "profiles[0].name"},
        BadConfig{"top_p_out_of_range", R"({"profiles": [{"name": "x", "params": {"topP": 1.5}}]})",
                  "profiles[0].params.top_p: must be in (0, 1], got 1.5"},
        BadConfig{"negative_top_k", R"({"profiles": [{"name": "x", "params": {"topK": -3}}]})",
                  "profiles[0].params.top_k"},
        BadConfig{"missing_op", R"({"profiles": [{"name": "x", "regimes": [{"regime": "REGIME_ARGMAX",
                  "bounds": [{"metric": "METRIC_AGREEMENT", "value": 1}]}]}]})",
                  "profiles[0].regimes[0].bounds[0].op"},
        BadConfig{"duplicate", R"({"profiles": [{"name": "x"}, {"name": "x"}]})", "duplicate profile name"},
        BadConfig{"unknown_default", R"({"defaultProfile": "nope"})", "default_profile"},
        BadConfig{"too_many_samples", R"({"profiles": [{"name": "x", "params": {"nAdaptiveSamples": 65}}]})",
                  "n_adaptive_samples"},
        BadConfig{"undefined_metric", R"({"profiles": [{"name": "x", "regimes": [{"regime": "REGIME_ARGMAX",
                  "bounds": [{"metric": 99, "op": "OP_LT", "value": 1}]}]}]})",
                  "profiles[0].regimes[0].bounds[0].metric: must name a metric"},
        BadConfig{"top_k_min_over_max",
                  R"({"profiles": [{"name": "x", "coefficients": {"adaptiveTopKMin": 50, "adaptiveTopKMax": 10}}]})",
                  "profiles[0].coefficients.adaptive_top_k_min: must be at most adaptive_top_k_max"},
        BadConfig{"top_p_min_over_reference_max",
                  R"({"profiles": [{"name": "x", "coefficients": {"adaptiveTopPMin": 2}}]})",
                  "profiles[0].coefficients.adaptive_top_p_min"},
        BadConfig{"min_p_min_over_max",
                  R"({"profiles": [{"name": "x", "coefficients": {"adaptiveMinPMin": 0.5, "adaptiveMinPMax": 0.1}}]})",
                  "profiles[0].coefficients.adaptive_min_p_min"}),
    [](const ::testing::TestParamInfo<BadConfig>& info) { return std::string(info.param.name); });

// protobuf 3.21's JSON parser flattens an array inside an array into the repeated field around it, so these would
// load as no profiles, profile zz, or a rule list that is not the one written.
TEST(ProfileRegistry, ANestedArrayIsRefusedAndNamesWhere) {
  const struct {
    const char* json;
    const char* where;
  } cases[] = {
      {R"({"profiles": [[]]})", "profile config: profiles[0]: "},
      {R"({"profiles": [[{"name": "zz"}]]})", "profile config: profiles[0]: "},
      {R"({"profiles": [{"name": "a"}, {"name": "b", "regimes": [{"regime": "REGIME_ARGMAX"},
          [{"regime": "REGIME_ARGMAX"}]]}]})",
       "profile config: profiles[1].regimes[1]: "},
      {R"({"profiles": [{"name": "a", "regimes": [{"regime": "REGIME_ARGMAX", "bounds": [[]]}]}]})",
       "profile config: profiles[0].regimes[0].bounds[0]: "},
  };
  for (const auto& c : cases) {
    const absl::Status status = ProfileRegistry::FromJson(c.json).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.json << ": " << status;
    EXPECT_EQ(status.message().rfind(c.where, 0), 0u) << status;
    EXPECT_NE(status.message().find("an array inside an array"), absl::string_view::npos) << status;
  }
}

// A config is strict JSON: protobuf's parser alone would take trailing commas and unquoted or single-quoted keys.
// And it is refused at once when nested deeper than any ProfileSet: protobuf's parser takes time quadratic in the
// depth of nested arrays (20,000 of them, 40 KB, took 11 s; 60,000 minutes), during which a reload holds the
// thread that handles SIGTERM.
TEST(ProfileRegistry, AConfigIsStrictJsonNestedNoDeeperThanAProfileSet) {
  const absl::Status lenient =
      ProfileRegistry::FromJson(R"({profiles: [{'name': 'a', regimes: [{regime: 'REGIME_ARGMAX',},],},],})").status();
  EXPECT_EQ(lenient.code(), absl::StatusCode::kInvalidArgument) << lenient;
  EXPECT_NE(lenient.message().find("not JSON"), absl::string_view::npos) << lenient;

  for (const int depth : {40, 1000000}) {
    const std::string deep = R"({"profiles": )" + std::string(depth, '[') + std::string(depth, ']') + "}";
    const absl::Status status = ProfileRegistry::FromJson(deep).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << depth << ": " << status;
    EXPECT_NE(status.message().find("nested more than 32 deep"), absl::string_view::npos) << depth << ": " << status;
  }
  // The deepest a ProfileSet goes is well within the bound.
  const auto deepest = ProfileRegistry::FromJson(
      R"({"profiles": [{"name": "d", "regimes": [{"regime": "REGIME_ARGMAX", "bounds": [{"metric": "METRIC_LOGITS_ENTROPY", "op": "OP_LT", "value": 0.1}]}]}]})");
  EXPECT_TRUE(deepest.ok()) << deepest.status();
}

// The registry indexes profiles by name (a config may hold hundreds of thousands, and every step looks one up);
// ListProfiles and the reload log still show the built-ins first, then the config's in file order, a built-in
// name replaced in place.
TEST(ProfileRegistry, ManyProfilesKeepTheirOrderAndEachIsFoundByName) {
  constexpr int kProfiles = 20000;
  std::string json = R"({"defaultProfile": "p00007", "profiles": [)";
  for (int i = 0; i < kProfiles; ++i) {
    absl::StrAppend(&json, i == 0 ? "" : ", ", R"({"name": "p)", absl::Dec(i, absl::kZeroPad5), R"(", "params": )",
                    R"({"topK": )", i, "}}");
    if (i == kProfiles / 2) json += R"(, {"name": "fixed", "params": {"topK": 7}})";
  }
  json += "]}";
  auto registry = ProfileRegistry::FromJson(json);
  ASSERT_TRUE(registry.ok()) << registry.status();
  const std::vector<Profile>& profiles = (*registry)->profiles();
  ASSERT_EQ(profiles.size(), 3u + kProfiles);
  EXPECT_EQ(profiles[0].name(), "entropix");
  EXPECT_EQ(profiles[1].name(), "entropix-frog");
  EXPECT_EQ(profiles[2].name(), "fixed");
  EXPECT_EQ(profiles[2].base().top_k, 7) << "replaced in the built-in's place";
  for (int i = 0; i < kProfiles; ++i) {
    const std::string name = absl::StrCat("p", absl::Dec(i, absl::kZeroPad5));
    ASSERT_EQ(profiles[3 + i].name(), name);
    const Profile* found = (*registry)->Find(name);
    ASSERT_EQ(found, &profiles[3 + i]) << name;
  }
  EXPECT_EQ((*registry)->Find("fixed"), &profiles[2]);
  EXPECT_EQ((*registry)->Find(""), &profiles[3 + 7]);
  EXPECT_EQ((*registry)->Find("p20000"), nullptr);
  EXPECT_EQ((*registry)->Find("P00001"), nullptr) << "names are case-sensitive";
}

TEST(ProfileTest, MissingConfigFileIsNotFound) {
  EXPECT_EQ(ProfileRegistry::FromJsonFile("/nonexistent/profiles.json").status().code(), absl::StatusCode::kNotFound);
}

// A FIFO would block the reload thread (which also handles SIGTERM) until a writer comes; a device such as
// /dev/zero would be read without end.
TEST(ProfileTest, AConfigThatIsNotARegularFileIsRefusedWithoutReadingIt) {
  const std::string fifo = ::testing::TempDir() + "samplerd-profile-test.fifo";
  unlink(fifo.c_str());
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  for (const std::string& path : {fifo, std::string("/dev/zero"), ::testing::TempDir()}) {
    const absl::Status status = ProfileRegistry::FromJsonFile(path).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << path << ": " << status;
    EXPECT_NE(status.message().find("not a regular file"), absl::string_view::npos) << status;
  }
  unlink(fifo.c_str());
}

}  // namespace
}  // namespace samplerd
