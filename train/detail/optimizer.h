// Our own SGD, Adam and AdamW, written with the tensor ops of torch.optim's single-tensor
// implementations (PyTorch 1.13) in the same order, so one step matches torch.optim and the
// state is ours: named, allocated up front (a checkpoint at step 0 already has every slot)
// and identical across LibTorch versions. Invariant: the update is a pure function of
// (parameters, gradients, slots, step count, lr); changing an op or its order changes bits
// and so breaks bitwise replay of bundles made by earlier builds.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/task.h"
#include "train/detail/model.h"

namespace solver::train::detail {

class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // Updates, in place, every parameter that has a gradient (as torch.optim, parameters
  // without one are left alone) with learning rate `lr`, and counts the step. Leaves the
  // gradients as they are.
  void step(double lr);

  // The state tensors named "<parameter name>.<slot>", in parameter order then slot order.
  // The handles alias the optimizer's own tensors.
  std::vector<NamedTensor> state() const;
  std::int64_t step_count() const { return step_count_; }
  void set_step_count(std::int64_t count) { step_count_ = count; }

 protected:
  struct Entry {
    NamedTensor parameter;
    std::vector<at::Tensor> slots;  // zeros like the parameter, in slot_names_ order
  };

  Optimizer(std::vector<NamedTensor> parameters, std::vector<std::string> slot_names);
  // One parameter's update; step_count_ already counts this step.
  virtual void update(const at::Tensor& parameter, const at::Tensor& gradient, std::vector<at::Tensor>& slots,
                      double lr) = 0;

 private:
  std::int64_t step_count_ = 0;
  std::vector<std::string> slot_names_;
  std::vector<Entry> entries_;
};

// The optimizer spec.kind names over the trainable parameters.
std::unique_ptr<Optimizer> make_optimizer(const OptimizerSpec& spec, std::vector<NamedTensor> parameters);

}  // namespace solver::train::detail
