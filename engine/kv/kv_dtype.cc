#include "engine/kv/kv_dtype.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/kv/bf16.h"

namespace catserve::engine {

const char* KvDtypeName(KvDtype dtype) {
  switch (dtype) {
    case KvDtype::kFp32:
      return "fp32";
    case KvDtype::kBf16:
      return "bf16";
    case KvDtype::kFp16:
      return "fp16";
  }
  return "unknown";
}

absl::StatusOr<KvDtype> ParseKvDtype(absl::string_view name) {
  for (KvDtype d : {KvDtype::kFp32, KvDtype::kBf16, KvDtype::kFp16}) {
    if (name == KvDtypeName(d)) return d;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("KV dtype '", name, "' is not one of bf16, fp16, fp32"));
}

// IEEE 754 binary16 by bit arithmetic (round to nearest, ties to even, as the F16C instructions
// and GCC's _Float16 round), so that every compiler and CPU stores the same bits.
uint16_t Fp16Bits(float value) {
  uint32_t x;
  std::memcpy(&x, &value, sizeof(x));
  const uint32_t sign = (x >> 16) & 0x8000;
  const uint32_t abs = x & 0x7fffffff;
  if (abs >= 0x7f800000) {  // inf, or NaN kept quiet with its top payload bits
    return static_cast<uint16_t>(sign |
                                 (abs == 0x7f800000 ? 0x7c00 : 0x7e00 | (abs >> 13 & 0x3ff)));
  }
  if (abs >= 0x477ff000) return static_cast<uint16_t>(sign | 0x7c00);  // rounds past 65504
  auto round_shift = [](uint32_t v, int shift) {  // v >> shift, rounded to nearest even
    const uint32_t q = v >> shift;
    const uint32_t rem = v & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    return q + (rem > half || (rem == half && (q & 1)) ? 1 : 0);
  };
  if (abs >= 0x38800000) {  // a normal half: rebias the exponent from 127 to 15
    return static_cast<uint16_t>(sign | round_shift(abs - 0x38000000, 13));
  }
  // A subnormal half (or zero): units of 2^-24.
  const int exponent = static_cast<int>(abs >> 23);
  if (exponent < 102) return static_cast<uint16_t>(sign);  // below 2^-25: rounds to zero
  const uint32_t mantissa = (abs & 0x7fffff) | 0x800000;
  return static_cast<uint16_t>(sign | round_shift(mantissa, 126 - exponent));
}

float Fp16ToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1f;
  const uint32_t mantissa = bits & 0x3ff;
  uint32_t x;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    std::memcpy(&x, &magnitude, sizeof(x));
    x |= sign;
  } else if (exponent == 31) {
    x = sign | 0x7f800000 | (mantissa << 13);
  } else {
    x = sign | ((exponent + 112) << 23) | (mantissa << 13);
  }
  float value;
  std::memcpy(&value, &x, sizeof(value));
  return value;
}

void StoreKvValues(KvDtype dtype, const float* src, int n, void* dst) {
  switch (dtype) {
    case KvDtype::kFp32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case KvDtype::kBf16:
      for (int i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = Bf16Bits(src[i]);
      return;
    case KvDtype::kFp16:
      for (int i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = Fp16Bits(src[i]);
      return;
  }
}

}  // namespace catserve::engine
