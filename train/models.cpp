// The model zoo: "mlp" and "cnn" built with torch::nn, and "torchscript" modules loaded from
// a file. The only file of train/ that includes torch/torch.h. Invariants: built-in layer
// order (and so parameter names, "1.weight"...) matches the nn.Sequential a Python verifier
// would build; built-in weights are drawn on the CPU right after seeding; TorchScript runs
// without the graph executor's optimisations, whose profiling switches kernels after the
// first calls and would make step 1 compute differently from a replayed step 1.
#include <torch/script.h>
#include <torch/torch.h>

#include <utility>

#include "common/data_order.h"
#include "common/error.h"
#include "train/detail/model.h"

namespace solver::train::detail {
namespace {

std::string shape_text(c10::IntArrayRef sizes) {
  std::string text = "[";
  for (std::size_t i = 0; i < sizes.size(); ++i) text += (i ? ", " : "") + std::to_string(sizes[i]);
  return text + "]";
}

// "torch::nn::LinearImpl" -> "Linear".
std::string layer_kind(const torch::nn::Module& layer) {
  std::string name = layer.name();
  if (name.starts_with("torch::nn::")) name.erase(0, 11);
  if (name.ends_with("Impl")) name.erase(name.size() - 4);
  return name;
}

class SequentialModel final : public Model {
 public:
  SequentialModel(torch::nn::Sequential layers, c10::Device device) : layers_(std::move(layers)) {
    layers_->to(device);
  }

  at::Tensor forward(const at::Tensor& images) override { return layers_->forward(images); }

  // What Sequential::forward does, one layer at a time; outputs are named "1 (Linear)".
  at::Tensor forward_traced(const at::Tensor& images, std::vector<NamedTensor>& outputs) override {
    at::Tensor value = images;
    std::size_t index = 0;
    for (auto& layer : *layers_) {
      value = layer.forward(value);
      outputs.push_back({std::to_string(index++) + " (" + layer_kind(*layer.ptr()) + ")", value});
    }
    return value;
  }

  std::vector<NamedTensor> parameters() const override {
    std::vector<NamedTensor> named;
    for (const auto& item : layers_->named_parameters(true)) named.push_back({item.key(), item.value()});
    return named;
  }

  std::vector<NamedTensor> buffers() const override {
    std::vector<NamedTensor> named;
    for (const auto& item : layers_->named_buffers(true)) named.push_back({item.key(), item.value()});
    return named;
  }

  void set_training(bool training) override { layers_->train(training); }

 private:
  torch::nn::Sequential layers_;
};

// Flatten, then Linear + ReLU per hidden width, then Linear to the classes.
torch::nn::Sequential build_mlp(const ModelSpec& spec, const ModelShape& shape) {
  torch::nn::Sequential layers;
  layers->push_back(torch::nn::Flatten());
  std::int64_t features = shape.channels * shape.height * shape.width;
  for (const std::int64_t width : spec.hidden) {
    layers->push_back(torch::nn::Linear(features, width));
    layers->push_back(torch::nn::ReLU());
    features = width;
  }
  layers->push_back(torch::nn::Linear(features, shape.classes));
  return layers;
}

// Per channels entry Conv2d(3x3, padding 1) + ReLU + MaxPool2d(2), then Flatten + Linear.
torch::nn::Sequential build_cnn(const ModelSpec& spec, const ModelShape& shape) {
  torch::nn::Sequential layers;
  std::int64_t channels = shape.channels, height = shape.height, width = shape.width;
  for (const std::int64_t out_channels : spec.channels) {
    if (height < 2 || width < 2)
      throw Error(ErrorKind::Input, "model.channels: " + std::to_string(spec.channels.size()) + " conv blocks halve " +
                                        std::to_string(shape.height) + "x" + std::to_string(shape.width) +
                                        " images below 1x1; use fewer blocks");
    layers->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, out_channels, 3).padding(1)));
    layers->push_back(torch::nn::ReLU());
    layers->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2)));
    channels = out_channels;
    height /= 2;
    width /= 2;
  }
  layers->push_back(torch::nn::Flatten());
  layers->push_back(torch::nn::Linear(channels * height * width, shape.classes));
  return layers;
}

class ScriptModel final : public Model {
 public:
  ScriptModel(torch::jit::Module module, c10::Device device) : module_(std::move(module)) { module_.to(device); }

  at::Tensor forward(const at::Tensor& images) override {
    torch::jit::GraphOptimizerEnabledGuard unoptimized(false);
    return module_.forward({images}).toTensor();
  }

  std::vector<NamedTensor> parameters() const override {
    std::vector<NamedTensor> named;
    for (const auto& item : module_.named_parameters(true)) named.push_back({item.name, item.value});
    return named;
  }

  std::vector<NamedTensor> buffers() const override {
    std::vector<NamedTensor> named;
    for (const auto& item : module_.named_buffers(true)) named.push_back({item.name, item.value});
    return named;
  }

  void set_training(bool training) override { module_.train(training); }

 private:
  torch::jit::Module module_;
};

std::unique_ptr<Model> load_script_model(const ModelSpec& spec, const ModelShape& shape, c10::Device device) {
  const std::filesystem::path path = checked_local_file(spec.file, "model.file");
  torch::jit::Module module;
  try {
    module = torch::jit::load(path.string(), torch::kCPU);
  } catch (const c10::Error& error) {
    throw Error(ErrorKind::Input, "model.file: " + path.string() + " is not a loadable TorchScript module: " +
                                      error.what_without_backtrace());
  }
  auto model = std::make_unique<ScriptModel>(std::move(module), device);

  // A trial forward pass, so that a module that does not fit the data fails here, before training.
  const std::vector<std::int64_t> input_shape{2, shape.channels, shape.height, shape.width};
  const std::vector<std::int64_t> expected_shape{2, shape.classes};
  at::Tensor logits;
  try {
    torch::NoGradGuard no_grad;
    model->set_training(false);
    logits = model->forward(torch::zeros(input_shape, torch::TensorOptions().device(device)));
    model->set_training(true);
  } catch (const c10::Error& error) {
    throw Error(ErrorKind::Input, "model.file: " + path.string() + ": forward of a " + shape_text(input_shape) +
                                      " batch failed: " + error.what_without_backtrace());
  }
  if (logits.scalar_type() != torch::kFloat || logits.sizes() != c10::IntArrayRef(expected_shape))
    throw Error(ErrorKind::Input, "model.file: " + path.string() + ": forward of a " + shape_text(input_shape) +
                                      " batch gave " + std::string(c10::toString(logits.scalar_type())) + " " +
                                      shape_text(logits.sizes()) + ", expected Float " + shape_text(expected_shape) +
                                      " logits");
  return model;
}

}  // namespace

std::unique_ptr<Model> build_model(const Task& task, const ModelShape& shape, c10::Device device) {
  const ModelSpec& spec = task.model;
  if (spec.kind == "torchscript") return load_script_model(spec, shape, device);
  torch::manual_seed(derive_seed(task.seed, kStreamInit, 0));
  if (spec.kind == "mlp") return std::make_unique<SequentialModel>(build_mlp(spec, shape), device);
  if (spec.kind == "cnn") return std::make_unique<SequentialModel>(build_cnn(spec, shape), device);
  throw Error(ErrorKind::Input, "model.kind: unknown model \"" + spec.kind + "\" (expected mlp, cnn or torchscript)");
}

}  // namespace solver::train::detail
