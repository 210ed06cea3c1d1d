// safetensors: round trips across dtypes and shapes, the exact byte layout, strict rejection
// of every malformed form the decoder guards against, and an independent Python reader
// (tests/python/read_safetensors.py) that must see what we meant to write.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "checkpoint/safetensors.h"
#include "common/error.h"
#include "common/files.h"
#include "common/sha256.h"
#include "tests/test_support.h"

using namespace solver::checkpoint;
using solver::Error;
using solver::ErrorKind;

namespace {

template <typename T>
std::vector<std::byte> bytes_of(const std::vector<T>& values) {
  std::vector<std::byte> bytes(values.size() * sizeof(T));
  if (!bytes.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

Tensor make_tensor(std::string name, DType dtype, std::vector<std::int64_t> shape, std::vector<std::byte> data) {
  return Tensor{std::move(name), dtype, std::move(shape), std::move(data)};
}

// Integer-valued data in every dtype, so sums are exact in any summation order.
Checkpoint sample_checkpoint() {
  Checkpoint checkpoint;
  checkpoint.tensors.push_back(make_tensor("layer.weight", DType::F32, {2, 3}, bytes_of(std::vector<float>{1, -2, 3, 4.5f, 5, 6})));
  checkpoint.tensors.push_back(make_tensor("layer.bias", DType::F64, {3}, bytes_of(std::vector<double>{0.25, -1, 1e3})));
  checkpoint.tensors.push_back(make_tensor("half", DType::F16, {2, 2},  // 1, 2, -0.5, 0.25
                                           bytes_of(std::vector<std::uint16_t>{0x3C00, 0x4000, 0xB800, 0x3400})));
  checkpoint.tensors.push_back(make_tensor("brain", DType::BF16, {3},  // 1, -2, 0.5
                                           bytes_of(std::vector<std::uint16_t>{0x3F80, 0xC000, 0x3F00})));
  checkpoint.tensors.push_back(make_tensor("step", DType::I64, {}, bytes_of(std::vector<std::int64_t>{1200})));
  checkpoint.tensors.push_back(make_tensor("empty", DType::F32, {0, 4}, {}));
  checkpoint.tensors.push_back(make_tensor("counts", DType::I32, {1, 1, 2}, bytes_of(std::vector<std::int32_t>{-7, 70000})));
  checkpoint.tensors.push_back(make_tensor("small", DType::I16, {2}, bytes_of(std::vector<std::int16_t>{-300, 300})));
  checkpoint.tensors.push_back(make_tensor("tiny", DType::I8, {3}, bytes_of(std::vector<std::int8_t>{-1, 2, -3})));
  checkpoint.tensors.push_back(make_tensor("pixels", DType::U8, {4}, bytes_of(std::vector<std::uint8_t>{0, 128, 255, 1})));
  checkpoint.tensors.push_back(make_tensor("mask", DType::Bool, {3}, bytes_of(std::vector<std::uint8_t>{1, 0, 1})));
  return checkpoint;
}

// The element sum as float64, computed in C++ by the same definitions the reader uses.
double element_sum(const Tensor& tensor) {
  double sum = 0.0;
  const std::byte* data = tensor.data.data();
  const auto count = static_cast<std::size_t>(tensor.element_count());
  for (std::size_t i = 0; i < count; ++i) {
    switch (tensor.dtype) {
      case DType::F64: { double v; std::memcpy(&v, data + 8 * i, 8); sum += v; break; }
      case DType::F32: { float v; std::memcpy(&v, data + 4 * i, 4); sum += v; break; }
      case DType::I64: { std::int64_t v; std::memcpy(&v, data + 8 * i, 8); sum += static_cast<double>(v); break; }
      case DType::I32: { std::int32_t v; std::memcpy(&v, data + 4 * i, 4); sum += v; break; }
      case DType::I16: { std::int16_t v; std::memcpy(&v, data + 2 * i, 2); sum += v; break; }
      case DType::I8: sum += static_cast<std::int8_t>(data[i]); break;
      case DType::U8:
      case DType::Bool: sum += static_cast<std::uint8_t>(data[i]); break;
      case DType::BF16: {
        std::uint16_t half; std::memcpy(&half, data + 2 * i, 2);
        const std::uint32_t bits = std::uint32_t{half} << 16;
        float v; std::memcpy(&v, &bits, 4); sum += v; break;
      }
      case DType::F16: {  // normal numbers only, which is all the sample holds
        std::uint16_t half; std::memcpy(&half, data + 2 * i, 2);
        const double magnitude = std::ldexp(1.0 + (half & 0x3FF) / 1024.0, ((half >> 10) & 0x1F) - 15);
        sum += (half & 0x8000) ? -magnitude : magnitude; break;
      }
    }
  }
  return sum;
}

void require_same_tensors(const Checkpoint& decoded, const Checkpoint& original) {
  REQUIRE(decoded.tensors.size() == original.tensors.size());
  for (std::size_t i = 0; i < original.tensors.size(); ++i) {
    INFO("tensor " << original.tensors[i].name);
    CHECK(decoded.tensors[i].name == original.tensors[i].name);
    CHECK(decoded.tensors[i].dtype == original.tensors[i].dtype);
    CHECK(decoded.tensors[i].shape == original.tensors[i].shape);
    CHECK(decoded.tensors[i].data == original.tensors[i].data);
  }
}

std::uint64_t header_length_of(const std::vector<std::byte>& bytes) {
  std::uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | static_cast<std::uint8_t>(bytes[static_cast<std::size_t>(i)]);
  return length;
}

// A file with this exact header text (no padding) followed by `data_size` zero bytes.
std::vector<std::byte> raw_file(const std::string& header, std::size_t data_size) {
  std::vector<std::byte> bytes(8 + header.size() + data_size, std::byte{0});
  for (int i = 0; i < 8; ++i) bytes[static_cast<std::size_t>(i)] = static_cast<std::byte>((header.size() >> (8 * i)) & 0xFF);
  std::memcpy(bytes.data() + 8, header.data(), header.size());
  return bytes;
}

void require_input_error(const std::vector<std::byte>& bytes, const std::string& expected_text) {
  try {
    decode_safetensors(bytes, "ckpt-test.safetensors");
    FAIL("decoding succeeded; expected an error mentioning \"" << expected_text << "\"");
  } catch (const Error& error) {
    INFO("message: " << error.what());
    CHECK(error.kind() == ErrorKind::Input);
    CHECK_THAT(error.what(), Catch::StartsWith("ckpt-test.safetensors: ") && Catch::Contains(expected_text));
  }
}

}  // namespace

TEST_CASE("Checkpoints of every dtype, a scalar and an empty tensor survive a round trip", "[checkpoint]") {
  const Checkpoint original = sample_checkpoint();
  const Checkpoint decoded = decode_safetensors(encode_safetensors(original), "round trip");
  require_same_tensors(decoded, original);
  CHECK(decoded.metadata.empty());
  CHECK(decoded.find("step")->element_count() == 1);
  CHECK(decoded.find("empty")->element_count() == 0);
  CHECK(decoded.find("missing") == nullptr);
  const std::span<const float> weights = decoded.find("layer.weight")->as_f32();
  CHECK(std::vector<float>(weights.begin(), weights.end()) == std::vector<float>{1, -2, 3, 4.5f, 5, 6});
}

TEST_CASE("Metadata survives a round trip and is absent from the header when empty", "[checkpoint]") {
  Checkpoint original = sample_checkpoint();
  original.metadata = {{"step", "1200"}, {"task_sha256", std::string(64, 'a')}, {"note", "ünïcode \"quoted\""}};
  const Checkpoint decoded = decode_safetensors(encode_safetensors(original), "metadata");
  CHECK(decoded.metadata == original.metadata);
  require_same_tensors(decoded, original);

  const std::vector<std::byte> without = encode_safetensors(sample_checkpoint());
  const std::string header(reinterpret_cast<const char*>(without.data()) + 8, header_length_of(without));
  CHECK(header.find("__metadata__") == std::string::npos);
}

TEST_CASE("The byte layout is a little-endian length, a space-padded header and data in tensor order", "[checkpoint]") {
  Checkpoint checkpoint;
  checkpoint.tensors.push_back(make_tensor("z_first", DType::F32, {2}, bytes_of(std::vector<float>{1, 2})));
  checkpoint.tensors.push_back(make_tensor("a_second", DType::U8, {3}, bytes_of(std::vector<std::uint8_t>{7, 8, 9})));
  const std::vector<std::byte> bytes = encode_safetensors(checkpoint);

  const std::uint64_t header_length = header_length_of(bytes);
  CHECK(header_length % 8 == 0);
  REQUIRE(bytes.size() == 8 + header_length + 11);
  const std::string header(reinterpret_cast<const char*>(bytes.data()) + 8, header_length);
  CHECK(header.front() == '{');
  const std::string trimmed = header.substr(0, header.find_last_not_of(' ') + 1);
  CHECK(trimmed.back() == '}');
  CHECK(header.size() - trimmed.size() < 8);

  const nlohmann::json parsed = nlohmann::json::parse(header);
  CHECK(parsed["z_first"]["dtype"] == "F32");
  CHECK(parsed["z_first"]["shape"] == nlohmann::json::array({2}));
  CHECK(parsed["z_first"]["data_offsets"] == nlohmann::json::array({0, 8}));
  CHECK(parsed["a_second"]["data_offsets"] == nlohmann::json::array({8, 11}));

  // Data follows the caller's order, not the header's (sorted) key order.
  const std::byte* data = bytes.data() + 8 + header_length;
  float first[2];
  std::memcpy(first, data, 8);
  CHECK(first[0] == 1.0f);
  CHECK(first[1] == 2.0f);
  CHECK(static_cast<int>(data[8]) == 7);
  CHECK(static_cast<int>(data[10]) == 9);
}

TEST_CASE("Encoding refuses tensors whose data does not match dtype and shape, or repeated names", "[checkpoint]") {
  Checkpoint wrong_size;
  wrong_size.tensors.push_back(make_tensor("w", DType::F32, {3}, bytes_of(std::vector<float>{1, 2})));
  CHECK_THROWS_WITH(encode_safetensors(wrong_size), Catch::Contains("\"w\"") && Catch::Contains("8 bytes") && Catch::Contains("need 12"));

  Checkpoint repeated;
  repeated.tensors.push_back(make_tensor("w", DType::U8, {1}, bytes_of(std::vector<std::uint8_t>{1})));
  repeated.tensors.push_back(make_tensor("w", DType::U8, {1}, bytes_of(std::vector<std::uint8_t>{2})));
  CHECK_THROWS_WITH(encode_safetensors(repeated), Catch::Contains("appears twice"));

  Checkpoint negative;
  negative.tensors.push_back(make_tensor("n", DType::U8, {-1}, {}));
  CHECK_THROWS_WITH(encode_safetensors(negative), Catch::Contains("negative"));
}

TEST_CASE("Tensor::as_f32 refuses other dtypes and inconsistent sizes", "[checkpoint]") {
  const Tensor ints = make_tensor("ints", DType::I32, {1}, bytes_of(std::vector<std::int32_t>{1}));
  CHECK_THROWS_WITH(ints.as_f32(), Catch::Contains("\"ints\"") && Catch::Contains("expected dtype F32, got I32"));
  const Tensor short_data = make_tensor("short", DType::F32, {2}, bytes_of(std::vector<float>{1}));
  CHECK_THROWS_WITH(short_data.as_f32(), Catch::Contains("\"short\"") && Catch::Contains("4 bytes"));
}

TEST_CASE("Malformed safetensors bytes are rejected with a message naming the problem", "[checkpoint]") {
  const std::string good_entry = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

  SECTION("shorter than the length field") { require_input_error(std::vector<std::byte>(5), "5 bytes, shorter than the 8-byte header length"); }
  SECTION("header length past the end of the file") {
    std::vector<std::byte> bytes = raw_file("{" + good_entry + "}", 8);
    bytes[0] = static_cast<std::byte>(200);
    require_input_error(bytes, "header length 200 is larger than");
  }
  SECTION("absurd header length") {
    std::vector<std::byte> bytes = raw_file("{}", 0);
    bytes[7] = std::byte{1};
    require_input_error(bytes, "is absurd");
  }
  SECTION("header that is not JSON") { require_input_error(raw_file("{\"w\": [", 0), "not valid JSON"); }
  SECTION("header that is not an object") { require_input_error(raw_file("[1, 2]", 0), "must be a JSON object"); }
  SECTION("unknown dtype") {
    require_input_error(raw_file(R"({"w":{"dtype":"F8","shape":[2],"data_offsets":[0,2]}})", 2), "unknown dtype \"F8\"");
  }
  SECTION("negative dimension") {
    require_input_error(raw_file(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "non-negative integers");
  }
  SECTION("missing data_offsets") { require_input_error(raw_file(R"({"w":{"dtype":"F32","shape":[2]}})", 8), "data_offsets must be"); }
  SECTION("unknown field in an entry") {
    require_input_error(raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"strides":[1]}})", 8), "unknown field \"strides\"");
  }
  SECTION("size that does not match dtype and shape") {
    require_input_error(raw_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "span 8 bytes but dtype F32 and shape [3] need 12");
  }
  SECTION("huge shape that would overflow") {
    require_input_error(raw_file(R"({"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8), "need more than 2^64");
  }
  SECTION("offsets past the data section") {
    require_input_error(raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 8), "not a range within the 8-byte data section");
  }
  SECTION("a gap between tensors") {
    require_input_error(raw_file(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})", 6),
                        "leaving a gap after offset 2");
  }
  SECTION("a gap before the first tensor") {
    require_input_error(raw_file(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})", 4), "leaving a gap after offset 0");
  }
  SECTION("overlapping tensors") {
    require_input_error(raw_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})", 4),
                        "overlapping the previous tensor");
  }
  SECTION("trailing bytes after the last tensor") { require_input_error(raw_file("{" + good_entry + "}", 12), "4 trailing bytes"); }
  SECTION("metadata that is not strings") { require_input_error(raw_file(R"({"__metadata__":{"step":1200}})", 0), "__metadata__ \"step\" must be a string"); }
}

TEST_CASE("A checkpoint whose header names a tensor twice is refused when read, though each entry alone is valid", "[checkpoint]") {
  // A JSON parser keeping either value would see a valid one-tensor checkpoint; which one it
  // keeps differs between readers, so the file means different states to different verifiers.
  const std::string first = R"("param.w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]})";
  const std::string second = R"("param.w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})";
  CHECK(decode_safetensors(raw_file("{" + first + "}", 4), "one").tensors.size() == 1);
  CHECK(decode_safetensors(raw_file("{" + second + "}", 4), "other").tensors.size() == 1);
  solver::test::ScratchDir scratch("safetensors-duplicate");
  const std::filesystem::path path = scratch / "step_5.safetensors";
  solver::write_file_durably(path, raw_file("{" + first + "," + second + "}", 4));
  try {
    read_safetensors(path);
    FAIL("a header naming param.w twice was accepted");
  } catch (const Error& error) {
    CHECK(error.kind() == ErrorKind::Input);
    CHECK_THAT(error.what(), Catch::StartsWith(path.string()) && Catch::Contains("key \"param.w\" appears twice in one object"));
  }
}

TEST_CASE("A truncated checkpoint file is rejected when read", "[checkpoint]") {
  solver::test::ScratchDir scratch("safetensors-truncated");
  const std::vector<std::byte> bytes = encode_safetensors(sample_checkpoint());
  const std::filesystem::path path = scratch / "truncated.safetensors";
  solver::write_file_durably(path, std::span(bytes).first(bytes.size() - 3));
  try {
    read_safetensors(path);
    FAIL("a file missing its last 3 bytes was accepted");
  } catch (const Error& error) {
    CHECK(error.kind() == ErrorKind::Input);
    CHECK_THAT(error.what(), Catch::StartsWith(path.string()) && Catch::Contains("not a range within"));
  }
  CHECK_THROWS_MATCHES(read_safetensors(scratch / "absent.safetensors"), Error,
                       Catch::Predicate<Error>([](const Error& error) { return error.kind() == ErrorKind::Io; }, "an Io error"));
}

TEST_CASE("write_safetensors reports the size and sha256 of what it wrote", "[checkpoint]") {
  solver::test::ScratchDir scratch("safetensors-write");
  const Checkpoint original = sample_checkpoint();
  const WrittenFile written = write_safetensors(scratch / "c.safetensors", original);
  CHECK(written.path == scratch / "c.safetensors");
  CHECK(written.size == std::filesystem::file_size(written.path));
  CHECK(written.sha256 == solver::sha256_file_hex(written.path));
  require_same_tensors(read_safetensors(written.path), original);
}

TEST_CASE("An independent Python reader sees the dtypes, shapes, bytes and sums we wrote", "[checkpoint]") {
  solver::test::ScratchDir scratch("safetensors-python");
  Checkpoint original = sample_checkpoint();
  original.metadata = {{"step", "1200"}};
  const WrittenFile written = write_safetensors(scratch / "c.safetensors", original);

  const solver::test::CommandResult result = solver::test::run_command(
      {solver::test::system_python(), (solver::test::source_dir() / "tests/python/read_safetensors.py").string(), written.path.string()});
  INFO("python output: " << result.output);
  REQUIRE(result.exit_code == 0);
  const nlohmann::json seen = nlohmann::json::parse(result.output);

  CHECK(seen["metadata"] == nlohmann::json{{"step", "1200"}});
  CHECK(seen["header_length"].get<std::uint64_t>() % 8 == 0);
  REQUIRE(seen["tensors"].size() == original.tensors.size());
  for (const Tensor& tensor : original.tensors) {
    INFO("tensor " << tensor.name);
    const nlohmann::json& entry = seen["tensors"][tensor.name];
    CHECK(entry["dtype"] == dtype_name(tensor.dtype));
    CHECK(entry["shape"].get<std::vector<std::int64_t>>() == tensor.shape);
    CHECK(entry["sha256"] == solver::sha256_hex(tensor.data));
    CHECK(entry["sum"].get<double>() == element_sum(tensor));
  }
}
