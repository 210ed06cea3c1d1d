// IDX datasets (MNIST's format): a big-endian header (magic 0x00000803 for uint8 images with
// 3 dims, 0x00000801 for uint8 labels with 1 dim, then one uint32 per dim) followed by the raw
// bytes. zlib's gzread reads gzip and plain files alike. Token datasets: a flat file of
// little-endian uint16 tokens, no header (nanoGPT's train.bin). Invariant: batches are normalised
// on the CPU (see detail/data.h); moving that work to the GPU would tie a batch's bits to the
// device's arithmetic, and every bundle's replay to it. The prefetcher's worker runs the same
// CPU ops as Dataset::gather; they are elementwise or copies, so its batches have the same bits.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include "train/detail/data.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/files.h"

namespace solver::train::detail {
namespace {

constexpr std::uint32_t kIdxImagesMagic = 0x00000803;
constexpr std::uint32_t kIdxLabelsMagic = 0x00000801;
// Larger files are not image datasets a solver should hold in memory (and would overflow gzread's int).
constexpr std::int64_t kIdxMaxBytes = std::int64_t{1} << 34;

struct GzipCloser {
  void operator()(gzFile file) const { gzclose(file); }
};

// Reads one IDX file: its dims and its payload.
class IdxFile {
 public:
  IdxFile(const std::filesystem::path& path, std::string_view field) : path_(path), field_(field) {
    file_.reset(gzopen(path.c_str(), "rb"));
    if (!file_) fail("cannot open the file");
  }

  // Checks the magic number (which also fixes the number of dims) and returns the dims.
  std::vector<std::int64_t> read_header(std::uint32_t expected_magic) {
    const std::uint32_t magic = read_big_endian_u32("magic number");
    if (magic != expected_magic)
      fail("magic number 0x" + hex(magic) + ", expected 0x" + hex(expected_magic) + " (not an IDX " +
           (expected_magic == kIdxImagesMagic ? "uint8 image" : "uint8 label") + " file)");
    std::vector<std::int64_t> dims(expected_magic & 0xff);
    for (std::size_t i = 0; i < dims.size(); ++i) {
      dims[i] = read_big_endian_u32("dimension " + std::to_string(i));
      if (dims[i] == 0) fail("dimension " + std::to_string(i) + " is 0, expected a positive size");
    }
    return dims;
  }

  // Fills `bytes` from the payload and checks the file ends right after it.
  void read_payload(std::span<std::byte> bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      const auto chunk = static_cast<unsigned>(std::min<std::size_t>(bytes.size() - done, INT_MAX / 2));
      const int got = gzread(file_.get(), bytes.data() + done, chunk);
      if (got < 0) fail("read error (corrupt gzip data?)");
      if (got == 0)
        fail("truncated: expected " + std::to_string(bytes.size()) + " payload bytes, got " + std::to_string(done));
      done += static_cast<std::size_t>(got);
    }
    std::byte extra;
    if (gzread(file_.get(), &extra, 1) != 0) fail("trailing bytes after the " + std::to_string(bytes.size()) + " payload bytes the header announces");
  }

  [[noreturn]] void fail(const std::string& problem) const {
    throw Error(ErrorKind::Input, field_ + ": " + path_.string() + ": " + problem);
  }

 private:
  std::uint32_t read_big_endian_u32(const std::string& what) {
    std::array<unsigned char, 4> bytes{};
    if (gzread(file_.get(), bytes.data(), bytes.size()) != static_cast<int>(bytes.size()))
      fail("truncated header: cannot read the " + what);
    return std::uint32_t{bytes[0]} << 24 | std::uint32_t{bytes[1]} << 16 | std::uint32_t{bytes[2]} << 8 | bytes[3];
  }

  static std::string hex(std::uint32_t value) {
    char text[9];
    std::snprintf(text, sizeof text, "%08x", value);
    return text;
  }

  std::filesystem::path path_;
  std::string field_;
  std::unique_ptr<std::remove_pointer_t<gzFile>, GzipCloser> file_;
};

std::span<std::byte> bytes_of(const at::Tensor& tensor) {
  return {static_cast<std::byte*>(tensor.data_ptr()), static_cast<std::size_t>(tensor.nbytes())};
}

at::Tensor indices_tensor(std::span<const std::uint32_t> indices) {
  at::Tensor tensor = at::empty({static_cast<std::int64_t>(indices.size())}, at::kLong);
  std::copy(indices.begin(), indices.end(), tensor.data_ptr<std::int64_t>());
  return tensor;
}

// With `non_blocking` from pinned memory, the copy to a GPU is queued on the current stream and
// returns at once; the caching host allocator keeps the pinned block until the copy is done.
Batch moved_to(const Batch& batch, c10::Device device, bool non_blocking = false) {
  const auto moved = [&](const at::Tensor& tensor) { return tensor.to(device, tensor.scalar_type(), non_blocking); };
  return Batch{moved(batch.inputs), moved(batch.labels)};
}

}  // namespace

Dataset Dataset::load_idx(const FileRef& images, const FileRef& labels, std::string_view field,
                          const Normalization& normalization) {
  const std::string images_field = std::string(field) + "_images";
  const std::string labels_field = std::string(field) + "_labels";
  IdxFile image_file(checked_local_file(images, images_field), images_field);
  IdxFile label_file(checked_local_file(labels, labels_field), labels_field);

  const std::vector<std::int64_t> image_dims = image_file.read_header(kIdxImagesMagic);  // N, H, W
  const std::vector<std::int64_t> label_dims = label_file.read_header(kIdxLabelsMagic);  // N
  if (image_dims[0] != label_dims[0])
    label_file.fail(std::to_string(label_dims[0]) + " labels for " + std::to_string(image_dims[0]) +
                    " images, expected one label per image");
  if (image_dims[0] > std::numeric_limits<std::uint32_t>::max())
    image_file.fail(std::to_string(image_dims[0]) + " samples, expected at most 2^32 - 1 (sample indices are uint32)");
  if (image_dims[0] * image_dims[1] * image_dims[2] > kIdxMaxBytes)
    image_file.fail("payload of " + std::to_string(image_dims[0] * image_dims[1] * image_dims[2]) +
                    " bytes, expected at most " + std::to_string(kIdxMaxBytes));

  Dataset dataset;
  dataset.normalization_ = normalization;
  dataset.samples_ = at::empty({image_dims[0], 1, image_dims[1], image_dims[2]}, at::kByte);
  image_file.read_payload(bytes_of(dataset.samples_));

  std::vector<std::uint8_t> raw_labels(static_cast<std::size_t>(label_dims[0]));
  label_file.read_payload(std::as_writable_bytes(std::span(raw_labels)));
  dataset.labels_ = at::empty({label_dims[0]}, at::kLong);
  std::copy(raw_labels.begin(), raw_labels.end(), dataset.labels_.data_ptr<std::int64_t>());
  dataset.max_label_ = *std::max_element(raw_labels.begin(), raw_labels.end());
  return dataset;
}

Dataset Dataset::load_tokens(const FileRef& tokens, std::string_view field, std::int64_t vocab_size,
                             std::int64_t context) {
  const std::filesystem::path path = checked_local_file(tokens, field);
  const auto fail = [&](const std::string& problem) {
    throw Error(ErrorKind::Input, std::string(field) + ": " + path.string() + ": " + problem);
  };
  const std::string bytes = read_file(path);
  if (bytes.size() % 2 != 0)
    fail(std::to_string(bytes.size()) + " bytes, expected an even count (the file holds uint16 tokens)");
  const auto token_count = static_cast<std::int64_t>(bytes.size() / 2);
  const std::int64_t windows = token_count / (context + 1);
  if (windows == 0)
    fail(std::to_string(token_count) + " tokens, expected at least one window of model.context + 1 = " +
         std::to_string(context + 1));
  if (windows > std::numeric_limits<std::uint32_t>::max())
    fail(std::to_string(windows) + " windows, expected at most 2^32 - 1 (sample indices are uint32)");

  Dataset dataset;
  dataset.context_ = context;
  dataset.samples_ = at::empty({windows, context + 1}, at::kLong);
  std::int64_t* const out = dataset.samples_.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < token_count; ++i) {
    const auto low = static_cast<unsigned char>(bytes[2 * i]);
    const auto high = static_cast<unsigned char>(bytes[2 * i + 1]);
    const std::int64_t token = low | high << 8;
    if (token >= vocab_size)
      fail("token " + std::to_string(token) + " at position " + std::to_string(i) + ", expected tokens below model.vocab_size " +
           std::to_string(vocab_size));
    if (i < windows * (context + 1)) out[i] = token;
  }
  return dataset;
}

Batch Dataset::gather(std::span<const std::uint32_t> indices, c10::Device device) const {
  return moved_to(gather_on_host(indices, false), device);
}

Batch Dataset::gather_on_host(std::span<const std::uint32_t> indices, bool pinned) const {
  const at::Tensor rows = indices_tensor(indices);
  const Batch batch = cut(samples_.index_select(0, rows), labels_.defined() ? labels_.index_select(0, rows) : at::Tensor());
  if (!pinned) return batch;
  return Batch{batch.inputs.pin_memory(), batch.labels.pin_memory()};
}

Batch Dataset::slice(std::int64_t begin, std::int64_t count, c10::Device device) const {
  return moved_to(cut(samples_.narrow(0, begin, count), labels_.defined() ? labels_.narrow(0, begin, count) : at::Tensor()),
                  device);
}

Batch Dataset::cut(const at::Tensor& samples, const at::Tensor& labels) const {
  if (context_ > 0) return Batch{samples.narrow(1, 0, context_).contiguous(), samples.narrow(1, 1, context_).reshape({-1})};
  return Batch{samples.to(at::kFloat).div(255.0).sub(normalization_.mean).div(normalization_.std), labels};
}

BatchPrefetcher::BatchPrefetcher(const Dataset& data, c10::Device device, bool background)
    : data_(data), device_(device), worker_(background ? std::thread([this] { work(); }) : std::thread()) {}

BatchPrefetcher::~BatchPrefetcher() {
  if (!worker_.joinable()) return;
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  worker_.join();
}

void BatchPrefetcher::request(std::span<const std::uint32_t> indices) {
  {
    const std::lock_guard lock(mutex_);
    if (requested_) throw Error(ErrorKind::Internal, "batch prefetcher: a batch was requested before the previous one was taken");
    requested_ = true;
    pending_.emplace(indices.begin(), indices.end());
  }
  changed_.notify_all();
}

Batch BatchPrefetcher::take() {
  std::unique_lock lock(mutex_);
  if (!requested_) throw Error(ErrorKind::Internal, "batch prefetcher: a batch was taken without a request");
  if (!worker_.joinable()) {
    requested_ = false;
    const std::vector<std::uint32_t> indices = std::move(*pending_);
    pending_.reset();
    lock.unlock();
    return data_.gather(indices, device_);
  }
  changed_.wait(lock, [&] { return ready_.has_value() || failure_; });
  requested_ = false;
  if (failure_) std::rethrow_exception(std::exchange(failure_, nullptr));
  const Batch host = std::move(*ready_);
  ready_.reset();
  lock.unlock();
  return moved_to(host, device_, /*non_blocking=*/device_.is_cuda());
}

void BatchPrefetcher::work() {
  // As LibTorch's own threads do: this thread's ops use the intra-op thread count set for the process.
  at::init_num_threads();
  // Pinned memory belongs to the current device's context.
  c10::OptionalDeviceGuard device_guard;
  if (device_.is_cuda()) device_guard.reset_device(device_);
  std::unique_lock lock(mutex_);
  while (true) {
    changed_.wait(lock, [&] { return stopping_ || pending_.has_value(); });
    if (stopping_) return;
    const std::vector<std::uint32_t> indices = std::move(*pending_);
    pending_.reset();
    lock.unlock();
    std::optional<Batch> batch;
    std::exception_ptr failure;
    try {
      batch = data_.gather_on_host(indices, device_.is_cuda());
    } catch (...) {
      failure = std::current_exception();
    }
    lock.lock();
    ready_ = std::move(batch);
    failure_ = failure;
    changed_.notify_all();
  }
}

}  // namespace solver::train::detail
