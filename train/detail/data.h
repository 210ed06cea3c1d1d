// Datasets in memory and the batches cut from them. Images stay uint8 on the CPU; a batch is
// gathered, converted and normalised on the CPU with fixed tensor ops
// (float, / 255, - mean, / std) and only then moved, so its bits do not depend on the device.
// Token data is cut into windows of context + 1 tokens; a window is one sample, whose inputs
// are its first context tokens and whose labels are the context tokens after each of them.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <span>
#include <string_view>

#include "common/task.h"

namespace solver::train::detail {

struct Batch {
  at::Tensor inputs;  // images: float [B, 1, H, W], normalised; tokens: int64 [B, context]
  at::Tensor labels;  // int64: images [B]; tokens [B * context], row-major like the inputs
};

struct Normalization {
  double mean = 0.0;
  double std = 1.0;
};

class Dataset {
 public:
  // Checks both files against their sha256, then reads an IDX image file (magic 0x803,
  // dims N, H, W) and an IDX label file (magic 0x801, dim N), gzip-compressed or plain.
  // `field` names the pair in errors ("dataset.train"). Throws Error(Input) naming the file.
  static Dataset load_idx(const FileRef& images, const FileRef& labels, std::string_view field,
                          const Normalization& normalization);
  // Checks the file against its sha256, reads it as little-endian uint16 tokens, each below
  // vocab_size, and cuts it into size() = tokens / (context + 1) non-overlapping windows
  // (sample i starts at token i * (context + 1); a shorter tail is unused). Throws
  // Error(Input) naming `field` for an odd byte count, a token out of range or no whole window.
  static Dataset load_tokens(const FileRef& tokens, std::string_view field, std::int64_t vocab_size,
                             std::int64_t context);

  std::int64_t size() const { return samples_.size(0); }
  // Images only.
  std::int64_t height() const { return samples_.size(2); }
  std::int64_t width() const { return samples_.size(3); }
  std::int64_t max_label() const { return max_label_; }

  // The samples at `indices` (each < size()), in that order.
  Batch gather(std::span<const std::uint32_t> indices, c10::Device device) const;
  // The samples [begin, begin + count).
  Batch slice(std::int64_t begin, std::int64_t count, c10::Device device) const;

 private:
  Batch normalized(const at::Tensor& images, const at::Tensor& labels, c10::Device device) const;

  Batch cut(const at::Tensor& samples, const at::Tensor& labels, c10::Device device) const;

  at::Tensor samples_;  // images: uint8 [N, 1, H, W]; tokens: int64 windows [N, context + 1]; CPU
  at::Tensor labels_;   // images: int64 [N], CPU; tokens: undefined (the windows hold them)
  std::int64_t context_ = 0;  // tokens: inputs per window; 0 for images
  std::int64_t max_label_ = 0;
  Normalization normalization_;
};

}  // namespace solver::train::detail
