// The allowlist of TorchScript operators a submitter's model may run (see
// train/detail/script_allowlist.h; the check that applies it is train/script_check.cpp).
// Everything not listed is refused, whatever its namespace: file and network access
// (aten::from_file, c10d::), process and thread control (prim::fork, aten::wait), Python and
// custom classes (prim::PythonOp, prim::CreateObject), side effects on the rig (prim::Print,
// prim::SetAttr, aten::manual_seed, aten::set_num_threads) and custom operators of any other
// namespace. Operators PyTorch adds later are refused until someone reads what they do and lists
// them here.
#include "train/detail/script_allowlist.h"

#include <array>
#include <string_view>
#include <unordered_set>

namespace solver::train::detail {
namespace {

constexpr auto kAllowedOperators = std::to_array<std::string_view>({
    // Structure: constants, the module's own attributes, lists and tuples, branches, casts and
    // run-time type tests. They move values around and pick a branch; none runs code of its
    // own. A device constant must be the cpu (a model follows its input's device, x.device,
    // instead of naming a GPU that may be another task's).
    "prim::Constant", "prim::GetAttr", "prim::ListConstruct", "prim::ListUnpack", "prim::TupleConstruct",
    "prim::TupleUnpack", "prim::TupleIndex", "prim::TupleSlice", "prim::If", "prim::Uninitialized",
    "prim::unchecked_cast", "prim::isinstance", "prim::NumToTensor",
    // Calls: followed into the method or function they call, which is checked the same way.
    // Recursion, and a call whose target is chosen at run time (an interface), are refused.
    "prim::CallMethod", "prim::CallFunction",
    // Loops: only those whose trip count is fixed when they start and bounded by a constant, a
    // list's length or a tensor's number of dimensions (for loops over a shape, as BatchNorm,
    // GroupNorm and interpolate run); a while loop is refused. So every accepted graph ends,
    // though not necessarily soon (nested loops multiply their counts, and a list may be as long
    // as memory allows): the step time limit bounds how long.
    "prim::Loop",
    // Raising ends the step with an error, which fails the task like any bad input.
    "prim::RaiseException",
    // Reading a tensor's metadata, and scalar, list and string helpers of the scripting
    // language (TorchScript's own nn.functional code uses them for its argument checks; its
    // warnings too: a warning writes a line of the submitter's text to the rig's log each time
    // it runs, a nuisance docs/security.md lists).
    "prim::device", "prim::dtype", "prim::layout", "prim::is_cuda", "prim::is_nested", "prim::requires_grad",
    "prim::data", "prim::min", "prim::max", "prim::abs", "aten::size", "aten::dim", "aten::numel", "aten::len",
    "aten::__getitem__", "aten::_set_item", "aten::list", "aten::append", "aten::__contains__", "aten::__is__",
    "aten::__isnot__", "aten::__not__", "aten::__range_length", "aten::__derive_index", "aten::Int", "aten::Float",
    "aten::Bool", "aten::ScalarImplicit", "aten::IntImplicit", "aten::FloatImplicit", "aten::item",
    "aten::is_floating_point", "aten::is_grad_enabled", "aten::is_autocast_enabled", "aten::format", "aten::str",
    "aten::find", "aten::warn",
    // Elementwise arithmetic, comparison and logic (tensor and scalar overloads share a name):
    // pure functions of their inputs, each element computed once.
    "aten::add", "aten::add_", "aten::sub", "aten::sub_", "aten::rsub", "aten::mul", "aten::mul_", "aten::div",
    "aten::div_", "aten::true_divide", "aten::floordiv", "aten::floor_divide", "aten::remainder", "aten::fmod",
    "aten::neg", "aten::neg_", "aten::abs", "aten::pow", "aten::sqrt", "aten::rsqrt", "aten::square", "aten::exp",
    "aten::expm1", "aten::log", "aten::log1p", "aten::log2", "aten::log10", "aten::reciprocal", "aten::sign",
    "aten::floor", "aten::ceil", "aten::round", "aten::trunc", "aten::frac", "aten::clamp", "aten::clamp_",
    "aten::clamp_min", "aten::clamp_max", "aten::clip", "aten::maximum", "aten::minimum", "aten::lerp",
    "aten::addcmul", "aten::addcdiv", "aten::sin", "aten::cos", "aten::tan", "aten::atan", "aten::atan2",
    "aten::tanh", "aten::sigmoid", "aten::erf", "aten::erfc", "aten::where", "aten::masked_fill",
    "aten::masked_fill_", "aten::nan_to_num", "aten::isnan", "aten::isinf", "aten::isfinite", "aten::eq", "aten::ne",
    "aten::lt", "aten::le", "aten::gt", "aten::ge", "aten::logical_and", "aten::logical_or", "aten::logical_not",
    "aten::logical_xor", "aten::__and__", "aten::__or__", "aten::__xor__", "aten::any", "aten::all",
    // Linear algebra: products of the tensors given; their cost follows from the shapes.
    "aten::matmul", "aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::mv", "aten::dot", "aten::outer",
    "aten::linear", "aten::bilinear", "aten::einsum", "aten::t",
    // Convolution, pooling, resampling and padding: fixed-window maths over the input.
    "aten::conv1d", "aten::conv2d", "aten::conv3d", "aten::conv_transpose1d", "aten::conv_transpose2d",
    "aten::conv_transpose3d", "aten::max_pool1d", "aten::max_pool2d", "aten::max_pool3d",
    "aten::avg_pool1d", "aten::avg_pool2d", "aten::avg_pool3d", "aten::adaptive_avg_pool1d",
    "aten::adaptive_avg_pool2d", "aten::adaptive_avg_pool3d", "aten::adaptive_max_pool1d",
    "aten::adaptive_max_pool2d", "aten::adaptive_max_pool3d", "aten::pixel_shuffle", "aten::pixel_unshuffle",
    "aten::upsample_nearest1d", "aten::upsample_nearest2d", "aten::upsample_nearest3d", "aten::upsample_linear1d",
    "aten::upsample_bilinear2d", "aten::upsample_bicubic2d", "aten::upsample_trilinear3d",
    "aten::_upsample_nearest_exact1d", "aten::_upsample_nearest_exact2d", "aten::_upsample_nearest_exact3d",
    "aten::_upsample_bilinear2d_aa", "aten::_upsample_bicubic2d_aa", "aten::pad", "aten::constant_pad_nd",
    "aten::reflection_pad1d", "aten::reflection_pad2d", "aten::replication_pad1d", "aten::replication_pad2d",
    // Activations and softmax: elementwise, or along one dimension.
    "aten::relu", "aten::relu_", "aten::relu6", "aten::leaky_relu", "aten::leaky_relu_", "aten::gelu", "aten::silu",
    "aten::silu_", "aten::hardtanh", "aten::hardtanh_", "aten::hardswish", "aten::hardsigmoid", "aten::elu",
    "aten::elu_", "aten::selu", "aten::celu", "aten::softplus", "aten::mish", "aten::prelu", "aten::glu",
    "aten::log_sigmoid", "aten::threshold", "aten::softmax", "aten::log_softmax", "aten::_softmax",
    "aten::_log_softmax",
    // Normalisation, and dropout and random draws: the latter use torch's generator, which the
    // trainer seeds from the task seed before every step, so they replay bit for bit.
    "aten::batch_norm", "aten::layer_norm", "aten::group_norm", "aten::instance_norm", "aten::rms_norm",
    "aten::dropout", "aten::dropout_", "aten::feature_dropout", "aten::alpha_dropout", "aten::feature_alpha_dropout",
    "aten::rand", "aten::randn", "aten::rand_like", "aten::randn_like", "aten::randint", "aten::randint_like",
    "aten::bernoulli", "aten::bernoulli_", "aten::normal",
    // Shapes, views, indexing and copies: they read or write the tensors given (an index out of
    // range is an error, not a stray read). Not as_strided, set_ or resize_, which reinterpret
    // storage.
    "aten::view", "aten::view_as", "aten::reshape", "aten::reshape_as", "aten::flatten", "aten::unflatten",
    "aten::squeeze", "aten::squeeze_", "aten::unsqueeze", "aten::unsqueeze_", "aten::permute", "aten::transpose",
    "aten::transpose_", "aten::contiguous", "aten::expand", "aten::expand_as", "aten::repeat",
    "aten::repeat_interleave", "aten::tile", "aten::narrow", "aten::select", "aten::slice", "aten::index_select",
    "aten::gather", "aten::index", "aten::index_put_", "aten::scatter", "aten::scatter_add", "aten::masked_select",
    "aten::chunk", "aten::split", "aten::split_with_sizes", "aten::unbind", "aten::flip", "aten::roll",
    "aten::movedim", "aten::triu", "aten::tril", "aten::clone", "aten::detach", "aten::to", "aten::type_as",
    "aten::copy_", "aten::fill_", "aten::zero_", "aten::cat", "aten::concat", "aten::stack", "aten::embedding",
    "aten::one_hot",
    // New tensors with defined contents. Not empty, empty_like or new_empty: uninitialised
    // memory may hold bytes the process freed (a key, another task's data), which a loss could
    // carry out to the market.
    "aten::zeros", "aten::zeros_like", "aten::ones", "aten::ones_like", "aten::full", "aten::full_like",
    "aten::arange", "aten::linspace", "aten::eye", "aten::tensor", "aten::scalar_tensor", "aten::new_zeros",
    "aten::new_ones", "aten::new_full",
    // Reductions and sorting: one pass, or a sort, over the input.
    "aten::sum", "aten::mean", "aten::prod", "aten::max", "aten::min", "aten::amax", "aten::amin", "aten::argmax",
    "aten::argmin", "aten::std", "aten::var", "aten::logsumexp", "aten::cumsum", "aten::cumprod", "aten::norm",
    "aten::linalg_vector_norm", "aten::topk", "aten::sort", "aten::argsort",
    // Fused attention and recurrent layers (nn.MultiheadAttention, nn.TransformerEncoderLayer,
    // nn.LSTM, nn.GRU): the same maths in one kernel.
    "aten::scaled_dot_product_attention", "aten::_native_multi_head_attention",
    "aten::_transformer_encoder_layer_fwd", "aten::lstm", "aten::gru", "aten::rnn_tanh", "aten::rnn_relu",
    "aten::lstm_cell", "aten::gru_cell", "aten::rnn_tanh_cell", "aten::rnn_relu_cell",
});

}  // namespace

bool is_allowed_operator(std::string_view op) {
  static const std::unordered_set<std::string_view> allowed(kAllowedOperators.begin(), kAllowedOperators.end());
  return allowed.contains(op);
}

}  // namespace solver::train::detail
