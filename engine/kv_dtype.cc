#include "engine/kv_dtype.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/bf16.h"

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

uint16_t Fp16Bits(float value) {
  const _Float16 h = static_cast<_Float16>(value);
  uint16_t bits;
  std::memcpy(&bits, &h, sizeof(bits));
  return bits;
}

float Fp16ToFloat(uint16_t bits) {
  _Float16 h;
  std::memcpy(&h, &bits, sizeof(h));
  return static_cast<float>(h);
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
