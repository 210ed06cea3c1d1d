// The operators a submitter's TorchScript model may run: one table, in train/script_allowlist.cpp.
// Invariant: an operator is listed only if it computes on the values it is given and touches
// nothing outside the process's tensors: no file, socket, process, thread, clock or global
// switch. Adding one means checking exactly that.
#pragma once

#include <string_view>

namespace solver::train::detail {

// Whether graph nodes of kind `op` ("aten::add", "prim::If": namespace and name, which covers
// every overload) may run. prim::Loop, prim::CallMethod, prim::CallFunction and device
// constants are listed but have further conditions, checked in train/script_check.cpp.
bool is_allowed_operator(std::string_view op);

}  // namespace solver::train::detail
