// Checkpoints as named byte buffers in the safetensors format: an 8-byte little-endian
// header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]},
// "__metadata__": {string: string}} padded with spaces to a multiple of 8, then the raw
// little-endian tensor data, with offsets tiling the data section with no gaps or overlaps.
// This library knows dtypes and shapes, never torch tensors: train/ converts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace solver::checkpoint {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, Bool };

std::string_view dtype_name(DType dtype);  // safetensors spelling: "F32", "I64", "BOOL"...
std::size_t dtype_size(DType dtype);
std::optional<DType> parse_dtype(std::string_view name);
// A shape as errors show it: "[784,128]".
std::string shape_text(const std::vector<std::int64_t>& shape);

struct Tensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::vector<std::byte> data;  // little-endian, row-major; size = element_count * dtype_size

  std::int64_t element_count() const;
  // The data as floats; throws Error(Input) if dtype is not F32.
  std::span<const float> as_f32() const;
};

struct Checkpoint {
  std::vector<Tensor> tensors;                  // data is written in this order
  std::map<std::string, std::string> metadata;  // "__metadata__"

  const Tensor* find(std::string_view name) const;  // nullptr when absent
};

// Serialises to safetensors bytes. Throws Error(Input) if a tensor's data size does not
// match its dtype and shape, or names repeat.
std::vector<std::byte> encode_safetensors(const Checkpoint& checkpoint);

// Parses and validates safetensors bytes (header length, JSON, dtypes, shapes, offsets that
// tile the data exactly). `what` names the source in errors. Throws Error(Input).
Checkpoint decode_safetensors(std::span<const std::byte> bytes, std::string_view what);

struct WrittenFile {
  std::filesystem::path path;
  std::uint64_t size = 0;
  std::string sha256;  // of the file's bytes, lowercase hex
};

// Encodes, writes durably (temp file, fsync, rename) and hashes. Blocks. Throws Error.
WrittenFile write_safetensors(const std::filesystem::path& path, const Checkpoint& checkpoint);
// Reads and decodes a file. Throws Error(Io) if unreadable, Error(Input) if malformed.
Checkpoint read_safetensors(const std::filesystem::path& path);

}  // namespace solver::checkpoint
