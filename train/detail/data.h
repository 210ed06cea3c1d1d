// Datasets in memory and the batches cut from them. Images stay uint8 on the CPU; a batch is
// gathered, converted and normalised on the CPU with fixed tensor ops
// (float, / 255, - mean, / std) and only then moved, so its bits do not depend on the device.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <span>
#include <string_view>

#include "common/task.h"

namespace solver::train::detail {

struct Batch {
  at::Tensor images;  // float [B, 1, H, W], normalised, on the requested device
  at::Tensor labels;  // int64 [B], on the requested device
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

  std::int64_t size() const { return labels_.size(0); }
  std::int64_t height() const { return images_.size(2); }
  std::int64_t width() const { return images_.size(3); }
  std::int64_t max_label() const { return max_label_; }

  // The samples at `indices` (each < size()), in that order.
  Batch gather(std::span<const std::uint32_t> indices, c10::Device device) const;
  // The samples [begin, begin + count).
  Batch slice(std::int64_t begin, std::int64_t count, c10::Device device) const;

 private:
  Batch normalized(const at::Tensor& images, const at::Tensor& labels, c10::Device device) const;

  at::Tensor images_;  // uint8 [N, 1, H, W], CPU
  at::Tensor labels_;  // int64 [N], CPU
  std::int64_t max_label_ = 0;
  Normalization normalization_;
};

}  // namespace solver::train::detail
