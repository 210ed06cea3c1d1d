#include "common/error.h"

namespace solver {

std::string_view error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::Usage: return "usage";
    case ErrorKind::Config: return "config";
    case ErrorKind::Input: return "input";
    case ErrorKind::Io: return "io";
    case ErrorKind::Network: return "network";
    case ErrorKind::Cuda: return "cuda";
    case ErrorKind::Budget: return "budget";
    case ErrorKind::OutOfMemory: return "out-of-memory";
    case ErrorKind::Capacity: return "capacity";
    case ErrorKind::Verification: return "verification";
    case ErrorKind::Internal: return "internal";
  }
  return "unknown";
}

}  // namespace solver
