#include "common/version.h"
namespace solver {
std::string_view solver_version() { return SOLVER_VERSION; }
}
