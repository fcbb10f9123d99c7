#ifndef CATSERVE_ENGINE_KV_KV_DTYPE_H_
#define CATSERVE_ENGINE_KV_KV_DTYPE_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace catserve::engine {

// How a KV pool stores each key and value: fp32, or one of the 16-bit formats (half the bytes, so
// twice the entries per MiB and half the bytes an attention step reads). Arithmetic is fp32
// whatever the storage; a 16-bit value is the fp32 one rounded to nearest even when it is written.
enum class KvDtype { kFp32, kBf16, kFp16 };

// "fp32", "bf16", "fp16".
const char* KvDtypeName(KvDtype dtype);
// The inverse of KvDtypeName; INVALID_ARGUMENT naming the accepted names otherwise.
absl::StatusOr<KvDtype> ParseKvDtype(absl::string_view name);
inline int KvDtypeBytes(KvDtype dtype) { return dtype == KvDtype::kFp32 ? 4 : 2; }

// The IEEE binary16 pattern of `value`, rounded to nearest even (overflow gives infinity, NaN
// stays NaN), and its inverse (exact).
uint16_t Fp16Bits(float value);
float Fp16ToFloat(uint16_t bits);

// Writes n fp32 values into storage of `dtype` at dst (rounding as above).
void StoreKvValues(KvDtype dtype, const float* src, int n, void* dst);

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_KV_KV_DTYPE_H_
