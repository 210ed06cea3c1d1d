#include "cli/signals.h"

#include <signal.h>
#include <unistd.h>

#include <array>

#include "common/log.h"

namespace solver::cli {
namespace {

std::atomic<bool> stop_requested{false};
std::atomic<bool> reload_requested{false};
// The note is for a person watching plain log lines; a journal or JSON stream gets only whole
// log lines (the agent logs how it stopped).
std::atomic<bool> note_on_stop{true};
constexpr std::array<int, 4> kSignals = {SIGINT, SIGTERM, SIGQUIT, SIGHUP};
std::array<struct sigaction, kSignals.size()> previous{};

void on_stop(int) {
  if (stop_requested.exchange(true)) ::_exit(130);  // the second signal: no more waiting
  if (!note_on_stop) return;
  static constexpr char kNote[] = "\nsolver: stopping, saving work in progress (signal again to exit at once)\n";
  [[maybe_unused]] const auto written = ::write(STDERR_FILENO, kNote, sizeof(kNote) - 1);
}

void on_reload(int) { reload_requested = true; }

}  // namespace

StopSignals::StopSignals(bool reload_on_hangup) {
  stop_requested = false;
  reload_requested = false;
  note_on_stop = log_format() == LogFormat::Text;
  for (std::size_t i = 0; i < kSignals.size(); ++i) {
    struct sigaction action {};
    action.sa_handler = kSignals[i] == SIGHUP && reload_on_hangup ? &on_reload : &on_stop;
    sigemptyset(&action.sa_mask);
    ::sigaction(kSignals[i], &action, &previous[i]);
  }
}

StopSignals::~StopSignals() {
  for (std::size_t i = 0; i < kSignals.size(); ++i) ::sigaction(kSignals[i], &previous[i], nullptr);
}

const std::atomic<bool>& StopSignals::flag() { return stop_requested; }

std::atomic<bool>& StopSignals::reload_flag() { return reload_requested; }

}  // namespace solver::cli
