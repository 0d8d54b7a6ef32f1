// AnswerOrder: the ordering rules of one bidi stream of requests and answers, without gRPC.
//
// A stream reads requests, runs each one somewhere else, and writes one answer per request in arrival order,
// whichever finishes first. AnswerOrder decides when a read may start (at most `max_in_flight` requests running
// and `max_queued` answers waiting, the one being written included), which answer is written next (the oldest,
// once it is ready, one write at a time), and when the stream ends and with which status: once nothing runs and
// nothing is being written, after every answer when the client half-closed, after the answers to the requests
// that arrived before the earliest-arriving refused one (whenever it was refused) with its status, at once with
// CANCELLED when a write failed; and only once.
// Requests and entries are kept for reuse, so a long stream of same-sized requests allocates nothing new.
//
// It is not thread-safe: the caller (SamplerService's reactor) holds its own mutex around every call, and does
// the I/O these calls allow (StartRead, StartWrite, Finish) itself.
//
//   AnswerOrder<Request, Answer> order({/*max_queued=*/4, /*max_in_flight=*/2});
//   if (std::unique_ptr<Request> r = order.StartRead()) ...read into *r...
//   Entry* e = order.Received(std::move(r), /*half_closed=*/false, absl::OkStatus());  // then run e->request
//   order.ReleaseRead();                            // after the request's run has started
//   order.Answered(e, status);                      // when it has run; e->answer is filled, or status refuses it
//   if (Answer* a = order.NextWrite()) ...write *a..., then order.WriteDone(ok);
//   if (std::optional<absl::Status> s = order.TakeFinish()) ...finish with *s...
#ifndef SAMPLERD_SERVICE_ANSWER_ORDER_H_
#define SAMPLERD_SERVICE_ANSWER_ORDER_H_

#include <cstddef>
#include <deque>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace samplerd {

// `Request` is default-constructible; `Answer` is default-constructible and has Clear(), called when its entry
// goes back to the spares (so a written answer's buffers are released at once).
template <typename Request, typename Answer>
class AnswerOrder {
 public:
  struct Limits {
    // Answers waiting to be written, the one being written included, before reads pause.
    size_t max_queued = 4;
    // Requests received and not yet answered before reads pause.
    int max_in_flight = 2;
  };

  // One request and its answer, from the end of its read until its answer is written.
  struct Entry {
    std::unique_ptr<Request> request;  // while it runs; then back to the spares, unless reset before Answered
    Answer answer;
    bool ready = false;    // answered (or refused)
    absl::Status refusal;  // a stream-level error: nothing to write, the stream ends after the earlier answers
  };

  explicit AnswerOrder(Limits limits) : limits_(limits) {}

  // A request to read into (a spare when there is one), or null when no read may start now: one is already
  // started, the input or the stream is over, or the limits are reached. The read side stays taken until
  // Received() (when it ends the input) or ReleaseRead().
  std::unique_ptr<Request> StartRead() {
    if (reading_ || input_done_ || refused_ || unparsed_.has_value() || finished_ || broken_) return nullptr;
    if (queue_.size() >= limits_.max_queued || in_flight_ >= limits_.max_in_flight) return nullptr;
    reading_ = true;
    if (spare_requests_.empty()) return std::make_unique<Request>();
    std::unique_ptr<Request> request = std::move(spare_requests_.back());
    spare_requests_.pop_back();
    return request;
  }

  // The end of the read StartRead allowed. `half_closed`: the client sent no more (`request` holds nothing);
  // `parsed`: a non-OK status ends the stream after the earlier answers (with the status of the first of them
  // refused, if one is, else with `parsed`). Returns the queued entry whose request is to run (the read side stays
  // taken until ReleaseRead), or null when the read ended the input, the stream is already over, an earlier
  // request was refused, or the request did not parse (the read side is then free, and TakeFinish may say to end).
  Entry* Received(std::unique_ptr<Request> request, bool half_closed, const absl::Status& parsed) {
    // After a refusal no later answer is written: its request is not run either.
    if (half_closed || finished_ || broken_ || refused_ || !parsed.ok()) {
      reading_ = false;
      input_done_ = input_done_ || half_closed;
      if (!parsed.ok() && !unparsed_.has_value()) unparsed_ = parsed;
      spare_requests_.push_back(std::move(request));
      return nullptr;
    }
    std::unique_ptr<Entry> entry;
    if (spare_entries_.empty()) {
      entry = std::make_unique<Entry>();
    } else {
      entry = std::move(spare_entries_.back());
      spare_entries_.pop_back();
    }
    entry->request = std::move(request);
    entry->ready = false;
    entry->refusal = absl::OkStatus();
    Entry* queued = entry.get();
    queue_.push_back(std::move(entry));
    ++in_flight_;
    return queued;
  }

  // Frees the read side after Received returned an entry, once its request no longer needs the reader's state.
  void ReleaseRead() { reading_ = false; }

  // `entry`'s request has run: its answer is ready, or `status` (non-OK) refuses it. A refusal ends the stream
  // after the answers to the requests before it; the answers after it, ready or not, are never written.
  void Answered(Entry* entry, const absl::Status& status) {
    --in_flight_;
    entry->ready = true;
    if (entry->request != nullptr) spare_requests_.push_back(std::move(entry->request));
    entry->refusal = status;
    refused_ = refused_ || !status.ok();
  }

  // The answer to write now, or null: one is being written, the oldest is not ready or refused, or nothing more
  // can be written. The answer stays untouched until WriteDone.
  Answer* NextWrite() {
    if (finished_ || broken_ || writing_ || queue_.empty()) return nullptr;
    if (!queue_.front()->ready || !queue_.front()->refusal.ok()) return nullptr;
    writing_ = true;
    return &queue_.front()->answer;
  }

  // The write NextWrite allowed has ended; `ok` false (the call is gone) means nothing more can be written.
  void WriteDone(bool ok) {
    writing_ = false;
    if (ok) {
      RecycleFront();
    } else {
      broken_ = true;
    }
  }

  // The status to end the stream with, exactly once: when nothing runs and nothing is being written, and either
  // a write failed (CANCELLED), or every answer before the first refused request is written (its refusal), or
  // every answer is written and the client half-closed (OK) or a message did not parse (that error).
  std::optional<absl::Status> TakeFinish() {
    if (finished_ || in_flight_ > 0 || writing_) return std::nullopt;
    if (broken_) {
      finished_ = true;
      return absl::CancelledError("the response could not be written");
    }
    if (!queue_.empty()) {
      if (queue_.front()->refusal.ok()) return std::nullopt;
      absl::Status refusal = queue_.front()->refusal;
      while (!queue_.empty()) RecycleFront();
      finished_ = true;
      return refusal;
    }
    if (!input_done_ && !unparsed_.has_value()) return std::nullopt;
    finished_ = true;
    return unparsed_.value_or(absl::OkStatus());
  }

 private:
  void RecycleFront() {
    queue_.front()->answer.Clear();
    spare_entries_.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }

  const Limits limits_;
  std::deque<std::unique_ptr<Entry>> queue_;  // arrival order; front() is being written when writing_
  std::vector<std::unique_ptr<Entry>> spare_entries_;
  std::vector<std::unique_ptr<Request>> spare_requests_;
  int in_flight_ = 0;     // received, not yet answered
  bool reading_ = false;  // a read is started and not yet released
  bool writing_ = false;
  bool input_done_ = false;               // the client half-closed
  bool broken_ = false;                   // a write failed
  bool refused_ = false;                  // a request was refused: no more are read
  std::optional<absl::Status> unparsed_;  // a message did not parse: the status it ends the stream with
  bool finished_ = false;                 // TakeFinish has returned a status
};

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_ANSWER_ORDER_H_
