// A std::vector whose storage starts on a cache line, for the scratch arrays the kernels stream through.
#ifndef SAMPLERD_CORE_ALIGNED_VECTOR_H_
#define SAMPLERD_CORE_ALIGNED_VECTOR_H_

#include <cstddef>
#include <new>
#include <vector>

namespace samplerd {

// malloc aligns to 16 bytes, so a 64-byte vector load or store into such an array straddles two cache lines
// three times in four (and costs two accesses). The kernels' results never depend on alignment (their blocks
// are counted from the array's start), so aligning the scratch they write and reread changes speed only.
template <typename T>
struct CacheLineAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlignment{64};
  CacheLineAllocator() = default;
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}  // NOLINT: rebinding, as std::allocator
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlignment)); }
  void deallocate(T* p, std::size_t) { ::operator delete(p, kAlignment); }
  template <typename U>
  bool operator==(const CacheLineAllocator<U>&) const {
    return true;
  }
  template <typename U>
  bool operator!=(const CacheLineAllocator<U>&) const {
    return false;
  }
};

template <typename T>
using AlignedVector = std::vector<T, CacheLineAllocator<T>>;

}  // namespace samplerd

#endif  // SAMPLERD_CORE_ALIGNED_VECTOR_H_
