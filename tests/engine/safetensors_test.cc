#include "engine/model/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace catserve::engine {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

// The raw little-endian bytes of a vector of trivially copyable values.
template <typename T>
std::string Bytes(const std::vector<T>& values) {
  std::string out(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// A whole safetensors file: 8-byte header length, header, data region.
std::string FileBytes(const std::string& header, const std::string& data) {
  return absl::StrCat(Bytes(std::vector<uint64_t>{header.size()}), header, data);
}

struct TensorSpec {
  std::string name;
  std::string dtype;
  std::string shape;  // JSON list
  std::string bytes;
};

// A well-formed file holding `tensors` back to back, in the given order.
std::string BuildFile(const std::vector<TensorSpec>& tensors, const std::string& metadata = "") {
  std::vector<std::string> entries;
  if (!metadata.empty()) entries.push_back(absl::StrCat(R"("__metadata__": )", metadata));
  std::string data;
  for (const TensorSpec& t : tensors) {
    entries.push_back(absl::StrCat("\"", t.name, R"(": {"dtype": ")", t.dtype, R"(", "shape": )",
                                   t.shape, R"(, "data_offsets": [)", data.size(), ", ",
                                   data.size() + t.bytes.size(), "]}"));
    data += t.bytes;
  }
  return FileBytes(absl::StrCat("{", absl::StrJoin(entries, ", "), "}"), data);
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("catserve_safetensors_test_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path Write(const std::string& name, const std::string& bytes) {
    const std::filesystem::path path = dir_ / name;
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }

  // Writes `bytes` as a file, opens it, and expects INVALID_ARGUMENT naming the file and `words`.
  template <typename... Words>
  void ExpectOpenInvalid(const std::string& bytes, Words... words) {
    const std::filesystem::path path = Write("bad.safetensors", bytes);
    absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
    ASSERT_FALSE(file.ok());
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(file.status().message()),
                AllOf(HasSubstr(path.string()), HasSubstr(words)...));
  }

  // A header holding one tensor entry `entry` over an 8-byte data region.
  template <typename... Words>
  void ExpectEntryInvalid(const std::string& entry, Words... words) {
    ExpectOpenInvalid(FileBytes(absl::StrCat(R"({"t": )", entry, "}"), std::string(8, '\0')),
                      words...);
  }

  std::filesystem::path dir_;
};

// f16 bit patterns and the exact floats they stand for.
const std::vector<uint16_t> kHalfBits = {0x3C00, 0xC000, 0x0001, 0x03FF, 0x0200, 0x8001,
                                         0x7BFF, 0x3555, 0x8000, 0x7C00, 0xFC00, 0x0400};
const std::vector<float> kHalfValues = {1.0f,
                                        -2.0f,
                                        std::ldexp(1.0f, -24),         // smallest subnormal
                                        1023 * std::ldexp(1.0f, -24),  // largest subnormal
                                        std::ldexp(1.0f, -15),
                                        -std::ldexp(1.0f, -24),
                                        65504.0f,
                                        0.333251953125f,
                                        -0.0f,
                                        std::numeric_limits<float>::infinity(),
                                        -std::numeric_limits<float>::infinity(),
                                        std::ldexp(1.0f, -14)};  // smallest normal

TEST_F(SafetensorsTest, RoundTripsEveryDtype) {
  const std::vector<float> f32 = {1.5f, -2.0f, 0.0f, 3.25f, 1e-30f, -7.0e20f};
  const std::vector<uint16_t> bf16 = {0x3F80, 0xC0A0, 0x0001, 0x7F7F, 0x3EAB};
  const std::filesystem::path path =
      Write("model.safetensors",
            BuildFile({{"f32", "F32", "[2, 3]", Bytes(f32)},
                       {"f16", "F16", "[12]", Bytes(kHalfBits)},
                       {"bf16", "BF16", "[5]", Bytes(bf16)},
                       {"i32", "I32", "[3]", Bytes(std::vector<int32_t>{-1, 0, 7})},
                       {"i64", "I64", "[1, 2]", Bytes(std::vector<int64_t>{-5, 2147483647})},
                       {"scalar", "F32", "[]", Bytes(std::vector<float>{42.0f})},
                       {"empty", "F32", "[0, 4]", ""}},
                      R"({"format": "pt", "note": "tiny"})"));

  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_THAT(file->metadata(), ElementsAre(Pair("format", "pt"), Pair("note", "tiny")));
  ASSERT_EQ(file->tensors().size(), 7u);
  const TensorInfo* f16 = file->Find("f16");
  ASSERT_NE(f16, nullptr);
  EXPECT_EQ(f16->dtype, DType::kF16);
  EXPECT_THAT(f16->shape, ElementsAre(12));
  EXPECT_EQ(f16->nbytes, 24u);
  EXPECT_EQ(std::memcmp(f16->data, kHalfBits.data(), 24), 0);
  EXPECT_EQ(file->Find("absent"), nullptr);

  absl::StatusOr<TensorSet> set = TensorSet::OpenFile(path);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_THAT(set->names(), ElementsAre("bf16", "empty", "f16", "f32", "i32", "i64", "scalar"));

  absl::StatusOr<std::vector<float>> read = set->ReadFloat("f32", {2, 3});
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, f32);

  read = set->ReadFloat("f16", {12});
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->size(), kHalfValues.size());
  for (size_t i = 0; i < kHalfValues.size(); ++i) {
    EXPECT_EQ(std::bit_cast<uint32_t>((*read)[i]), std::bit_cast<uint32_t>(kHalfValues[i]))
        << "f16 bits 0x" << std::hex << kHalfBits[i];
  }

  read = set->ReadFloat("bf16", {5});
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->size(), 5u);
  EXPECT_EQ((*read)[0], 1.0f);
  EXPECT_EQ((*read)[1], -5.0f);
  EXPECT_EQ((*read)[2], std::ldexp(1.0f, -133));             // bf16 subnormal, exact
  EXPECT_EQ((*read)[3], std::bit_cast<float>(0x7F7F0000u));  // largest finite bf16
  EXPECT_EQ(std::bit_cast<uint32_t>((*read)[4]), 0x3EAB0000u);

  read = set->ReadFloat("scalar", {});
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_THAT(*read, ElementsAre(42.0f));
  read = set->ReadFloat("empty", {0, 4});
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(read->empty());

  absl::StatusOr<std::vector<int32_t>> ints = set->ReadInt32("i32");
  ASSERT_TRUE(ints.ok()) << ints.status();
  EXPECT_THAT(*ints, ElementsAre(-1, 0, 7));
  ints = set->ReadInt32("i64");
  ASSERT_TRUE(ints.ok()) << ints.status();
  EXPECT_THAT(*ints, ElementsAre(-5, 2147483647));
}

TEST_F(SafetensorsTest, HalfNanStaysNan) {
  const std::filesystem::path path =
      Write("m.safetensors",
            BuildFile({{"nan", "F16", "[2]", Bytes(std::vector<uint16_t>{0x7E00, 0xFC01})}}));
  absl::StatusOr<TensorSet> set = TensorSet::OpenFile(path);
  ASSERT_TRUE(set.ok()) << set.status();
  absl::StatusOr<std::vector<float>> read = set->ReadFloat("nan", {2});
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(std::isnan((*read)[0]));
  EXPECT_EQ(std::bit_cast<uint32_t>((*read)[0]), 0x7FC00000u);  // quiet bit kept
  EXPECT_TRUE(std::isnan((*read)[1]));
  EXPECT_TRUE(std::signbit((*read)[1]));
}

TEST_F(SafetensorsTest, RejectsGapsInTheDataRegion) {
  const std::string header =
      R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
          "b": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}})";
  ExpectOpenInvalid(FileBytes(header, Bytes(std::vector<float>{1.0f, 0.0f, 0.0f, 2.0f})),
                    "data region bytes [4, 12) before tensor b belong to no tensor");
  const std::string late = R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})";
  ExpectOpenInvalid(FileBytes(late, std::string(8, '\0')),
                    "data region bytes [0, 4) before tensor a belong to no tensor");
}

TEST_F(SafetensorsTest, RejectsTrailingBytes) {
  ExpectOpenInvalid(
      BuildFile({{"t", "F32", "[2]", Bytes(std::vector<float>{1, 2})}}) + std::string(3, '\0'),
      "the last 3 bytes of the 11-byte data region belong to no tensor");
  // Bytes after a header with no tensors at all.
  ExpectOpenInvalid(FileBytes("{}", "x"), "the last 1 bytes of the 1-byte data region");
}

// The fault probe's corruption: the header length field one byte short. The header of a file
// written by the safetensors library is padded with spaces, so the shorter header still parses
// and every tensor would be read one byte early.
TEST_F(SafetensorsTest, RejectsHeaderLengthOneByteShort) {
  const std::string header = R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}   )";
  const std::string data = Bytes(std::vector<float>{1.0f, 2.0f});
  ASSERT_TRUE(SafetensorsFile::Open(Write("ok.safetensors", FileBytes(header, data))).ok());
  std::string bytes = FileBytes(header, data);
  bytes[0] = static_cast<char>(header.size() - 1);
  ExpectOpenInvalid(bytes, "the last 1 bytes of the 9-byte data region belong to no tensor",
                    "header length");
  // Without padding the shortened header is not JSON any more.
  ExpectOpenInvalid(absl::StrCat(Bytes(std::vector<uint64_t>{header.size() - 4}), header, data),
                    "header is not valid JSON");
}

TEST_F(SafetensorsTest, EmptyTensorsMayPointAnywhereInTheRegion) {
  const std::string header =
      R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
          "e": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},
          "z": {"dtype": "F32", "shape": [2, 0], "data_offsets": [0, 0]}})";
  absl::StatusOr<TensorSet> set = TensorSet::OpenFile(
      Write("m.safetensors", FileBytes(header, Bytes(std::vector<float>{2.0f}))));
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_THAT(*set->ReadFloat("a", {1}), ElementsAre(2.0f));
  EXPECT_THAT(*set->ReadFloat("z", {2, 0}), ElementsAre());
}

TEST_F(SafetensorsTest, MovedFileKeepsItsMappingAndPointers) {
  const std::filesystem::path path =
      Write("m.safetensors", BuildFile({{"x", "F32", "[1]", Bytes(std::vector<float>{3.0f})}}));
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorInfo* before = file->Find("x");
  SafetensorsFile moved = *std::move(file);
  EXPECT_EQ(moved.Find("x"), before);
  float value;
  std::memcpy(&value, moved.Find("x")->data, sizeof(value));
  EXPECT_EQ(value, 3.0f);
}

TEST_F(SafetensorsTest, ReadFloatRejectsShapeMismatch) {
  absl::StatusOr<TensorSet> set = TensorSet::OpenFile(Write(
      "m.safetensors",
      BuildFile({{"model.norm.weight", "F32", "[32]", Bytes(std::vector<float>(32, 1.0f))}})));
  ASSERT_TRUE(set.ok()) << set.status();
  absl::StatusOr<std::vector<float>> read = set->ReadFloat("model.norm.weight", {64});
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(read.status().message()),
              HasSubstr("tensor model.norm.weight has shape [32] but the config implies [64]"));
  read = set->ReadFloat("model.norm.weight", {32, 1});
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(read.status().message()), HasSubstr("[32, 1]"));
}

TEST_F(SafetensorsTest, ReadFloatRejectsIntegerDtype) {
  absl::StatusOr<TensorSet> set = TensorSet::OpenFile(Write(
      "m.safetensors", BuildFile({{"ids", "I32", "[2]", Bytes(std::vector<int32_t>{1, 2})}})));
  ASSERT_TRUE(set.ok()) << set.status();
  absl::StatusOr<std::vector<float>> read = set->ReadFloat("ids", {2});
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(read.status().message()),
              AllOf(HasSubstr("tensor ids has dtype I32"), HasSubstr("float dtype")));
}

TEST_F(SafetensorsTest, ReadFloatOfMissingTensorIsNotFound) {
  absl::StatusOr<TensorSet> set = TensorSet::OpenFile(
      Write("m.safetensors", BuildFile({{"a", "F32", "[1]", Bytes(std::vector<float>{1})}})));
  ASSERT_TRUE(set.ok()) << set.status();
  absl::StatusOr<std::vector<float>> read = set->ReadFloat("lm_head.weight", {1});
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(read.status().message()), HasSubstr("lm_head.weight"));
  EXPECT_EQ(set->ReadInt32("lm_head.weight").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SafetensorsTest, ReadInt32RejectsFloatDtypeAndOutOfRangeI64) {
  absl::StatusOr<TensorSet> set = TensorSet::OpenFile(
      Write("m.safetensors",
            BuildFile({{"f", "F32", "[1]", Bytes(std::vector<float>{1})},
                       {"big", "I64", "[2]", Bytes(std::vector<int64_t>{0, int64_t{1} << 31})}})));
  ASSERT_TRUE(set.ok()) << set.status();
  absl::StatusOr<std::vector<int32_t>> ints = set->ReadInt32("f");
  EXPECT_EQ(ints.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ints.status().message()), HasSubstr("tensor f has dtype F32"));
  ints = set->ReadInt32("big");
  EXPECT_EQ(ints.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(ints.status().message()),
              AllOf(HasSubstr("big"), HasSubstr("2147483648"), HasSubstr("int32 range")));
}

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(dir_ / "nope.safetensors");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("nope.safetensors"));
}

TEST_F(SafetensorsTest, RejectsFileShorterThanEightBytes) {
  ExpectOpenInvalid("", "0 bytes", "shorter than the 8-byte header length");
  ExpectOpenInvalid(std::string("\x02\x00\x00\x00", 4), "4 bytes", "shorter");
}

TEST_F(SafetensorsTest, RejectsHeaderLengthPastEndOfFile) {
  ExpectOpenInvalid(absl::StrCat(Bytes(std::vector<uint64_t>{64}), "{}"),
                    "header length 64 runs past the end of the file (10 bytes)");
}

TEST_F(SafetensorsTest, RejectsAbsurdHeaderLength) {
  ExpectOpenInvalid(Bytes(std::vector<uint64_t>{uint64_t{1} << 40}),
                    "header length 1099511627776 is absurd");
  ExpectOpenInvalid(Bytes(std::vector<uint64_t>{100'000'001}), "header length 100000001 is absurd");
}

TEST_F(SafetensorsTest, RejectsHeaderThatIsNotJson) {
  ExpectOpenInvalid(FileBytes(R"({"t": {"dtype": )", ""), "header is not valid JSON");
}

TEST_F(SafetensorsTest, RejectsHeaderThatIsNotAnObject) {
  ExpectOpenInvalid(FileBytes("[1, 2, 3]", ""), "header is not a JSON object");
}

TEST_F(SafetensorsTest, RejectsEntryThatIsNotAnObject) {
  ExpectEntryInvalid("[0, 8]", "tensor t", "entry is not an object");
}

TEST_F(SafetensorsTest, RejectsEntryWithoutDtype) {
  ExpectEntryInvalid(R"({"shape": [2], "data_offsets": [0, 8]})", "tensor t", "no dtype");
}

TEST_F(SafetensorsTest, RejectsEntryWithoutShape) {
  ExpectEntryInvalid(R"({"dtype": "F32", "data_offsets": [0, 8]})", "tensor t", "no shape");
}

TEST_F(SafetensorsTest, RejectsEntryWithoutDataOffsets) {
  ExpectEntryInvalid(R"({"dtype": "F32", "shape": [2]})", "tensor t", "no data_offsets");
}

TEST_F(SafetensorsTest, RejectsUnknownDtypeNamingIt) {
  ExpectEntryInvalid(R"({"dtype": "F64", "shape": [1], "data_offsets": [0, 8]})", "tensor t",
                     "unsupported dtype \"F64\"");
  ExpectEntryInvalid(R"({"dtype": 32, "shape": [2], "data_offsets": [0, 8]})", "tensor t",
                     "dtype is not a string");
}

TEST_F(SafetensorsTest, RejectsNegativeShape) {
  ExpectEntryInvalid(R"({"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]})", "tensor t",
                     "shape must be a list of non-negative integers");
}

TEST_F(SafetensorsTest, RejectsNonIntegerShape) {
  ExpectEntryInvalid(R"({"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]})", "tensor t",
                     "shape must be a list of non-negative integers");
  ExpectEntryInvalid(R"({"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]})", "shape");
  ExpectEntryInvalid(R"({"dtype": "F32", "shape": 2, "data_offsets": [0, 8]})", "shape");
}

TEST_F(SafetensorsTest, RejectsDataOffsetsNotTwoIncreasingIntegers) {
  ExpectEntryInvalid(R"({"dtype": "F32", "shape": [2], "data_offsets": [8, 0]})", "tensor t",
                     "data_offsets", "begin <= end");
  ExpectEntryInvalid(R"({"dtype": "F32", "shape": [2], "data_offsets": [0, 4, 8]})",
                     "data_offsets must be two");
  ExpectEntryInvalid(R"({"dtype": "F32", "shape": [2], "data_offsets": [0]})",
                     "data_offsets must be two");
  ExpectEntryInvalid(R"({"dtype": "F32", "shape": [2], "data_offsets": [0, 8.5]})",
                     "data_offsets must be two");
  ExpectEntryInvalid(R"({"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]})",
                     "data_offsets must be two");
}

TEST_F(SafetensorsTest, RejectsTruncatedFile) {
  std::string bytes = BuildFile({{"t", "F32", "[4]", Bytes(std::vector<float>{1, 2, 3, 4})}});
  bytes.resize(bytes.size() - 4);
  ExpectOpenInvalid(bytes, "tensor t",
                    "data_offsets end 16 is past the end of the data region (12 bytes)",
                    "truncated");
}

TEST_F(SafetensorsTest, RejectsByteCountThatDisagreesWithShape) {
  ExpectEntryInvalid(R"({"dtype": "F32", "shape": [3], "data_offsets": [0, 8]})", "tensor t",
                     "hold 8 bytes", "shape [3] of F32 needs 3 elements of 4 bytes");
  ExpectEntryInvalid(R"({"dtype": "BF16", "shape": [2], "data_offsets": [0, 8]})", "hold 8 bytes",
                     "shape [2] of BF16 needs 2 elements of 2 bytes");
}

TEST_F(SafetensorsTest, RejectsShapeWhoseByteCountOverflows) {
  ExpectEntryInvalid(
      R"({"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]})", "tensor t",
      "overflows");
}

TEST_F(SafetensorsTest, RejectsOverlappingTensors) {
  const std::string header =
      R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})";
  ExpectOpenInvalid(FileBytes(header, std::string(12, '\0')),
                    "tensors a [0, 8) and b [4, 12) overlap");
}

TEST_F(SafetensorsTest, RejectsMetadataThatIsNotStrings) {
  ExpectOpenInvalid(FileBytes(R"({"__metadata__": {"step": 5}})", ""),
                    "__metadata__ value of \"step\" is not a string");
  ExpectOpenInvalid(FileBytes(R"({"__metadata__": [1]})", ""), "__metadata__ is not an object");
}

// A two-shard checkpoint: a.safetensors holds x and y, b.safetensors holds z.
class ShardedTest : public SafetensorsTest {
 protected:
  void WriteShards() {
    Write("a.safetensors", BuildFile({{"x", "F32", "[2]", Bytes(std::vector<float>{1, 2})},
                                      {"y", "BF16", "[1]", Bytes(std::vector<uint16_t>{0x4040})}}));
    Write("b.safetensors", BuildFile({{"z", "I64", "[1]", Bytes(std::vector<int64_t>{9})}}));
  }
  void WriteIndex(const std::string& weight_map) {
    Write("model.safetensors.index.json",
          absl::StrCat(R"({"metadata": {"total_size": 14}, "weight_map": )", weight_map, "}"));
  }
  template <typename... Words>
  void ExpectDirError(absl::StatusCode code, Words... words) {
    absl::StatusOr<TensorSet> set = TensorSet::OpenModelDir(dir_);
    ASSERT_FALSE(set.ok());
    EXPECT_EQ(set.status().code(), code);
    EXPECT_THAT(std::string(set.status().message()), AllOf(HasSubstr(words)...));
  }
};

TEST_F(ShardedTest, OpensEveryShardBehindOneLookup) {
  WriteShards();
  WriteIndex(R"({"x": "a.safetensors", "y": "a.safetensors", "z": "b.safetensors"})");
  absl::StatusOr<TensorSet> set = TensorSet::OpenModelDir(dir_);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_THAT(set->names(), ElementsAre("x", "y", "z"));
  EXPECT_THAT(*set->ReadFloat("x", {2}), ElementsAre(1.0f, 2.0f));
  EXPECT_THAT(*set->ReadFloat("y", {1}), ElementsAre(3.0f));
  EXPECT_THAT(*set->ReadInt32("z"), ElementsAre(9));
  EXPECT_EQ(set->Find("w"), nullptr);

  TensorSet moved = *std::move(set);
  EXPECT_THAT(*moved.ReadFloat("x", {2}), ElementsAre(1.0f, 2.0f));
}

TEST_F(ShardedTest, PrefersSingleFileOverIndex) {
  Write("model.safetensors", BuildFile({{"only", "F32", "[1]", Bytes(std::vector<float>{5})}}));
  WriteIndex(R"({"x": "missing.safetensors"})");
  absl::StatusOr<TensorSet> set = TensorSet::OpenModelDir(dir_);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_THAT(set->names(), ElementsAre("only"));
}

TEST_F(ShardedTest, DirWithoutCheckpointIsNotFound) {
  ExpectDirError(absl::StatusCode::kNotFound, dir_.string(), "model.safetensors");
}

TEST_F(ShardedTest, RejectsIndexNamingMissingShard) {
  WriteShards();
  WriteIndex(R"({"x": "a.safetensors", "y": "a.safetensors", "z": "c.safetensors"})");
  ExpectDirError(absl::StatusCode::kNotFound, "model.safetensors.index.json",
                 "names shard c.safetensors");
}

TEST_F(ShardedTest, RejectsTensorAbsentFromItsShard) {
  WriteShards();
  WriteIndex(R"({"x": "a.safetensors", "y": "b.safetensors", "z": "b.safetensors"})");
  ExpectDirError(absl::StatusCode::kInvalidArgument, "model.safetensors.index.json",
                 "tensor y in shard b.safetensors, which does not hold it");
}

TEST_F(ShardedTest, RejectsDuplicateNamesAcrossShards) {
  Write("a.safetensors", BuildFile({{"x", "F32", "[1]", Bytes(std::vector<float>{1})}}));
  Write("b.safetensors", BuildFile({{"x", "F32", "[1]", Bytes(std::vector<float>{2})},
                                    {"z", "F32", "[1]", Bytes(std::vector<float>{3})}}));
  WriteIndex(R"({"x": "a.safetensors", "z": "b.safetensors"})");
  ExpectDirError(absl::StatusCode::kInvalidArgument, "duplicate tensor x",
                 "a.safetensors and b.safetensors");
}

TEST_F(ShardedTest, RejectsShardNameOutsideDir) {
  WriteShards();
  WriteIndex(R"({"x": "../a.safetensors"})");
  ExpectDirError(absl::StatusCode::kInvalidArgument, "\"../a.safetensors\"",
                 "not a file name inside");
}

TEST_F(ShardedTest, RejectsIndexLargerThanAnyHeader) {
  // A sparse file: nothing is written, but reading it whole would take 100 MB.
  std::filesystem::resize_file(Write("model.safetensors.index.json", "{"), 100'000'001);
  ExpectDirError(absl::StatusCode::kInvalidArgument, "model.safetensors.index.json",
                 "larger than 100000000 bytes");
}

TEST_F(ShardedTest, RejectsIndexThatIsNotJson) {
  Write("model.safetensors.index.json", "{weight_map: }");
  ExpectDirError(absl::StatusCode::kInvalidArgument, "model.safetensors.index.json",
                 "index is not valid JSON");
}

TEST_F(ShardedTest, RejectsIndexWithoutWeightMap) {
  Write("model.safetensors.index.json", R"({"metadata": {}})");
  ExpectDirError(absl::StatusCode::kInvalidArgument, "weight_map is missing or not an object");
  WriteIndex(R"({"x": 3})");
  ExpectDirError(absl::StatusCode::kInvalidArgument, "weight_map entry of x is not a string");
}

TEST_F(ShardedTest, ShardErrorsNameTheShard) {
  Write("a.safetensors", "short");
  WriteIndex(R"({"x": "a.safetensors"})");
  ExpectDirError(absl::StatusCode::kInvalidArgument, "a.safetensors", "shorter than");
}

}  // namespace
}  // namespace catserve::engine
