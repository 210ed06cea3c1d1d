// The check of a submitter's TorchScript model (train/detail/script_check.h). It reads the graphs
// torch::jit::load compiled from the archive's code: the code a forward pass runs is exactly the
// graph of forward plus the graphs it calls (prim::CallMethod, prim::CallFunction; submodule
// hooks are calls in the caller's graph), so walking them covers all of it. The scripting
// compiler unrolls iteration over a ModuleList and refuses recursion, but an archive's code is
// written by a stranger, so recursion is refused here again rather than trusted to the compiler.
#include "train/detail/script_check.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/ir/ir.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "train/detail/script_allowlist.h"

namespace solver::train::detail {
namespace {

// A while loop compiles to the trip count 2^63 - 1 ("no bound"), so a constant is a bound only
// well below that. 2^20 is far above what layers use (2 or 3) and keeps a loop's own overhead
// (about a microsecond an iteration) to about a second.
constexpr std::int64_t kMaxConstantTripCount = std::int64_t{1} << 20;
// File and record names in errors come from a stranger's archive: printable and short.
constexpr std::size_t kMaxNameLength = 80;

std::string printable(std::string text) {
  std::erase_if(text, [](char c) { return static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e; });
  if (text.size() > kMaxNameLength) text.resize(kMaxNameLength);
  return text;
}

// "model.py:12": the line of the exporter's source a node was compiled from (the archive keeps it
// as debug information), else of the archive's own code; empty when neither is known.
std::string source_location(const torch::jit::Node& node) {
  const torch::jit::SourceRange& range = node.sourceRange();
  const auto original = range.findSourceRangeThatGenerated();
  const auto located = (original ? *original : range).file_line_col();
  if (!located) return "";
  const auto& [file, line, column] = *located;
  return printable(std::filesystem::path(file).filename().string()) + ":" + std::to_string(line);
}

std::optional<std::int64_t> int_constant(const torch::jit::Value* value) {
  if (value->node()->kind() != c10::prim::Constant) return std::nullopt;
  const auto constant = torch::jit::toIValue(value);
  if (!constant || !constant->isInt()) return std::nullopt;
  return constant->toInt();
}

// Whether a loop's trip count is bounded by something that exists when the loop starts: a
// constant up to kMaxConstantTripCount, a list's length (the list is in memory, so its length is
// bounded by memory, though a list of n elements that the data chose, [0] * n, can make the loop
// long: the step time limit bounds that), a tensor's number of dimensions, one of these less a
// constant (range(len(size) - 2)), or the length of range(constant, one of these, positive
// constant). Not a tensor's size along a dimension: an expanded view claims any size without
// the memory behind it.
bool is_bounded_count(const torch::jit::Value* count) {
  const torch::jit::Node* producer = count->node();
  const std::string_view op = producer->kind().toQualString();
  if (op == "prim::Constant") {
    const std::optional<std::int64_t> constant = int_constant(count);
    return constant && *constant >= 0 && *constant <= kMaxConstantTripCount;
  }
  if (op == "aten::len") return producer->input(0)->type()->kind() == c10::TypeKind::ListType;
  if (op == "aten::dim") return true;
  if (op == "aten::sub") {
    const std::optional<std::int64_t> subtrahend = int_constant(producer->input(1));
    return subtrahend && *subtrahend >= 0 && is_bounded_count(producer->input(0));
  }
  if (op == "aten::__range_length") {
    const std::optional<std::int64_t> start = int_constant(producer->input(0));
    const std::optional<std::int64_t> step = int_constant(producer->input(2));
    return start && *start >= 0 && step && *step >= 1 && is_bounded_count(producer->input(1));
  }
  return false;
}

// Walks graphs depth first; `path_` is the chain of calls from forward to the graph being walked.
class GraphChecker {
 public:
  // Checks `function`'s graph and everything it calls, unless an earlier call checked it.
  void check_function(torch::jit::Function& function, const std::string& name) {
    if (!checked_.insert(&function).second) return;
    path_.push_back({&function, name});
    check_block(*torch::jit::toGraphFunction(function).graph()->block());
    path_.pop_back();
  }

 private:
  struct Call {
    const torch::jit::Function* function;
    std::string name;  // "forward", "Block.forward", "relu"
  };

  void check_block(const torch::jit::Block& block) {
    for (const torch::jit::Node* node : block.nodes()) check_node(*node);
  }

  void check_node(const torch::jit::Node& node) {
    const std::string op = node.kind().toQualString();
    if (!is_allowed_operator(op)) refuse(node, "operator " + op + " is not allowed");
    if (node.kind() == c10::prim::Loop && !is_bounded_count(node.input(0)))
      refuse(node, "a loop whose trip count is not bounded when it starts (a while loop, or range(n) of an n "
                   "computed at run time) is not allowed");
    if (node.kind() == c10::prim::Constant && node.output()->type()->kind() == c10::TypeKind::DeviceObjType) {
      const c10::Device device = torch::jit::toIValue(node.output())->toDevice();
      // Constants are hoisted and keep no source line: the line is their first use's.
      const torch::jit::Node& located = node.output()->uses().empty() ? node : *node.output()->uses().front().user;
      if (!device.is_cpu())
        refuse(located, "the device constant " + device.str() + " is not allowed: a model follows its input's device "
                        "(x.device) instead of naming one");
    }
    if (node.kind() == c10::prim::CallMethod) check_method_call(node);
    if (node.kind() == c10::prim::CallFunction) check_function_call(node);
    for (const torch::jit::Block* block : node.blocks()) check_block(*block);
  }

  void check_method_call(const torch::jit::Node& call) {
    const std::string& method = call.s(c10::attr::name);
    const c10::TypePtr& receiver = call.input(0)->type();
    const c10::ClassTypePtr owner = receiver->cast<c10::ClassType>();
    if (!owner)
      refuse(call, "the call of " + method + " on " + receiver->repr_str() +
                       " is not allowed: its target is chosen at run time (an interface)");
    const std::string owner_name = owner->name() ? owner->name()->name() : owner->repr_str();
    check_call(call, owner->findMethod(method), owner_name + "." + method);
  }

  void check_function_call(const torch::jit::Node& call) {
    const c10::FunctionTypePtr type = call.input(0)->type()->cast<c10::FunctionType>();
    torch::jit::Function* callee = type ? type->function() : nullptr;
    check_call(call, callee, callee ? callee->name() : call.input(0)->type()->repr_str());
  }

  void check_call(const torch::jit::Node& call, torch::jit::Function* callee, const std::string& callee_name) {
    if (callee == nullptr || !callee->isGraphFunction())
      refuse(call, "the call of " + callee_name + ", which is not TorchScript (a custom class's method), is not allowed");
    if (std::any_of(path_.begin(), path_.end(), [&](const Call& caller) { return caller.function == callee; }))
      refuse(call, "the recursive call of " + callee_name + " is not allowed");
    check_function(*callee, callee_name);
  }

  [[noreturn]] void refuse(const torch::jit::Node& node, const std::string& what) const {
    std::string where = "in ";
    for (std::size_t i = 0; i < path_.size(); ++i) where += (i ? " > " : "") + path_[i].name;
    const std::string location = source_location(node);
    if (!location.empty()) where += ", " + location;
    throw Error(ErrorKind::Input, "model.file: " + what + " (" + where + ")");
  }

  std::set<const torch::jit::Function*> checked_;
  std::vector<Call> path_;
};

}  // namespace

void check_script_archive(const std::filesystem::path& path) {
  caffe2::serialize::PyTorchStreamReader reader(path.string());
  // The importer compiles code only from the archive's .py records.
  for (const std::string& record : reader.getAllRecords()) {
    if (!record.ends_with(".py")) continue;
    const auto [data, size] = reader.getRecord(record);
    const std::string_view code(static_cast<const char*>(data.get()), size);
    if (code.find("__setstate__") != std::string_view::npos)
      throw Error(ErrorKind::Input, "model.file: " + printable(record) +
                                        " defines __setstate__, which loading the module would run before it could be "
                                        "checked; a model's state must be its parameters and buffers");
  }
}

void check_script_module(const torch::jit::Module& module) {
  const auto forward = module.find_method("forward");
  if (!forward) throw Error(ErrorKind::Input, "model.file: the module has no forward method");
  GraphChecker().check_function(forward->function(), "forward");
}

}  // namespace solver::train::detail
