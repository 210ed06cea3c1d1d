// The CPU twins of STREAM's copy and triad. Compiled with -ffp-contract=off: contracting the
// triad into a fused multiply-add would round once instead of twice, and the kernel
// (__dmul_rn then __dadd_rn) would no longer match.
#include <string>

#include "common/error.h"
#include "kernels/stream.h"

namespace solver::kernels {
namespace {

void require_same_size(std::size_t a, std::size_t other, const char* what) {
  if (a != other)
    throw Error(ErrorKind::Input, std::string("STREAM ") + what + ": every array must have a's size " + std::to_string(a) +
                                      ", got " + std::to_string(other));
}

}  // namespace

void stream_copy_cpu(std::span<double> a, std::span<const double> b) {
  require_same_size(a.size(), b.size(), "copy");
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = b[i];
}

void stream_triad_cpu(std::span<double> a, std::span<const double> b, std::span<const double> c, double s) {
  require_same_size(a.size(), b.size(), "triad");
  require_same_size(a.size(), c.size(), "triad");
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = b[i] + s * c[i];
}

}  // namespace solver::kernels
