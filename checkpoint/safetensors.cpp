// safetensors encode/decode. Decoding trusts nothing in the file: a checkpoint may come
// from another solver being verified, so every length, offset and dtype is checked before
// a byte is copied, and each error names the source, the field and the value seen.
// Invariant: encode() writes data in the caller's tensor order with offsets that tile the
// data section exactly; decode() accepts only files with that property.
#include "checkpoint/safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cstring>
#include <optional>
#include <tuple>

#include "common/error.h"
#include "common/files.h"
#include "common/json_reader.h"
#include "common/sha256.h"

namespace solver::checkpoint {
namespace {

using nlohmann::json;

// The format is little-endian; raw tensor bytes are copied as they are.
static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian; this host is not");

constexpr std::size_t kLengthBytes = 8;
constexpr std::uint64_t kMaxHeaderBytes = 100 * 1000 * 1000;  // what the reference implementation accepts
constexpr std::string_view kMetadataKey = "__metadata__";

struct DTypeInfo {
  DType dtype;
  std::string_view name;
  std::size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::F64, "F64", 8}, {DType::F32, "F32", 4}, {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2},
    {DType::I64, "I64", 8}, {DType::I32, "I32", 4}, {DType::I16, "I16", 2}, {DType::I8, "I8", 1},
    {DType::U8, "U8", 1},   {DType::Bool, "BOOL", 1},
};

const DTypeInfo& info(DType dtype) {
  for (const DTypeInfo& entry : kDTypes)
    if (entry.dtype == dtype) return entry;
  throw Error(ErrorKind::Internal, "safetensors: dtype enum value " + std::to_string(static_cast<int>(dtype)) + " has no entry");
}

[[noreturn]] void malformed(std::string_view what, const std::string& problem) {
  throw Error(ErrorKind::Input, std::string(what) + ": " + problem);
}

// Product of the dims (non-negative) times dtype_size, or nullopt when it does not fit in
// 64 bits (so a hostile shape cannot overflow the arithmetic).
std::optional<std::uint64_t> byte_count(const std::vector<std::int64_t>& shape, std::size_t element_size) {
  std::uint64_t bytes = element_size;
  for (const std::int64_t dim : shape) {
    const auto size = static_cast<std::uint64_t>(dim);
    if (size == 0) return 0;
    if (bytes > UINT64_MAX / size) return std::nullopt;
    bytes *= size;
  }
  return bytes;
}


struct Entry {
  Tensor tensor;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};

Entry parse_entry(const std::string& name, const json& value, std::uint64_t data_size, std::string_view what) {
  const std::string field = "tensor \"" + name + "\"";
  if (!value.is_object()) malformed(what, field + ": expected an object {dtype, shape, data_offsets}, got " + value.dump());
  for (const auto& [key, ignored] : value.items())
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      malformed(what, field + ": unknown field \"" + key + "\" (expected dtype, shape, data_offsets)");

  Entry entry;
  entry.tensor.name = name;
  if (!value.contains("dtype") || !value["dtype"].is_string())
    malformed(what, field + ": dtype must be a string such as \"F32\"");
  const std::string dtype = value["dtype"].get<std::string>();
  const std::optional<DType> parsed = parse_dtype(dtype);
  if (!parsed) malformed(what, field + ": unknown dtype \"" + dtype + "\" (expected F64, F32, F16, BF16, I64, I32, I16, I8, U8 or BOOL)");
  entry.tensor.dtype = *parsed;

  if (!value.contains("shape") || !value["shape"].is_array())
    malformed(what, field + ": shape must be an array of non-negative integers");
  for (const json& dim : value["shape"]) {
    if (!dim.is_number_integer() || (dim.is_number_unsigned() ? dim.get<std::uint64_t>() > INT64_MAX : dim.get<std::int64_t>() < 0))
      malformed(what, field + ": shape must hold non-negative integers, got " + value["shape"].dump());
    entry.tensor.shape.push_back(dim.get<std::int64_t>());
  }

  const json* offsets = value.contains("data_offsets") ? &value["data_offsets"] : nullptr;
  if (offsets == nullptr || !offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
      !(*offsets)[1].is_number_unsigned())
    malformed(what, field + ": data_offsets must be [begin, end] with non-negative integers, got " +
                        (offsets ? offsets->dump() : std::string("nothing")));
  entry.begin = (*offsets)[0].get<std::uint64_t>();
  entry.end = (*offsets)[1].get<std::uint64_t>();
  if (entry.begin > entry.end || entry.end > data_size)
    malformed(what, field + ": data_offsets " + offsets->dump() + " are not a range within the " +
                        std::to_string(data_size) + "-byte data section");

  const std::optional<std::uint64_t> expected = byte_count(entry.tensor.shape, dtype_size(entry.tensor.dtype));
  if (!expected || *expected != entry.end - entry.begin)
    malformed(what, field + ": data_offsets " + offsets->dump() + " span " + std::to_string(entry.end - entry.begin) +
                        " bytes but dtype " + dtype + " and shape " + shape_text(entry.tensor.shape) + " need " +
                        (expected ? std::to_string(*expected) : std::string("more than 2^64")));
  return entry;
}

std::map<std::string, std::string> parse_metadata(const json& value, std::string_view what) {
  if (!value.is_object()) malformed(what, "__metadata__ must be an object of strings, got " + value.dump());
  std::map<std::string, std::string> metadata;
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string()) malformed(what, "__metadata__ \"" + key + "\" must be a string, got " + item.dump());
    metadata[key] = item.get<std::string>();
  }
  return metadata;
}

}  // namespace

std::string_view dtype_name(DType dtype) { return info(dtype).name; }

std::size_t dtype_size(DType dtype) { return info(dtype).size; }

std::string shape_text(const std::vector<std::int64_t>& shape) { return json(shape).dump(); }

std::optional<DType> parse_dtype(std::string_view name) {
  for (const DTypeInfo& entry : kDTypes)
    if (entry.name == name) return entry.dtype;
  return std::nullopt;
}

std::int64_t Tensor::element_count() const {
  std::int64_t count = 1;
  for (const std::int64_t dim : shape) count *= dim;
  return count;
}

std::span<const float> Tensor::as_f32() const {
  if (dtype != DType::F32)
    throw Error(ErrorKind::Input, "tensor \"" + name + "\": expected dtype F32, got " + std::string(dtype_name(dtype)));
  if (data.size() % sizeof(float) != 0 || static_cast<std::int64_t>(data.size() / sizeof(float)) != element_count())
    throw Error(ErrorKind::Input, "tensor \"" + name + "\": " + std::to_string(data.size()) + " bytes do not hold the " +
                                      std::to_string(element_count()) + " floats of shape " + shape_text(shape));
  // vector<std::byte> storage comes from operator new, aligned for any fundamental type.
  return {reinterpret_cast<const float*>(data.data()), data.size() / sizeof(float)};
}

const Tensor* Checkpoint::find(std::string_view name) const {
  for (const Tensor& tensor : tensors)
    if (tensor.name == name) return &tensor;
  return nullptr;
}

std::vector<std::byte> encode_safetensors(const Checkpoint& checkpoint) {
  json header = json::object();
  std::uint64_t offset = 0;
  for (const Tensor& tensor : checkpoint.tensors) {
    const std::string field = "encoding safetensors: tensor \"" + tensor.name + "\"";
    if (tensor.name.empty() || tensor.name == kMetadataKey)
      throw Error(ErrorKind::Input, field + ": the name must be non-empty and not __metadata__");
    if (header.contains(tensor.name)) throw Error(ErrorKind::Input, field + ": the name appears twice");
    if (std::any_of(tensor.shape.begin(), tensor.shape.end(), [](std::int64_t dim) { return dim < 0; }))
      throw Error(ErrorKind::Input, field + ": shape " + shape_text(tensor.shape) + " has a negative dimension");
    const std::optional<std::uint64_t> expected = byte_count(tensor.shape, dtype_size(tensor.dtype));
    if (!expected || *expected != tensor.data.size())
      throw Error(ErrorKind::Input, field + ": has " + std::to_string(tensor.data.size()) + " bytes but dtype " +
                                        std::string(dtype_name(tensor.dtype)) + " and shape " + shape_text(tensor.shape) +
                                        " need " + (expected ? std::to_string(*expected) : std::string("more than 2^64")));
    header[tensor.name] = {{"dtype", dtype_name(tensor.dtype)},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + tensor.data.size()}}};
    offset += tensor.data.size();
  }
  if (!checkpoint.metadata.empty()) header[std::string(kMetadataKey)] = checkpoint.metadata;

  std::string header_text = header.dump();
  // Padding keeps the data section 8-byte aligned in the file, so readers can map it.
  header_text.append((kLengthBytes - header_text.size() % kLengthBytes) % kLengthBytes, ' ');

  std::vector<std::byte> bytes(kLengthBytes + header_text.size() + offset);
  const std::uint64_t header_length = header_text.size();
  std::memcpy(bytes.data(), &header_length, kLengthBytes);
  std::memcpy(bytes.data() + kLengthBytes, header_text.data(), header_text.size());
  std::byte* data = bytes.data() + kLengthBytes + header_text.size();
  for (const Tensor& tensor : checkpoint.tensors) {
    if (!tensor.data.empty()) std::memcpy(data, tensor.data.data(), tensor.data.size());
    data += tensor.data.size();
  }
  return bytes;
}

Checkpoint decode_safetensors(std::span<const std::byte> bytes, std::string_view what) {
  if (bytes.size() < kLengthBytes)
    malformed(what, "file is " + std::to_string(bytes.size()) + " bytes, shorter than the 8-byte header length");
  std::uint64_t header_length = 0;
  std::memcpy(&header_length, bytes.data(), kLengthBytes);
  if (header_length > kMaxHeaderBytes)
    malformed(what, "header length " + std::to_string(header_length) + " is absurd (limit " + std::to_string(kMaxHeaderBytes) +
                        " bytes): not a safetensors file, or a corrupt one");
  const std::uint64_t after_length = bytes.size() - kLengthBytes;
  if (header_length > after_length)
    malformed(what, "header length " + std::to_string(header_length) + " is larger than the " + std::to_string(after_length) +
                        " bytes that follow it: the file is truncated");

  const auto* header_begin = reinterpret_cast<const char*>(bytes.data() + kLengthBytes);
  json header;
  try {
    header = parse_json_document(std::string_view(header_begin, header_length), "header");
  } catch (const Error& error) {
    malformed(what, error.what());
  }
  if (!header.is_object()) malformed(what, "header must be a JSON object, got " + std::string(header.type_name()));

  const std::span<const std::byte> data = bytes.subspan(kLengthBytes + header_length);
  Checkpoint checkpoint;
  std::vector<Entry> entries;
  for (const auto& [name, value] : header.items()) {
    if (name == kMetadataKey)
      checkpoint.metadata = parse_metadata(value, what);
    else
      entries.push_back(parse_entry(name, value, data.size(), what));
  }

  // Stable: header order (names sorted) breaks ties between empty tensors at one offset.
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry& x, const Entry& y) { return std::tie(x.begin, x.end) < std::tie(y.begin, y.end); });
  std::uint64_t covered = 0;
  for (const Entry& entry : entries) {
    if (entry.begin < covered)
      malformed(what, "tensor \"" + entry.tensor.name + "\" starts at data offset " + std::to_string(entry.begin) +
                          ", overlapping the previous tensor which ends at " + std::to_string(covered));
    if (entry.begin > covered)
      malformed(what, "tensor \"" + entry.tensor.name + "\" starts at data offset " + std::to_string(entry.begin) +
                          ", leaving a gap after offset " + std::to_string(covered));
    covered = entry.end;
  }
  if (covered != data.size())
    malformed(what, std::to_string(data.size() - covered) + " trailing bytes after the last tensor (data ends at offset " +
                        std::to_string(covered) + " of " + std::to_string(data.size()) + ")");

  checkpoint.tensors.reserve(entries.size());
  for (Entry& entry : entries) {
    const auto source = data.subspan(entry.begin, entry.end - entry.begin);
    entry.tensor.data.assign(source.begin(), source.end());
    checkpoint.tensors.push_back(std::move(entry.tensor));
  }
  return checkpoint;
}

WrittenFile write_safetensors(const std::filesystem::path& path, const Checkpoint& checkpoint) {
  const std::vector<std::byte> bytes = encode_safetensors(checkpoint);
  write_file_durably(path, bytes);
  return {path, bytes.size(), sha256_hex(bytes)};
}

Checkpoint read_safetensors(const std::filesystem::path& path) {
  const std::string bytes = read_file(path);
  return decode_safetensors(std::as_bytes(std::span(bytes.data(), bytes.size())), path.string());
}

}  // namespace solver::checkpoint
