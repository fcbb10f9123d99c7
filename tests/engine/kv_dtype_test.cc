// KV storage formats: names, sizes and the rounding of stored values.
#include "engine/kv/kv_dtype.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "engine/kv/bf16.h"
#include "engine/kv/kv_pool.h"
#include "gtest/gtest.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace catserve::engine {
namespace {

TEST(KvDtypeTest, NamesRoundTripAndBadNamesAreRejected) {
  for (KvDtype d : {KvDtype::kFp32, KvDtype::kBf16, KvDtype::kFp16}) {
    absl::StatusOr<KvDtype> parsed = ParseKvDtype(KvDtypeName(d));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, d);
  }
  absl::StatusOr<KvDtype> bad = ParseKvDtype("int8");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "KV dtype 'int8' is not one of bf16, fp16, fp32");
}

TEST(KvDtypeTest, SixteenBitPoolsHoldTwiceTheEntriesPerByte) {
  KvGeometry g{.layers = 3, .kv_heads = 2, .head_dim = 8, .page_entries = 16};
  EXPECT_EQ(g.page_bytes(), 3u * 2 * 16 * 2 * 8 * 4);
  g.dtype = KvDtype::kBf16;
  EXPECT_EQ(g.page_bytes(), 3u * 2 * 16 * 2 * 8 * 2);
  EXPECT_EQ(g.entry_bytes(), 3u * 2 * 2 * 8 * 2);
  absl::StatusOr<KvPool> pool = KvPool::Create(g, 5);
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ(pool->total_bytes(), 5 * g.page_bytes());
}

TEST(KvDtypeTest, Fp16RoundsToNearestEven) {
  EXPECT_EQ(Fp16Bits(1.0f), 0x3c00);
  EXPECT_EQ(Fp16Bits(-2.0f), 0xc000);
  EXPECT_EQ(Fp16Bits(65504.0f), 0x7bff);            // largest finite
  EXPECT_EQ(Fp16Bits(65520.0f), 0x7c00);            // halfway to the next power rounds to infinity
  EXPECT_EQ(Fp16Bits(1.0f + 1.0f / 2048), 0x3c00);  // a tie rounds to the even 1.0
  EXPECT_EQ(Fp16Bits(1.0f + 3.0f / 2048), 0x3c02);  // a tie rounds up to even
  EXPECT_EQ(Fp16Bits(5.9604645e-8f), 0x0001);       // smallest subnormal
  EXPECT_TRUE(std::isnan(Fp16ToFloat(Fp16Bits(std::numeric_limits<float>::quiet_NaN()))));
  for (int bits = 0; bits < 0x7c00; ++bits) {
    ASSERT_EQ(Fp16Bits(Fp16ToFloat(static_cast<uint16_t>(bits))), bits);
  }
}

#if defined(__x86_64__)
__attribute__((target("f16c"))) uint16_t HardwareFp16Bits(float value) {
  return static_cast<uint16_t>(_cvtss_sh(value, _MM_FROUND_TO_NEAREST_INT));
}

// Fp16Bits is bit arithmetic; the F16C instruction is the reference it must equal on every
// kind of float: normal and subnormal halves, ties, overflow to infinity, both signs.
TEST(KvDtypeTest, Fp16BitsEqualsTheF16cInstruction) {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || (ecx & bit_F16C) == 0) {
    GTEST_SKIP() << "this CPU has no F16C";
  }
  int compared = 0;
  for (uint64_t bits = 0; bits < 0x7f800000; bits += 997) {
    for (uint32_t sign : {0u, 0x80000000u}) {
      const uint32_t x = static_cast<uint32_t>(bits) | sign;
      float value;
      std::memcpy(&value, &x, sizeof(value));
      ASSERT_EQ(Fp16Bits(value), HardwareFp16Bits(value)) << std::hexfloat << value;
      ++compared;
    }
  }
  // Every tie between two neighbouring halves.
  for (int h = 0; h < 0x7bff; ++h) {
    const float tie =
        (Fp16ToFloat(static_cast<uint16_t>(h)) + Fp16ToFloat(static_cast<uint16_t>(h + 1))) / 2;
    ASSERT_EQ(Fp16Bits(tie), HardwareFp16Bits(tie)) << h;
  }
  EXPECT_GT(compared, 4000000);
}
#endif

TEST(KvDtypeTest, StoreKvValuesRoundsEachValue) {
  const std::vector<float> src = {1.0f, 1.00390625f, -3.14159f, 1e-3f};
  std::vector<uint16_t> bf(4), fp(4);
  StoreKvValues(KvDtype::kBf16, src.data(), 4, bf.data());
  StoreKvValues(KvDtype::kFp16, src.data(), 4, fp.data());
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(bf[i], Bf16Bits(src[i]));
    EXPECT_EQ(fp[i], Fp16Bits(src[i]));
  }
  std::vector<float> f(4);
  StoreKvValues(KvDtype::kFp32, src.data(), 4, f.data());
  EXPECT_EQ(f, src);
}

}  // namespace
}  // namespace catserve::engine
