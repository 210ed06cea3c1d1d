// Datasets in memory and the batches cut from them. Images stay uint8 on the CPU; a batch is
// gathered, converted and normalised on the CPU with fixed tensor ops
// (float, / 255, - mean, / std) and only then moved, so its bits do not depend on the device.
// Token data is cut into windows of context + 1 tokens; a window is one sample, whose inputs
// are its first context tokens and whose labels are the context tokens after each of them.
// BatchPrefetcher gathers the next step's batch while the current step computes.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>
#include <thread>
#include <vector>

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
  // The same batch left on the CPU, in page-locked (pinned) memory when `pinned`, from which a
  // copy to a GPU can run asynchronously. Pinning needs a LibTorch with CUDA.
  Batch gather_on_host(std::span<const std::uint32_t> indices, bool pinned) const;
  // The samples [begin, begin + count).
  Batch slice(std::int64_t begin, std::int64_t count, c10::Device device) const;

 private:
  // A batch on the CPU from the selected samples and labels.
  Batch cut(const at::Tensor& samples, const at::Tensor& labels) const;

  at::Tensor samples_;  // images: uint8 [N, 1, H, W]; tokens: int64 windows [N, context + 1]; CPU
  at::Tensor labels_;   // images: int64 [N], CPU; tokens: undefined (the windows hold them)
  std::int64_t context_ = 0;  // tokens: inputs per window; 0 for images
  std::int64_t max_label_ = 0;
  Normalization normalization_;
};

// Gathers batches of a Dataset one step ahead on one background thread, so that on a GPU the
// gathering (into pinned memory) and the copy (non_blocking) overlap the previous step's
// compute, and on the CPU, where a core is spare, at least the gathering does. Without the
// background thread it gathers in take(), which is what a CPU whose every core trains should do
// (a second thread there only competes with the step's own threads: 9% fewer steps/s on 2 cores).
// A batch has the same bits either way as Dataset::gather's. Use: request(first); then per
// step take() its batch and request() the next one before computing. One request at a time:
// request() after take().
class BatchPrefetcher {
 public:
  // `data` must outlive the prefetcher. Starts the worker thread when `background`.
  BatchPrefetcher(const Dataset& data, c10::Device device, bool background);
  // Waits for a gather in flight (a batch takes milliseconds), then stops the worker.
  ~BatchPrefetcher();
  BatchPrefetcher(const BatchPrefetcher&) = delete;
  BatchPrefetcher& operator=(const BatchPrefetcher&) = delete;

  // Starts gathering the samples at `indices` (each < data.size()). Throws Error(Internal)
  // while an earlier request has not been taken.
  void request(std::span<const std::uint32_t> indices);
  // Waits for the requested batch and returns it on the device; rethrows what the gathering
  // threw. Throws Error(Internal) when nothing was requested.
  Batch take();

 private:
  void work();

  const Dataset& data_;
  c10::Device device_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool requested_ = false;  // a request not yet taken
  std::optional<std::vector<std::uint32_t>> pending_;  // requested, not yet picked up by the worker
  std::optional<Batch> ready_;
  std::exception_ptr failure_;
  bool stopping_ = false;
  std::thread worker_;  // last: it starts once the members above exist; not joinable when gathering in take()
};

}  // namespace solver::train::detail
