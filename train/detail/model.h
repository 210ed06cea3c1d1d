// The model behind the trainer: the built-in "mlp", "cnn" and "gpt" (torch::nn) and loaded
// TorchScript modules, hidden behind one small interface so that only models.cpp pays for
// torch/torch.h. Invariant: parameters() and buffers() list tensors in the same order on
// every call and every run (the order of the checkpoint), and the handles alias the model's
// own storage, so in-place updates through them are updates of the model.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/task.h"
#include "train/detail/step_watchdog.h"

namespace solver::train::detail {

struct NamedTensor {
  std::string name;  // as PyTorch's state_dict spells it: "1.weight", "fc.bias"
  at::Tensor tensor;
};

// Input and output sizes an image model is built for (a gpt's are in its spec).
struct ModelShape {
  std::int64_t channels = 1;  // images are [B, channels, height, width]
  std::int64_t height = 0;
  std::int64_t width = 0;
  std::int64_t classes = 0;   // logits are [B, classes]
};

class Model {
 public:
  virtual ~Model() = default;
  // Logits [B, classes] for normalised float images [B, channels, height, width]; a gpt's
  // are [B * context, vocab_size] for int64 tokens [B, context], one row per position.
  virtual at::Tensor forward(const at::Tensor& inputs) = 0;
  // forward(), also appending each top-level module's output in the order computed; the
  // result is bit for bit forward()'s. Models without named modules append one, "forward".
  virtual at::Tensor forward_traced(const at::Tensor& inputs, std::vector<NamedTensor>& outputs) {
    at::Tensor logits = forward(inputs);
    outputs.push_back({"forward", logits});
    return logits;
  }
  virtual std::vector<NamedTensor> parameters() const = 0;
  virtual std::vector<NamedTensor> buffers() const = 0;
  virtual void set_training(bool training) = 0;
};

// Builds the task's model on `device`. Built-in models draw their initial weights on the CPU
// from derive_seed(task.seed, kStreamInit, 0) and then move, so the initialisation does not
// depend on the device; a TorchScript model's weights are its initialisation. A TorchScript
// model is checked (script_check.h) before any of it runs, then makes a trial forward pass that
// `watchdog` times. Throws Error(Input) for a model file that does not load, fails the check or
// does not map images to [B, classes]; Error(Budget) for a trial pass past the time limit.
std::unique_ptr<Model> build_model(const Task& task, const ModelShape& shape, c10::Device device,
                                   StepWatchdog& watchdog);

}  // namespace solver::train::detail
