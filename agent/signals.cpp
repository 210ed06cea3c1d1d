#include "agent/signals.h"

#include <signal.h>
#include <unistd.h>

namespace solver::agent {
namespace {

std::atomic<bool> stop_requested{false};
struct sigaction previous_int {};
struct sigaction previous_term {};

void on_signal(int) {
  if (stop_requested.exchange(true)) ::_exit(130);  // the second signal: no more waiting
  static constexpr char kNote[] = "\nsolver: stopping, saving work in progress (signal again to exit at once)\n";
  [[maybe_unused]] const auto written = ::write(STDERR_FILENO, kNote, sizeof(kNote) - 1);
}

}  // namespace

StopSignals::StopSignals() {
  stop_requested = false;
  struct sigaction action {};
  action.sa_handler = &on_signal;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGINT, &action, &previous_int);
  ::sigaction(SIGTERM, &action, &previous_term);
}

StopSignals::~StopSignals() {
  ::sigaction(SIGINT, &previous_int, nullptr);
  ::sigaction(SIGTERM, &previous_term, nullptr);
}

const std::atomic<bool>& StopSignals::flag() { return stop_requested; }

}  // namespace solver::agent
