// SGD, Adam and AdamW as torch.optim computes them (see detail/optimizer.h). Each update
// below names the PyTorch line it mirrors; scalars are doubles, as Python floats are, and
// LibTorch rounds them to the tensor's dtype exactly as it does for Python.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include "train/detail/optimizer.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/zeros_like.h>

#include <cmath>
#include <utility>

#include "common/error.h"

namespace solver::train::detail {

Optimizer::Optimizer(std::vector<NamedTensor> parameters, std::vector<std::string> slot_names)
    : slot_names_(std::move(slot_names)) {
  for (NamedTensor& parameter : parameters) {
    Entry entry{std::move(parameter), {}};
    for (std::size_t slot = 0; slot < slot_names_.size(); ++slot)
      entry.slots.push_back(at::zeros_like(entry.parameter.tensor, at::MemoryFormat::Contiguous));
    entries_.push_back(std::move(entry));
  }
}

void Optimizer::step(double lr) {
  at::NoGradGuard no_grad;
  ++step_count_;
  for (Entry& entry : entries_) {
    const at::Tensor& gradient = entry.parameter.tensor.grad();
    if (!gradient.defined()) continue;
    update(entry.parameter.tensor, gradient, entry.slots, lr);
  }
}

std::vector<NamedTensor> Optimizer::state() const {
  std::vector<NamedTensor> state;
  for (const Entry& entry : entries_)
    for (std::size_t slot = 0; slot < slot_names_.size(); ++slot)
      state.push_back({entry.parameter.name + "." + slot_names_[slot], entry.slots[slot]});
  return state;
}

namespace {

// torch.optim.SGD without dampening; slot "momentum_buffer" when momentum != 0. PyTorch starts
// the buffer as a copy of the first direction; ours starts at zero, and 0 * m + d is d exactly.
class Sgd final : public Optimizer {
 public:
  Sgd(const OptimizerSpec& spec, std::vector<NamedTensor> parameters)
      : Optimizer(std::move(parameters), spec.momentum != 0.0 ? std::vector<std::string>{"momentum_buffer"}
                                                               : std::vector<std::string>{}),
        spec_(spec) {}

 private:
  void update(const at::Tensor& parameter, const at::Tensor& gradient, std::vector<at::Tensor>& slots,
              double lr) override {
    at::Tensor direction = gradient;
    if (spec_.weight_decay != 0.0) direction = direction.add(parameter, spec_.weight_decay);  // d_p.add(param, alpha=wd)
    if (spec_.momentum != 0.0) {
      at::Tensor& buffer = slots[0];
      buffer.mul_(spec_.momentum).add_(direction);  // buf.mul_(momentum).add_(d_p, alpha=1 - dampening)
      direction = spec_.nesterov ? direction.add(buffer, spec_.momentum) : buffer;  // d_p.add(buf, alpha=momentum)
    }
    parameter.add_(direction, -lr);  // param.add_(d_p, alpha=-lr)
  }

  OptimizerSpec spec_;
};

// torch.optim.Adam (weight decay as L2 on the gradient) and torch.optim.AdamW (decoupled:
// the parameter shrinks by lr * weight_decay first); slots "exp_avg" and "exp_avg_sq".
class Adam final : public Optimizer {
 public:
  Adam(const OptimizerSpec& spec, std::vector<NamedTensor> parameters, bool decoupled_weight_decay)
      : Optimizer(std::move(parameters), {"exp_avg", "exp_avg_sq"}),
        spec_(spec),
        decoupled_weight_decay_(decoupled_weight_decay) {}

 private:
  void update(const at::Tensor& parameter, const at::Tensor& gradient, std::vector<at::Tensor>& slots,
              double lr) override {
    at::Tensor& exp_avg = slots[0];
    at::Tensor& exp_avg_sq = slots[1];
    at::Tensor direction = gradient;
    if (spec_.weight_decay != 0.0) {
      if (decoupled_weight_decay_)
        parameter.mul_(1.0 - lr * spec_.weight_decay);  // param.mul_(1 - lr * weight_decay)
      else
        direction = direction.add(parameter, spec_.weight_decay);  // grad.add(param, alpha=weight_decay)
    }
    exp_avg.mul_(spec_.beta1).add_(direction, 1.0 - spec_.beta1);
    exp_avg_sq.mul_(spec_.beta2).addcmul_(direction, direction, 1.0 - spec_.beta2);

    const auto step = static_cast<double>(step_count());
    const double bias_correction1 = 1.0 - std::pow(spec_.beta1, step);
    const double bias_correction2 = 1.0 - std::pow(spec_.beta2, step);
    const double step_size = lr / bias_correction1;
    const double bias_correction2_sqrt = std::sqrt(bias_correction2);
    const at::Tensor denominator = exp_avg_sq.sqrt().div(bias_correction2_sqrt).add_(spec_.eps);
    parameter.addcdiv_(exp_avg, denominator, -step_size);
  }

  OptimizerSpec spec_;
  bool decoupled_weight_decay_;
};

}  // namespace

std::unique_ptr<Optimizer> make_optimizer(const OptimizerSpec& spec, std::vector<NamedTensor> parameters) {
  switch (spec.kind) {
    case OptimizerKind::Sgd: return std::make_unique<Sgd>(spec, std::move(parameters));
    case OptimizerKind::Adam: return std::make_unique<Adam>(spec, std::move(parameters), false);
    case OptimizerKind::AdamW: return std::make_unique<Adam>(spec, std::move(parameters), true);
  }
  throw Error(ErrorKind::Internal, "training.optimizer.kind: no optimizer for kind " + std::to_string(static_cast<int>(spec.kind)));
}

}  // namespace solver::train::detail
