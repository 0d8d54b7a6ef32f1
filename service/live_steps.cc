#include "service/live_steps.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace samplerd {
namespace {

// The enum value name without its prefix, lower case: METRIC_LOGITS_ENTROPY -> "logits_entropy".
std::string EnumLabel(const std::string& name, absl::string_view prefix, int value) {
  if (name.empty()) return absl::StrCat(value);
  return absl::AsciiStrToLower(absl::StripPrefix(name, prefix));
}

// To 1e-4 (a pixel of the page is ~0.01 bits): the JSON prints the shortest decimal of the double, so a
// point costs ~20 bytes instead of ~45.
double Rounded(float value) { return std::round(static_cast<double>(value) * 1e4) / 1e4; }

nlohmann::json RulesJson(const Profile& profile) {
  nlohmann::json rules = nlohmann::json::array();
  for (const RegimeRule& rule : profile.rules()) {
    nlohmann::json bounds = nlohmann::json::array();
    for (const Bound& bound : rule.bounds) {
      bounds.push_back({{"metric", EnumLabel(v1::Metric_Name(bound.metric), "METRIC_", bound.metric)},
                        {"op", EnumLabel(v1::Op_Name(bound.op), "OP_", bound.op)},
                        {"value", bound.value}});
    }
    rules.push_back({{"regime", RegimeLabel(rule.regime)}, {"bounds", std::move(bounds)}});
  }
  return rules;
}

}  // namespace

std::string RegimeLabel(v1::Regime regime) {
  return EnumLabel(v1::Regime_Name(regime), "REGIME_", static_cast<int>(regime));
}

void StepRing::Count(v1::Regime regime) {
  const int slot = static_cast<int>(regime);
  if (slot >= 0 && slot < kRegimeSlots) counts_[slot].fetch_add(1, std::memory_order_relaxed);
}

void StepRing::Push(v1::Regime regime, float logits_entropy, float logits_varentropy) {
  Count(regime);
  const int regime_value = static_cast<int>(regime);
  if (std::isnan(logits_entropy) || std::isnan(logits_varentropy)) return;
  if (regime_value < 0 || regime_value >= kRegimeSlots - 1) return;
  uint32_t entropy_bits, varentropy_bits;
  std::memcpy(&entropy_bits, &logits_entropy, sizeof(entropy_bits));
  std::memcpy(&varentropy_bits, &logits_varentropy, sizeof(varentropy_bits));
  // The varentropy's 4 lowest mantissa bits (a relative 2e-6) make room for the regime + 1, so 0 = empty.
  const uint64_t packed =
      (uint64_t{entropy_bits} << 32) | (varentropy_bits & ~uint32_t{0xF}) | static_cast<uint32_t>(regime_value + 1);
  slots_[next_.fetch_add(1, std::memory_order_relaxed) % kCapacity].store(packed, std::memory_order_relaxed);
}

std::vector<StepRing::Point> StepRing::Snapshot() const {
  const uint64_t end = next_.load(std::memory_order_relaxed);
  const uint64_t begin = end > kCapacity ? end - kCapacity : 0;
  std::vector<Point> points;
  points.reserve(end - begin);
  for (uint64_t claim = begin; claim < end; ++claim) {
    const uint64_t packed = slots_[claim % kCapacity].load(std::memory_order_relaxed);
    if (packed == 0) continue;  // claimed, not written yet
    const uint32_t entropy_bits = static_cast<uint32_t>(packed >> 32);
    const uint32_t varentropy_bits = static_cast<uint32_t>(packed) & ~uint32_t{0xF};
    Point point;
    std::memcpy(&point.logits_entropy, &entropy_bits, sizeof(entropy_bits));
    std::memcpy(&point.logits_varentropy, &varentropy_bits, sizeof(varentropy_bits));
    point.regime = static_cast<int>(packed & 0xF) - 1;
    points.push_back(point);
  }
  return points;
}

std::array<uint64_t, StepRing::kRegimeSlots> StepRing::Counts() const {
  std::array<uint64_t, kRegimeSlots> counts;
  for (int i = 0; i < kRegimeSlots; ++i) counts[i] = counts_[i].load(std::memory_order_relaxed);
  return counts;
}

std::shared_ptr<StepRing> LiveSteps::ForProfile(const std::string& profile) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = rings_.find(profile);
  if (it != rings_.end()) return it->second;
  if (rings_.size() >= kMaxProfiles) return nullptr;
  return rings_.emplace(profile, std::make_shared<StepRing>()).first->second;
}

void LiveSteps::KeepOnly(const absl::flat_hash_set<std::string>& names) {
  std::lock_guard<std::mutex> lock(mu_);
  absl::erase_if(rings_, [&names](const auto& entry) { return !names.contains(entry.first); });
}

std::string LiveSteps::Json(const ProfileRegistry* profiles) const {
  std::vector<std::pair<std::string, std::shared_ptr<const StepRing>>> rings;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, ring] : rings_) rings.emplace_back(name, ring);
  }
  nlohmann::json out;
  out["regimes"] = nlohmann::json::array();
  for (int regime = 0; regime < StepRing::kRegimeSlots && v1::Regime_IsValid(regime); ++regime) {
    out["regimes"].push_back(RegimeLabel(static_cast<v1::Regime>(regime)));
  }
  nlohmann::json list = nlohmann::json::array();
  absl::flat_hash_map<std::string, size_t> index_of;  // a config may hold thousands of profiles
  auto entry = [&list, &index_of](const std::string& name) -> nlohmann::json& {
    const auto [it, added] = index_of.try_emplace(name, list.size());
    if (added) {
      list.push_back(
          {{"name", name}, {"steps", 0}, {"counts", nlohmann::json::object()}, {"points", nlohmann::json::array()}});
    }
    return list[it->second];
  };
  if (profiles != nullptr) {
    for (const Profile& profile : profiles->profiles()) {
      nlohmann::json& p = entry(profile.name());
      p["default_regime"] = RegimeLabel(profile.default_regime());
      p["rules"] = RulesJson(profile);
    }
  }
  std::sort(rings.begin(), rings.end());
  for (const auto& [name, ring] : rings) {
    nlohmann::json& p = entry(name);
    uint64_t steps = 0;
    const std::array<uint64_t, StepRing::kRegimeSlots> counts = ring->Counts();
    for (int regime = 0; regime < StepRing::kRegimeSlots; ++regime) {
      if (counts[regime] == 0) continue;
      p["counts"][RegimeLabel(static_cast<v1::Regime>(regime))] = counts[regime];
      steps += counts[regime];
    }
    p["steps"] = steps;
    // [entropy, varentropy, regime enum value]: compact, the page maps the value through "regimes".
    nlohmann::json& points = p["points"];
    for (const StepRing::Point& point : ring->Snapshot()) {
      points.push_back({Rounded(point.logits_entropy), Rounded(point.logits_varentropy), point.regime});
    }
  }
  out["profiles"] = std::move(list);
  return out.dump();
}

}  // namespace samplerd
