// The avx512 instantiation of the reduction kernels (compiled with its own -m flags; see core/CMakeLists.txt).
#include "core/reduce_kernels_impl.h"

namespace samplerd::kernels::detail {

const KernelTable& Avx512Table() {
  static const KernelTable table = MakeTable<xsimd::avx512bw>("avx512");
  return table;
}

}  // namespace samplerd::kernels::detail
