#include "agent/exit_status.h"

namespace solver::agent {

int exit_status_for(const Error& error) {
  switch (error.kind()) {
    case ErrorKind::Usage: return kExitUsage;
    case ErrorKind::Config: return kExitConfig;
    case ErrorKind::Cuda: return kExitGpu;
    case ErrorKind::Internal: return kExitInternal;
    case ErrorKind::Network: return error.retryable() ? kExitTemporary : kExitBadInput;  // unreachable vs a refusal
    case ErrorKind::Input:
    case ErrorKind::Io:
    case ErrorKind::Budget:
    case ErrorKind::OutOfMemory:
    case ErrorKind::Capacity:
    case ErrorKind::Verification: return kExitBadInput;
  }
  return kExitInternal;
}

}  // namespace solver::agent
