// Pins DescribeProfiles, the profile list the start-up and SIGHUP log lines carry: a config may hold hundreds of
// thousands of profiles, and the line names only the first few.
#include "service/config_reloader.h"

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/profile.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace samplerd {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(DescribeProfiles, NamesEveryProfileOfASmallRegistryAndTheDefault) {
  absl::StatusOr<std::shared_ptr<const ProfileRegistry>> registry = ProfileRegistry::FromJson("{}");
  ASSERT_TRUE(registry.ok()) << registry.status();
  EXPECT_EQ(DescribeProfiles(**registry), "entropix, entropix-frog, fixed (default entropix)");
}

TEST(DescribeProfiles, NamesTheFirstProfilesOfALargeRegistryAndCountsTheRest) {
  constexpr int kAdded = 100;
  std::string json = R"({"profiles": [)";
  for (int i = 0; i < kAdded; ++i) absl::StrAppend(&json, i == 0 ? "" : ", ", R"({"name": "p)", i, R"("})");
  json += "]}";
  absl::StatusOr<std::shared_ptr<const ProfileRegistry>> registry = ProfileRegistry::FromJson(json);
  ASSERT_TRUE(registry.ok()) << registry.status();
  const std::string described = DescribeProfiles(**registry);
  const size_t built_in = 3;
  const size_t last_named = kProfilesNamedInTheLog - built_in - 1;
  EXPECT_THAT(described, HasSubstr(absl::StrCat("p", last_named, " and ")));
  EXPECT_THAT(described, Not(HasSubstr(absl::StrCat("p", last_named + 1))));
  EXPECT_THAT(described,
              EndsWith(absl::StrCat(" and ", built_in + kAdded - kProfilesNamedInTheLog, " more (default entropix)")));
}

}  // namespace
}  // namespace samplerd
