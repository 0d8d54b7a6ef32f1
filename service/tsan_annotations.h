// Happens-before annotations for ThreadSanitizer, at the points where gRPC orders samplerd's reactions.
//
// Debian's libgrpc is built without ThreadSanitizer, so TSan cannot see how gRPC orders a reaction after the
// call that asked for it: OnReadDone runs on another thread after StartRead, handed over through gRPC core's
// completion queue and absl::Mutex's futex waiter. These calls tell TSan about that one edge; in any other
// build they are empty. They order only what gRPC itself orders, so a race between two of samplerd's own
// threads (two reactions of one stream, a reaction and a worker) stays visible (docs/reliability.md). The same
// holds for a call's interceptor, which gRPC creates, runs at each hook point and deletes on whichever threads
// serve the call.
//
//   TsanHappensBefore(&read_buffer_);  StartRead(&read_buffer_);
//   void OnReadDone(bool ok) override { TsanHappensAfter(&read_buffer_); ... }
//   void Intercept(InterceptorBatchMethods* methods) override { TsanHandedOff handed_off(this); ... }
#ifndef SAMPLERD_SERVICE_TSAN_ANNOTATIONS_H_
#define SAMPLERD_SERVICE_TSAN_ANNOTATIONS_H_

#if defined(__SANITIZE_THREAD__)
#define SAMPLERD_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SAMPLERD_TSAN 1
#endif
#endif

#ifdef SAMPLERD_TSAN
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace samplerd {

// Everything this thread did so far happens before whatever follows a TsanHappensAfter(tag) on any thread.
inline void TsanHappensBefore([[maybe_unused]] const void* tag) {
#ifdef SAMPLERD_TSAN
  __tsan_release(const_cast<void*>(tag));
#endif
}

// Whatever preceded a TsanHappensBefore(tag) on any thread happens before what this thread does next.
inline void TsanHappensAfter([[maybe_unused]] const void* tag) {
#ifdef SAMPLERD_TSAN
  __tsan_acquire(const_cast<void*>(tag));
#endif
}

// An object's use by one thread, in an order gRPC keeps between threads (a call's interceptor: created, then each
// hook point, then deleted): the scope happens after the object's earlier scopes and before its later ones. Its
// constructor ends with TsanHappensBefore(this) and its destructor starts with TsanHappensAfter(this).
class TsanHandedOff {
 public:
  explicit TsanHandedOff(const void* tag) : tag_(tag) { TsanHappensAfter(tag_); }
  ~TsanHandedOff() { TsanHappensBefore(tag_); }
  TsanHandedOff(const TsanHandedOff&) = delete;
  TsanHandedOff& operator=(const TsanHandedOff&) = delete;

 private:
  const void* const tag_;
};

}  // namespace samplerd

#endif  // SAMPLERD_SERVICE_TSAN_ANNOTATIONS_H_
