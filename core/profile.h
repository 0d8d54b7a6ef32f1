// Strategy profiles as data (docs/contract.md section 4) and the registry the server decides with.
//
// A profile is parsed from protobuf's JSON mapping of samplerd.v1.Profile, validated once, and resolved
// into plain values. The coefficients stay the proto (samplerd.v1.Coefficients, one definition): unset ones are
// filled from ReferenceCoefficients() by MergeFrom, which copies only the fields a profile sets (proto3
// `optional`). A new coefficient is its line in profile.proto, its reference value in core/profile.cc and its
// use in core/strategy.cc. The registry holds the built-in
// profiles `entropix` (default), `entropix-frog` and `fixed`, plus any from a config file; it is immutable,
// so a reload builds a new one and swaps the pointer.
//
//   absl::StatusOr<std::shared_ptr<const ProfileRegistry>> reg = ProfileRegistry::FromJsonFile(path);
//   const Profile* p = (*reg)->Find("");   // the default profile
#ifndef SAMPLERD_CORE_PROFILE_H_
#define SAMPLERD_CORE_PROFILE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/sampling_config.h"
#include "samplerd/v1/profile.pb.h"

namespace samplerd {

struct Bound {
  v1::Metric metric;
  v1::Op op;
  double value;
};

struct RegimeRule {
  v1::Regime regime;
  std::vector<Bound> bounds;
};

// One validated, resolved profile.
class Profile {
 public:
  // Validates `proto` (errors name "<field_prefix>.<field>" and the value) and resolves its defaults.
  static absl::StatusOr<Profile> FromProto(const v1::Profile& proto, absl::string_view field_prefix);

  // The profile with every value in force (what ListProfiles returns).
  const v1::Profile& proto() const { return proto_; }

  const std::string& name() const { return proto_.name(); }
  // Base parameters; logit_bias (if any) points into this profile.
  SamplingConfig base() const {
    SamplingConfig c = base_;
    c.logit_bias = proto_.params().logit_bias().empty() ? nullptr : &proto_.params().logit_bias();
    return c;
  }
  const std::vector<RegimeRule>& rules() const { return rules_; }
  v1::Regime default_regime() const { return default_regime_; }
  // Every coefficient set: the profile's, or the reference value (ReferenceCoefficients) where it has none.
  const v1::Coefficients& coefficients() const { return proto_.coefficients(); }

 private:
  v1::Profile proto_;
  SamplingConfig base_;  // logit_bias left null: it would dangle when the Profile is copied
  std::vector<RegimeRule> rules_;
  v1::Regime default_regime_ = v1::REGIME_ADAPTIVE;
};

// The immutable set of profiles a server decides with.
class ProfileRegistry {
 public:
  static constexpr char kDefaultProfile[] = "entropix";

  // The three built-in profiles.
  static std::shared_ptr<const ProfileRegistry> BuiltIn();

  // Built-ins, then `config`'s profiles (a built-in name replaces the built-in one).
  static absl::StatusOr<std::shared_ptr<const ProfileRegistry>> Create(const v1::ProfileSet& config);
  // Parses protobuf's JSON mapping of v1::ProfileSet (unknown fields are errors), then Create.
  static absl::StatusOr<std::shared_ptr<const ProfileRegistry>> FromJson(absl::string_view json);
  // FromJson of a regular file of at most kMaxConfigBytes (core/small_file.h).
  static absl::StatusOr<std::shared_ptr<const ProfileRegistry>> FromJsonFile(const std::string& path);
  static constexpr int64_t kMaxConfigBytes = 16 << 20;

  // The named profile, the default one for an empty name, null when unknown.
  const Profile* Find(absl::string_view name) const;
  const std::string& default_profile() const { return default_profile_; }
  const std::vector<Profile>& profiles() const { return profiles_; }

 private:
  // `base` followed by config's profiles, a same-named one replacing its base entry.
  static absl::StatusOr<std::shared_ptr<const ProfileRegistry>> CreateOver(std::vector<Profile> base,
                                                                           const v1::ProfileSet& config);

  std::vector<Profile> profiles_;
  // Name -> position in profiles_: a config may hold hundreds of thousands of profiles, and every step looks one up.
  absl::flat_hash_map<std::string, size_t> index_;
  std::string default_profile_ = kDefaultProfile;
};

// The reference (entropix) value of every coefficient in samplerd.v1.Coefficients: what an unset one resolves to.
const v1::Coefficients& ReferenceCoefficients();

// The JSON of the built-in profiles (a v1::ProfileSet), also a template for config files.
absl::string_view BuiltInProfilesJson();

}  // namespace samplerd

#endif  // SAMPLERD_CORE_PROFILE_H_
