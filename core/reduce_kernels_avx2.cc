// The avx2 instantiation of the reduction kernels (compiled with its own -m flags; see core/CMakeLists.txt).
#include "core/reduce_kernels_impl.h"

namespace samplerd::kernels::detail {

const KernelTable& Avx2Table() {
  static const KernelTable table = MakeTable<xsimd::fma3<xsimd::avx2>>("avx2");
  return table;
}

}  // namespace samplerd::kernels::detail
