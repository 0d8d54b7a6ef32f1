#include "core/reduce_kernels.h"

#include <cstdlib>
#include <cstring>

#include "xsimd/xsimd.hpp"

namespace samplerd::kernels {
namespace detail {
const KernelTable& Sse2Table();
const KernelTable& Avx2Table();
const KernelTable& Avx512Table();
}  // namespace detail

std::vector<const KernelTable*> AvailableKernels() {
  const auto cpu = xsimd::available_architectures();
  std::vector<const KernelTable*> tables = {&detail::Sse2Table()};
  if (cpu.fma3_avx2) tables.push_back(&detail::Avx2Table());
  if (cpu.avx512bw && cpu.avx512dq) tables.push_back(&detail::Avx512Table());
  return tables;
}

const KernelTable& ActiveKernels() {
  static const KernelTable* const kActive = [] {
    const std::vector<const KernelTable*> tables = AvailableKernels();
    if (const char* pinned = std::getenv("SAMPLERD_SIMD"); pinned != nullptr) {
      for (const KernelTable* t : tables) {
        if (std::strcmp(t->name, pinned) == 0) return t;
      }
    }
    return tables.back();
  }();
  return *kActive;
}

#define SAMPLERD_KERNEL(Result, Name, Params, Args) \
  Result Name Params { return ActiveKernels().Name Args; }
#include "core/kernel_list.inc"
#undef SAMPLERD_KERNEL

}  // namespace samplerd::kernels
