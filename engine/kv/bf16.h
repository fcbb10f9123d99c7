#ifndef CATSERVE_ENGINE_KV_BF16_H_
#define CATSERVE_ENGINE_KV_BF16_H_

#include <cstdint>
#include <cstring>

namespace catserve::engine {

// The bf16 pattern of an fp32 value, rounded to nearest even (NaN stays a quiet NaN): how the
// CUDA backend stores weights and KV, and how CpuEngine's bf16 emulation rounds.
inline uint16_t Bf16Bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

// `value` rounded to the nearest bf16, as fp32.
inline float RoundToBf16(float value) {
  const uint32_t bits = static_cast<uint32_t>(Bf16Bits(value)) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_KV_BF16_H_
