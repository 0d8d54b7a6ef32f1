// The sse2 instantiation of the reduction kernels (compiled with its own -m flags; see core/CMakeLists.txt).
#include "core/reduce_kernels_impl.h"

namespace samplerd::kernels::detail {

const KernelTable& Sse2Table() {
  static const KernelTable table = MakeTable<xsimd::sse2>("sse2");
  return table;
}

}  // namespace samplerd::kernels::detail
