// Catch2's main, compiled once into a library (it takes ~15 s to compile). Library logs are
// kept to warnings so that test output shows what failed, not every checkpoint written.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "common/log.h"

int main(int argc, char* argv[]) {
  solver::set_log_level(solver::LogLevel::Warn);
  return Catch::Session().run(argc, argv);
}
