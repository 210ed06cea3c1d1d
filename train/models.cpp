// The model zoo: "mlp", "cnn" and "gpt" built with torch::nn, and "torchscript" modules loaded
// from a file. The only file of train/ that includes torch/torch.h. Invariants: built-in layer
// order (and so parameter names, "1.weight"...) matches the nn.Sequential a Python verifier
// would build, and the gpt's names are nanoGPT's without its "transformer." prefix; built-in weights are drawn on the CPU right after seeding; TorchScript runs
// without the graph executor's optimisations, whose profiling switches kernels after the
// first calls and would make step 1 compute differently from a replayed step 1; a TorchScript
// file is a stranger's code, so nothing of it runs before script_check.h has passed it.
#include <torch/csrc/jit/frontend/error_report.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <utility>

#include "common/data_order.h"
#include "common/error.h"
#include "train/detail/model.h"
#include "train/detail/script_check.h"

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

// nanoGPT's CausalSelfAttention, written out with matmuls and a mask rather than a fused
// attention kernel: fused kernels differ between LibTorch versions and devices, and some have
// no deterministic backward.
struct CausalSelfAttentionImpl : torch::nn::Module {
  CausalSelfAttentionImpl(std::int64_t embed, std::int64_t heads_)
      : heads(heads_),
        c_attn(register_module("c_attn", torch::nn::Linear(embed, 3 * embed))),
        c_proj(register_module("c_proj", torch::nn::Linear(embed, embed))) {}

  torch::Tensor forward(const torch::Tensor& x) {
    const std::int64_t batch = x.size(0), time = x.size(1), embed = x.size(2), head_size = embed / heads;
    const std::vector<torch::Tensor> qkv = c_attn(x).split(embed, 2);
    const auto per_head = [&](const torch::Tensor& t) { return t.view({batch, time, heads, head_size}).transpose(1, 2); };
    const torch::Tensor q = per_head(qkv[0]), k = per_head(qkv[1]), v = per_head(qkv[2]);
    const torch::Tensor future =
        torch::ones({time, time}, torch::TensorOptions().dtype(torch::kBool).device(x.device())).triu(1);
    const torch::Tensor scores = q.matmul(k.transpose(-2, -1))
                                     .mul(1.0 / std::sqrt(static_cast<double>(head_size)))
                                     .masked_fill(future, -std::numeric_limits<float>::infinity());
    return c_proj(scores.softmax(-1).matmul(v).transpose(1, 2).contiguous().view({batch, time, embed}));
  }

  std::int64_t heads;
  torch::nn::Linear c_attn, c_proj;
};
TORCH_MODULE(CausalSelfAttention);

struct MlpImpl : torch::nn::Module {
  explicit MlpImpl(std::int64_t embed)
      : c_fc(register_module("c_fc", torch::nn::Linear(embed, 4 * embed))),
        c_proj(register_module("c_proj", torch::nn::Linear(4 * embed, embed))) {}

  torch::Tensor forward(const torch::Tensor& x) { return c_proj(torch::gelu(c_fc(x))); }

  torch::nn::Linear c_fc, c_proj;
};
TORCH_MODULE(Mlp);

// A pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).
struct BlockImpl : torch::nn::Module {
  explicit BlockImpl(const GptSpec& spec)
      : ln_1(register_module("ln_1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({spec.embed})))),
        attn(register_module("attn", CausalSelfAttention(spec.embed, spec.heads))),
        ln_2(register_module("ln_2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({spec.embed})))),
        mlp(register_module("mlp", Mlp(spec.embed))) {}

  torch::Tensor forward(const torch::Tensor& x) {
    const torch::Tensor attended = x + attn(ln_1(x));
    return attended + mlp(ln_2(attended));
  }

  torch::nn::LayerNorm ln_1;
  CausalSelfAttention attn;
  torch::nn::LayerNorm ln_2;
  Mlp mlp;
};
TORCH_MODULE(Block);

// A decoder-only transformer (nanoGPT's GPT without dropout): token and position embeddings,
// pre-LN blocks, a final LayerNorm, and a head tied to the token embedding (as nanoGPT and
// GPT-2: a third fewer parameters at small sizes, and the logits start near zero).
struct GptImpl : torch::nn::Module {
  explicit GptImpl(const GptSpec& spec)
      : wte(register_module("wte", torch::nn::Embedding(spec.vocab_size, spec.embed))),
        wpe(register_module("wpe", torch::nn::Embedding(spec.context, spec.embed))),
        h(register_module("h", torch::nn::ModuleList())),
        ln_f(register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({spec.embed})))) {
    for (std::int64_t layer = 0; layer < spec.layers; ++layer) {
      blocks.push_back(Block(spec));
      h->push_back(blocks.back());
    }
    initialize(spec.layers);
  }

  // nanoGPT's initialisation: N(0, 0.02) weights, zero biases, and the projections back into
  // the residual stream scaled by 1/sqrt(2 * layers) so that its variance does not grow with depth.
  void initialize(std::int64_t layers) {
    torch::NoGradGuard no_grad;
    const double residual_std = 0.02 / std::sqrt(2.0 * static_cast<double>(layers));
    for (const auto& item : named_parameters(true)) {
      const std::string& name = item.key();
      if (name.find("ln_") != std::string::npos) continue;  // LayerNorms keep their ones and zeros
      if (name.ends_with(".bias")) {
        item.value().zero_();
      } else {
        item.value().normal_(0.0, name.ends_with("c_proj.weight") ? residual_std : 0.02);
      }
    }
  }

  // Logits [B * T, vocab] for tokens [B, T]; with `outputs`, also each top-level module's output.
  torch::Tensor run(const torch::Tensor& tokens, std::vector<NamedTensor>* outputs) {
    const auto record = [&](std::string name, const torch::Tensor& value) {
      if (outputs) outputs->push_back({std::move(name), value});
      return value;
    };
    const torch::Tensor positions =
        torch::arange(tokens.size(1), torch::TensorOptions().dtype(torch::kLong).device(tokens.device()));
    const torch::Tensor token_embeddings = record("wte (Embedding)", wte(tokens));  // before wpe: the trace's order
    torch::Tensor x = token_embeddings + record("wpe (Embedding)", wpe(positions));
    for (std::size_t layer = 0; layer < blocks.size(); ++layer)
      x = record("h." + std::to_string(layer) + " (Block)", blocks[layer](x));
    x = record("ln_f (LayerNorm)", ln_f(x));
    const torch::Tensor logits = torch::nn::functional::linear(x, wte->weight);
    return record("lm_head (tied to wte)", logits.reshape({-1, logits.size(-1)}));
  }

  torch::nn::Embedding wte, wpe;
  torch::nn::ModuleList h;  // the blocks again, so that their parameters are named h.0..., h.1...
  torch::nn::LayerNorm ln_f;
  std::vector<Block> blocks;
};
TORCH_MODULE(Gpt);

class GptModel final : public Model {
 public:
  GptModel(const GptSpec& spec, c10::Device device) : gpt_(spec) { gpt_->to(device); }

  at::Tensor forward(const at::Tensor& tokens) override { return gpt_->run(tokens, nullptr); }

  at::Tensor forward_traced(const at::Tensor& tokens, std::vector<NamedTensor>& outputs) override {
    return gpt_->run(tokens, &outputs);
  }

  std::vector<NamedTensor> parameters() const override {
    std::vector<NamedTensor> named;
    for (const auto& item : gpt_->named_parameters(true)) named.push_back({item.key(), item.value()});
    return named;
  }

  std::vector<NamedTensor> buffers() const override { return {}; }

  void set_training(bool training) override { gpt_->train(training); }

 private:
  Gpt gpt_;
};

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

std::unique_ptr<Model> load_script_model(const ModelSpec& spec, const ModelShape& shape, c10::Device device,
                                         StepWatchdog& watchdog) {
  const std::filesystem::path path = checked_local_file(spec.file, "model.file");
  torch::jit::Module module;
  try {
    check_script_archive(path);
    module = torch::jit::load(path.string(), torch::kCPU);
  } catch (const c10::Error& error) {
    throw Error(ErrorKind::Input, "model.file: " + path.string() + " is not a loadable TorchScript module: " +
                                      error.what_without_backtrace());
  } catch (const torch::jit::ErrorReport& error) {  // its code does not compile here (an unknown operator, say)
    throw Error(ErrorKind::Input, "model.file: " + path.string() + " is not a loadable TorchScript module: " + error.what());
  }
  check_script_module(module);
  auto model = std::make_unique<ScriptModel>(std::move(module), device);

  // A trial forward pass, so that a module that does not fit the data fails here, before training.
  const std::vector<std::int64_t> input_shape{2, shape.channels, shape.height, shape.width};
  const std::vector<std::int64_t> expected_shape{2, shape.classes};
  at::Tensor logits;
  try {
    torch::NoGradGuard no_grad;
    model->set_training(false);
    StepWatchdog::Watch watch = watchdog.watch("the trial forward pass of model.file");
    logits = model->forward(torch::zeros(input_shape, torch::TensorOptions().device(device)));
    watch.finish();
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

std::unique_ptr<Model> build_model(const Task& task, const ModelShape& shape, c10::Device device,
                                   StepWatchdog& watchdog) {
  const ModelSpec& spec = task.model;
  // The built-in models draw their initial weights from the task's seed; a module brings its own.
  if (spec.kind != ModelKind::TorchScript) torch::manual_seed(derive_seed(task.seed, kStreamInit, 0));
  switch (spec.kind) {
    case ModelKind::Mlp: return std::make_unique<SequentialModel>(build_mlp(spec, shape), device);
    case ModelKind::Cnn: return std::make_unique<SequentialModel>(build_cnn(spec, shape), device);
    case ModelKind::Gpt: return std::make_unique<GptModel>(spec.gpt, device);
    case ModelKind::TorchScript: return load_script_model(spec, shape, device, watchdog);
  }
  throw Error(ErrorKind::Internal, "model.kind: no builder for model kind " + std::string(name_of(spec.kind)));
}

}  // namespace solver::train::detail
