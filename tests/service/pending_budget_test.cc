#include "service/pending_budget.h"

#include <utility>

#include "gtest/gtest.h"

namespace samplerd {
namespace {

TEST(PendingBudget, TryChargeRefusesPastTheBudgetUnlessNothingIsHeld) {
  PendingBudget budget(100);
  PendingBudget::Charge big = budget.TryCharge(250);
  EXPECT_TRUE(big) << "the first charge is taken whatever its size";
  EXPECT_EQ(budget.held(), 250);
  EXPECT_FALSE(budget.TryCharge(1)) << "anything more waits until the budget frees";
  EXPECT_EQ(budget.held(), 250) << "a refused charge counts nothing";
  big.Release();
  EXPECT_EQ(budget.held(), 0);
  PendingBudget::Charge a = budget.TryCharge(60);
  EXPECT_TRUE(a);
  EXPECT_TRUE(budget.TryCharge(40)) << "up to the budget exactly (and released at once)";
  EXPECT_FALSE(budget.TryCharge(41));
  EXPECT_EQ(budget.held(), 60);
}

TEST(PendingBudget, HoldCountsPastTheBudgetAndMakesTryChargeRefuse) {
  PendingBudget budget(100);
  PendingBudget::Charge a = budget.TryCharge(90);
  PendingBudget::Charge answer = budget.Hold(500);
  EXPECT_TRUE(answer);
  EXPECT_EQ(answer.bytes(), 500);
  EXPECT_EQ(budget.held(), 590);
  EXPECT_FALSE(budget.TryCharge(1));
}

TEST(PendingBudget, AChargeGivesItsBytesBackOnceWhenItGoesOrIsReplaced) {
  PendingBudget budget(1000);
  {
    PendingBudget::Charge a = budget.TryCharge(10);
    PendingBudget::Charge b = std::move(a);
    EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): a moved-from charge is empty
    EXPECT_EQ(budget.held(), 10);
    b = budget.TryCharge(20);  // replacing a charge gives the old one back
    EXPECT_EQ(budget.held(), 20);
    b.Release();
    b.Release();
    EXPECT_EQ(budget.held(), 0);
    b = budget.Hold(5);
  }
  EXPECT_EQ(budget.held(), 0);
}

}  // namespace
}  // namespace samplerd
