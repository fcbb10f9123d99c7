// cuda::SiluMul on the bf16 output of the gate/up GEMM against the CPU's SiluMul
// (engine/kernels/cpu_ops.h) on the same bf16 values widened to fp32, rounded to bf16 as the
// device stores it: random non-zero gates and ups, widths below, at and above one block's
// threads, the output poisoned with NaN so that every value must be written. Skips without a
// device.
#include <cuda_runtime_api.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "engine/cuda/device_buffer.h"
#include "engine/cuda/kernels.h"
#include "engine/kernels/cpu_ops.h"
#include "engine/kv/bf16.h"
#include "gtest/gtest.h"
#include "tests/cuda/no_device.h"

namespace catserve::engine {
namespace {

using cuda::DeviceBuffer;

constexpr uint16_t kBf16Nan = 0x7fc0;

float Bf16ToFloat(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

TEST(FusedSiluMulTest, Bf16GateUpMatchesTheCpu) {
  SKIP_WITHOUT_CUDA_DEVICE();
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> mag(0.05f, 6.0f);
  std::bernoulli_distribution sign(0.5);
  for (int inter : {1, 37, 256, 300, 1408}) {
    for (int rows : {1, 5}) {
      const size_t n = static_cast<size_t>(rows) * inter;
      std::vector<uint16_t> gate_up(2 * n);
      std::vector<float> widened(2 * n);
      for (size_t i = 0; i < gate_up.size(); ++i) {
        const float v = sign(rng) ? mag(rng) : -mag(rng);
        gate_up[i] = Bf16Bits(v);
        widened[i] = Bf16ToFloat(gate_up[i]);
      }
      std::vector<float> want(n);
      SiluMul(widened.data(), rows, inter, want.data());

      DeviceBuffer in, out;
      ASSERT_TRUE(in.Upload(gate_up).ok());
      ASSERT_TRUE(out.Upload(std::vector<uint16_t>(n, kBf16Nan)).ok());
      ASSERT_EQ(cuda::SiluMul(in.as<uint16_t>(), rows, inter, out.as<uint16_t>(), nullptr),
                cudaSuccess);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      std::vector<uint16_t> got(n, 0);
      ASSERT_EQ(cudaMemcpy(got.data(), out.data(), n * sizeof(uint16_t), cudaMemcpyDeviceToHost),
                cudaSuccess);
      // The device computes in fp32 (with __expf) and rounds once to bf16: within one bf16
      // rounding (2^-9 relative) of the fp32 reference plus a little for __expf.
      for (size_t i = 0; i < n; ++i) {
        const float g = Bf16ToFloat(got[i]);
        ASSERT_TRUE(std::isfinite(g)) << "inter " << inter << " rows " << rows << " value " << i;
        ASSERT_NEAR(g, want[i], std::abs(want[i]) / 256 + 1e-6f)
            << "inter " << inter << " rows " << rows << " value " << i;
      }
    }
  }
}

}  // namespace
}  // namespace catserve::engine
