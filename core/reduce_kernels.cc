#include "core/reduce_kernels.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

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

namespace {

// The table SAMPLERD_SIMD names among `tables`; null when it is unset or names none of them.
const KernelTable* PinnedTable(const std::vector<const KernelTable*>& tables) {
  const char* pinned = std::getenv("SAMPLERD_SIMD");
  if (pinned == nullptr) return nullptr;
  for (const KernelTable* t : tables) {
    if (std::strcmp(t->name, pinned) == 0) return t;
  }
  return nullptr;
}

}  // namespace

absl::Status CheckKernelPin() {
  const char* pinned = std::getenv("SAMPLERD_SIMD");
  const std::vector<const KernelTable*> tables = AvailableKernels();
  if (pinned == nullptr || PinnedTable(tables) != nullptr) return absl::OkStatus();
  std::vector<std::string> names;
  for (const KernelTable* t : tables) names.emplace_back(t->name);
  return absl::InvalidArgumentError(
      absl::StrCat("SAMPLERD_SIMD=\"", pinned, "\" names no instruction set this CPU runs (",
                   absl::StrJoin(names, ", "), "): pin one of those, the same on every replica, or unset it"));
}

const KernelTable& ActiveKernels() {
  static const KernelTable* const kActive = [] {
    const std::vector<const KernelTable*> tables = AvailableKernels();
    const KernelTable* pinned = PinnedTable(tables);
    return pinned != nullptr ? pinned : tables.back();
  }();
  return *kActive;
}

#define SAMPLERD_KERNEL(Result, Name, Params, Args) \
  Result Name Params { return ActiveKernels().Name Args; }
#include "core/kernel_list.inc"
#undef SAMPLERD_KERNEL

}  // namespace samplerd::kernels
