#pragma once
#include <string_view>
namespace solver {
std::string_view solver_version();  // the project version, e.g. "0.1.0"
}
