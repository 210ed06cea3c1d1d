// solver::Error: the one exception type our libraries throw.
// Its kind tells main() which exit code to use and the agent whether to retry;
// its message names what was wrong, the value seen and what was expected.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace solver {

enum class ErrorKind {
  Usage,         // the command line was wrong
  Config,        // a configuration value was invalid
  Input,         // a task, bundle, checkpoint or data file was malformed or did not match its hash
  Io,            // the disk failed us (open, write, fsync, rename)
  Network,       // a peer errored, hung or lied
  Cuda,          // the GPU or its runtime failed
  Budget,        // a task exceeded its step, time or memory budget
  OutOfMemory,   // a step needed more memory than the device (or the host's limit) had: the rig's limit, not the task's
  Capacity,      // a task asks for more than this rig's operator allows (its ceilings): declined, not failed
  Verification,  // a proof could not be checked (not a rejection: rejections are verdicts)
  Internal,      // a bug in solver
};

std::string_view error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message, bool retryable = false)
      : std::runtime_error(message), kind_(kind), retryable_(retryable) {}

  ErrorKind kind() const { return kind_; }
  bool retryable() const { return retryable_; }

  // A copy whose message starts with `context: `, for layers that add where it happened.
  Error with_context(std::string_view context) const {
    return Error(kind_, std::string(context) + ": " + what(), retryable_);
  }

 private:
  ErrorKind kind_;
  bool retryable_;
};

}  // namespace solver
