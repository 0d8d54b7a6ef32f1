#include "service/answer_order.h"

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace samplerd {
namespace {

struct TestRequest {
  int id = 0;
};

struct TestAnswer {
  int id = 0;
  int clears = 0;
  void Clear() {
    id = 0;
    ++clears;
  }
};

using Order = AnswerOrder<TestRequest, TestAnswer>;

constexpr Order::Limits kLimits{/*max_queued=*/4, /*max_in_flight=*/2};

// Reads one request with id `id` and queues it, releasing the read side as the reactor does.
Order::Entry* ReadOne(Order* order, int id) {
  std::unique_ptr<TestRequest> request = order->StartRead();
  if (request == nullptr) return nullptr;
  request->id = id;
  Order::Entry* entry = order->Received(std::move(request), /*half_closed=*/false, absl::OkStatus());
  order->ReleaseRead();
  return entry;
}

// Answers `entry` with its request's id.
void AnswerOk(Order* order, Order::Entry* entry) {
  entry->answer.id = entry->request->id;
  order->Answered(entry, absl::OkStatus());
}

// Writes every answer that may be written now, in the order the order allows; returns their ids.
std::vector<int> WriteAll(Order* order) {
  std::vector<int> written;
  while (TestAnswer* answer = order->NextWrite()) {
    written.push_back(answer->id);
    order->WriteDone(/*ok=*/true);
  }
  return written;
}

void HalfClose(Order* order) {
  std::unique_ptr<TestRequest> request = order->StartRead();
  ASSERT_NE(request, nullptr);
  EXPECT_EQ(order->Received(std::move(request), /*half_closed=*/true, absl::OkStatus()), nullptr);
}

TEST(AnswerOrder, AnswersLeaveInArrivalOrderWhicheverFinishesFirst) {
  Order order(kLimits);
  Order::Entry* first = ReadOne(&order, 1);
  Order::Entry* second = ReadOne(&order, 2);
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  AnswerOk(&order, second);
  EXPECT_EQ(order.NextWrite(), nullptr) << "the second answer was written before the first";
  AnswerOk(&order, first);
  EXPECT_THAT(WriteAll(&order), ::testing::ElementsAre(1, 2));
}

TEST(AnswerOrder, OneWriteAtATime) {
  Order order(kLimits);
  Order::Entry* first = ReadOne(&order, 1);
  Order::Entry* second = ReadOne(&order, 2);
  AnswerOk(&order, first);
  AnswerOk(&order, second);
  TestAnswer* writing = order.NextWrite();
  ASSERT_NE(writing, nullptr);
  EXPECT_EQ(writing->id, 1);
  EXPECT_EQ(order.NextWrite(), nullptr) << "a second write started before the first was done";
  order.WriteDone(true);
  TestAnswer* next = order.NextWrite();
  ASSERT_NE(next, nullptr);
  EXPECT_EQ(next->id, 2);
}

TEST(AnswerOrder, OneReadAtATimeUntilReleased) {
  Order order(kLimits);
  std::unique_ptr<TestRequest> request = order.StartRead();
  ASSERT_NE(request, nullptr);
  EXPECT_EQ(order.StartRead(), nullptr) << "a second read started while the first was taken";
  Order::Entry* entry = order.Received(std::move(request), false, absl::OkStatus());
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ(order.StartRead(), nullptr) << "the read side was free before ReleaseRead";
  order.ReleaseRead();
  EXPECT_NE(order.StartRead(), nullptr);
}

TEST(AnswerOrder, ReadsPauseAtTheInFlightLimitAndResumeWhenOneIsAnswered) {
  Order order(kLimits);
  Order::Entry* first = ReadOne(&order, 1);
  ASSERT_NE(ReadOne(&order, 2), nullptr);
  EXPECT_EQ(order.StartRead(), nullptr) << "a third request was read while two were running";
  AnswerOk(&order, first);
  EXPECT_NE(order.StartRead(), nullptr);
}

TEST(AnswerOrder, ReadsPauseAtTheQueuedLimitAndResumeWhenOneIsWritten) {
  Order order(kLimits);
  for (int id = 1; id <= 4; ++id) {
    Order::Entry* entry = ReadOne(&order, id);
    ASSERT_NE(entry, nullptr) << "request " << id;
    AnswerOk(&order, entry);
  }
  EXPECT_EQ(order.StartRead(), nullptr) << "a fifth request was read with four answers unwritten";
  TestAnswer* answer = order.NextWrite();
  ASSERT_NE(answer, nullptr);
  EXPECT_EQ(order.StartRead(), nullptr) << "the answer being written still counts";
  order.WriteDone(true);
  EXPECT_NE(order.StartRead(), nullptr);
}

TEST(AnswerOrder, SparesAreReusedAndWrittenAnswersCleared) {
  Order order(kLimits);
  Order::Entry* first = ReadOne(&order, 1);
  const TestRequest* first_request = first->request.get();
  AnswerOk(&order, first);
  ASSERT_THAT(WriteAll(&order), ::testing::ElementsAre(1));
  EXPECT_EQ(first->answer.clears, 1) << "a written answer was not cleared";
  std::unique_ptr<TestRequest> reused = order.StartRead();
  EXPECT_EQ(reused.get(), first_request);
  Order::Entry* second = order.Received(std::move(reused), false, absl::OkStatus());
  EXPECT_EQ(second, first) << "the written entry was not reused";
  EXPECT_FALSE(second->ready);
  EXPECT_TRUE(second->refusal.ok());
}

TEST(AnswerOrder, HalfCloseFinishesOkAfterEveryAnswer) {
  Order order(kLimits);
  Order::Entry* first = ReadOne(&order, 1);
  HalfClose(&order);
  EXPECT_EQ(order.TakeFinish(), std::nullopt) << "finished while a request was running";
  AnswerOk(&order, first);
  EXPECT_EQ(order.TakeFinish(), std::nullopt) << "finished with an answer not yet written";
  TestAnswer* answer = order.NextWrite();
  ASSERT_NE(answer, nullptr);
  EXPECT_EQ(order.TakeFinish(), std::nullopt) << "finished while a write was in flight";
  order.WriteDone(true);
  std::optional<absl::Status> finish = order.TakeFinish();
  ASSERT_TRUE(finish.has_value());
  EXPECT_TRUE(finish->ok()) << *finish;
  EXPECT_EQ(order.StartRead(), nullptr) << "read after the client half-closed";
}

TEST(AnswerOrder, NoFinishWhileTheClientMaySendMore) {
  Order order(kLimits);
  AnswerOk(&order, ReadOne(&order, 1));
  EXPECT_THAT(WriteAll(&order), ::testing::ElementsAre(1));
  EXPECT_EQ(order.TakeFinish(), std::nullopt);
}

TEST(AnswerOrder, RefusedRequestEndsTheStreamAfterTheEarlierAnswers) {
  Order order(kLimits);
  Order::Entry* first = ReadOne(&order, 1);
  Order::Entry* second = ReadOne(&order, 2);
  order.Answered(second, absl::ResourceExhaustedError("too many steps"));
  EXPECT_EQ(order.StartRead(), nullptr) << "read on after a refusal";
  EXPECT_EQ(order.TakeFinish(), std::nullopt) << "finished before the earlier answer";
  AnswerOk(&order, first);
  EXPECT_EQ(order.TakeFinish(), std::nullopt) << "finished before the earlier answer was written";
  EXPECT_THAT(WriteAll(&order), ::testing::ElementsAre(1)) << "the refused request got an answer";
  std::optional<absl::Status> finish = order.TakeFinish();
  ASSERT_TRUE(finish.has_value());
  EXPECT_EQ(finish->code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(finish->message(), "too many steps");
}

TEST(AnswerOrder, TheStreamEndsWithTheRefusalOfTheEarliestRequestWhicheverCameFirst) {
  Order order(kLimits);
  Order::Entry* first = ReadOne(&order, 1);
  Order::Entry* second = ReadOne(&order, 2);
  order.Answered(second, absl::InvalidArgumentError("second"));
  order.Answered(first, absl::ResourceExhaustedError("first"));
  EXPECT_EQ(order.NextWrite(), nullptr);
  std::optional<absl::Status> finish = order.TakeFinish();
  ASSERT_TRUE(finish.has_value());
  EXPECT_EQ(finish->message(), "first");
}

// A request refused while a later one runs: the later answer is not written in the refused one's place (the
// client pairs answers with requests by position), and the stream ends with the refusal once the later one is
// done.
TEST(AnswerOrder, AnswersAfterARefusedRequestAreNeverWritten) {
  Order order(kLimits);
  Order::Entry* first = ReadOne(&order, 1);
  AnswerOk(&order, first);
  ASSERT_THAT(WriteAll(&order), ::testing::ElementsAre(1));
  Order::Entry* second = ReadOne(&order, 2);
  Order::Entry* third = ReadOne(&order, 3);
  ASSERT_NE(third, nullptr);
  order.Answered(second, absl::ResourceExhaustedError("the answer is too large"));
  EXPECT_EQ(order.TakeFinish(), std::nullopt) << "finished while the third request was running";
  AnswerOk(&order, third);
  EXPECT_THAT(WriteAll(&order), ::testing::IsEmpty()) << "a later answer took the refused one's place";
  std::optional<absl::Status> finish = order.TakeFinish();
  ASSERT_TRUE(finish.has_value());
  EXPECT_EQ(finish->message(), "the answer is too large");
  EXPECT_EQ(order.TakeFinish(), std::nullopt);
}

// A read already under way when an earlier request is refused: its request is not run, since its answer could
// never be written.
TEST(AnswerOrder, ARequestReadAfterARefusalIsNotRun) {
  Order order(kLimits);
  Order::Entry* first = ReadOne(&order, 1);
  std::unique_ptr<TestRequest> second = order.StartRead();
  ASSERT_NE(second, nullptr);
  order.Answered(first, absl::ResourceExhaustedError("refused"));
  EXPECT_EQ(order.Received(std::move(second), false, absl::OkStatus()), nullptr);
  std::optional<absl::Status> finish = order.TakeFinish();
  ASSERT_TRUE(finish.has_value());
  EXPECT_EQ(finish->message(), "refused");
}

// A message that does not parse comes after every request queued before it: one of those refused later still
// decides the status.
TEST(AnswerOrder, ARefusalBeforeAnUnparsableMessageIsTheStatus) {
  Order order(kLimits);
  Order::Entry* first = ReadOne(&order, 1);
  std::unique_ptr<TestRequest> garbage = order.StartRead();
  ASSERT_NE(garbage, nullptr);
  EXPECT_EQ(order.Received(std::move(garbage), false, absl::InvalidArgumentError("message 2 does not parse")), nullptr);
  order.Answered(first, absl::ResourceExhaustedError("message 1 refused"));
  std::optional<absl::Status> finish = order.TakeFinish();
  ASSERT_TRUE(finish.has_value());
  EXPECT_EQ(finish->message(), "message 1 refused");
}

TEST(AnswerOrder, UnparsableMessageEndsTheStreamAfterTheEarlierAnswers) {
  Order order(kLimits);
  Order::Entry* first = ReadOne(&order, 1);
  std::unique_ptr<TestRequest> garbage = order.StartRead();
  ASSERT_NE(garbage, nullptr);
  EXPECT_EQ(order.Received(std::move(garbage), false, absl::InvalidArgumentError("message 2 does not parse")), nullptr);
  EXPECT_EQ(order.StartRead(), nullptr) << "read on after garbage";
  EXPECT_EQ(order.TakeFinish(), std::nullopt);
  AnswerOk(&order, first);
  EXPECT_THAT(WriteAll(&order), ::testing::ElementsAre(1));
  std::optional<absl::Status> finish = order.TakeFinish();
  ASSERT_TRUE(finish.has_value());
  EXPECT_EQ(finish->code(), absl::StatusCode::kInvalidArgument);
}

TEST(AnswerOrder, BrokenWriteFinishesCancelledOnceNothingRuns) {
  Order order(kLimits);
  Order::Entry* first = ReadOne(&order, 1);
  Order::Entry* second = ReadOne(&order, 2);
  AnswerOk(&order, first);
  ASSERT_NE(order.NextWrite(), nullptr);
  order.WriteDone(/*ok=*/false);
  EXPECT_EQ(order.StartRead(), nullptr) << "read on after a broken write";
  EXPECT_EQ(order.TakeFinish(), std::nullopt) << "finished while a request was running";
  AnswerOk(&order, second);
  EXPECT_EQ(order.NextWrite(), nullptr) << "wrote after a broken write";
  std::optional<absl::Status> finish = order.TakeFinish();
  ASSERT_TRUE(finish.has_value());
  EXPECT_EQ(finish->code(), absl::StatusCode::kCancelled);
}

TEST(AnswerOrder, FinishesOnlyOnce) {
  Order order(kLimits);
  HalfClose(&order);
  ASSERT_TRUE(order.TakeFinish().has_value());
  EXPECT_EQ(order.TakeFinish(), std::nullopt);
  EXPECT_EQ(order.NextWrite(), nullptr);
  EXPECT_EQ(order.StartRead(), nullptr);
}

TEST(AnswerOrder, ReadEndingAfterTheStreamFinishedQueuesNothing) {
  Order order(kLimits);
  AnswerOk(&order, ReadOne(&order, 1));
  ASSERT_NE(order.NextWrite(), nullptr);
  std::unique_ptr<TestRequest> request = order.StartRead();
  ASSERT_NE(request, nullptr);
  // The write fails while the next read is out; the stream finishes before that read completes.
  order.WriteDone(/*ok=*/false);
  ASSERT_TRUE(order.TakeFinish().has_value());
  EXPECT_EQ(order.Received(std::move(request), false, absl::OkStatus()), nullptr);
  EXPECT_EQ(order.TakeFinish(), std::nullopt);
}

}  // namespace
}  // namespace samplerd
