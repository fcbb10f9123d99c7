// The device sampler (engine/cuda/device_sampler.h) against the CPU sampler and the definitions:
// greedy picks the CPU's token on the same logits (with the repetition penalty), seeded draws are
// reproducible on the device and change with the seed, and a chi-square test on fixed logits
// (tests/common/chi_square.h) shows it draws from the intended distribution for temperature,
// top-k, top-p, min-p and the penalty, the same test the CPU sampler passes. Skips without a GPU.
#include "engine/cuda/device_sampler.h"

#include <cuda_runtime_api.h>

#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/sampling/sampler.h"
#include "gtest/gtest.h"
#include "tests/common/chi_square.h"
#include "tests/common/intended_distribution.h"
#include "tests/cuda/no_device.h"

namespace catserve::engine::cuda {
namespace {

using ::catserve::testing::DrawnFrom;
using ::catserve::testing::FixedLogits;
using ::catserve::testing::Intended;
using ::catserve::testing::SeenTokens;
using ::catserve::testing::SettingsUnderTest;

class DeviceSamplerTest : public ::testing::Test {
 protected:
  void SetUp() override { SKIP_WITHOUT_CUDA_DEVICE(); }

  // `rows` copies of `row` drawn with params (step = row index) and the same context.
  std::vector<int32_t> SampleCopies(const std::vector<float>& row, int rows,
                                    const SamplingParams& p, const std::vector<int32_t>& context) {
    std::vector<float> all;
    for (int r = 0; r < rows; ++r) all.insert(all.end(), row.begin(), row.end());
    return Sample(all, row.size(), std::vector<SamplingParams>(rows, p),
                  std::vector<std::vector<int32_t>>(rows, context));
  }

  std::vector<int32_t> Sample(const std::vector<float>& logits, int vocab,
                              const std::vector<SamplingParams>& params,
                              const std::vector<std::vector<int32_t>>& contexts) {
    DeviceBuffer device;
    EXPECT_TRUE(device.Upload(logits).ok());
    std::vector<uint64_t> steps(params.size());
    for (size_t i = 0; i < steps.size(); ++i) steps[i] = i;
    absl::StatusOr<std::vector<int32_t>> tokens =
        sampler_.Sample(device.as<float>(), params.size(), vocab, params, contexts, steps, nullptr);
    EXPECT_TRUE(tokens.ok()) << tokens.status();
    return tokens.ok() ? *tokens : std::vector<int32_t>();
  }

  DeviceSampler sampler_;
};

TEST_F(DeviceSamplerTest, GreedyPicksTheCpuSamplersToken) {
  const int V = 32000, rows = 64;
  std::mt19937 rng(5);
  std::normal_distribution<float> noise(0, 3);
  std::vector<float> logits(static_cast<size_t>(rows) * V);
  for (float& x : logits) x = noise(rng);
  std::vector<SamplingParams> params(rows, SamplingParams{.temperature = 0.0f});
  std::vector<std::vector<int32_t>> contexts(rows);
  for (int r = 0; r < rows; ++r) {
    params[r].repetition_penalty = r % 2 == 0 ? 1.0f : 1.5f;
    for (int k = 0; k < 50; ++k) contexts[r].push_back(rng() % V);
  }
  const std::vector<int32_t> got = Sample(logits, V, params, contexts);
  ASSERT_EQ(got.size(), static_cast<size_t>(rows));
  for (int r = 0; r < rows; ++r) {
    std::vector<float> row(logits.begin() + static_cast<size_t>(r) * V,
                           logits.begin() + static_cast<size_t>(r + 1) * V);
    EXPECT_EQ(got[r], Sampler().Sample(absl::MakeSpan(row), contexts[r], params[r], r))
        << "row " << r;
  }
}

TEST_F(DeviceSamplerTest, SeededDrawsAreReproducibleAndChangeWithTheSeed) {
  const SamplingParams p{.temperature = 1.0f, .top_p = 0.95f, .seed = 11};
  const std::vector<int32_t> a = SampleCopies(FixedLogits(), 256, p, {});
  EXPECT_EQ(a, SampleCopies(FixedLogits(), 256, p, {}));
  SamplingParams other = p;
  other.seed = 12;
  EXPECT_NE(a, SampleCopies(FixedLogits(), 256, other, {}));
}

TEST_F(DeviceSamplerTest, DrawsFromTheIntendedDistribution) {
  const std::vector<int32_t> seen = SeenTokens();
  const std::vector<SamplingParams> settings = SettingsUnderTest();
  for (const SamplingParams& p : settings) {
    const std::vector<int32_t> tokens = SampleCopies(FixedLogits(), 40000, p, seen);
    std::vector<int> counts(FixedLogits().size());
    for (int32_t t : tokens) ++counts.at(t);
    EXPECT_TRUE(DrawnFrom(counts, Intended(FixedLogits(), p, seen)))
        << "temperature " << p.temperature << " top_k " << p.top_k << " top_p " << p.top_p
        << " min_p " << p.min_p << " penalty " << p.repetition_penalty;
  }
}

// The device and the host draw with the same generator (engine/sampling/draw.h) over the same
// order (ascending token id): from the same logits, seed and draw index they pick the same token
// except where the draw lands within float rounding of a boundary, or on a tie at a top-k/top-p
// boundary. 10,000 draws per setting (temperature, top-k, top-p, min-p, penalty, all of them) on
// a 4096-token row of N(0, 2^2) logits must agree on >= 99.9%.
TEST_F(DeviceSamplerTest, DrawsAgreeWithTheHostSamplerDrawForDraw) {
  constexpr int kV = 4096, kDraws = 10000;
  std::mt19937 rng(21);
  std::normal_distribution<float> noise(0, 2);
  std::vector<float> row(kV);
  for (float& x : row) x = noise(rng);
  std::vector<int32_t> seen;
  for (int k = 0; k < 40; ++k) seen.push_back(static_cast<int32_t>(rng() % kV));
  const std::vector<SamplingParams> settings = {
      {.temperature = 1.0f, .seed = 1},
      {.temperature = 0.7f, .seed = 2},
      {.temperature = 1.0f, .top_k = 50, .seed = 3},
      {.temperature = 1.0f, .top_p = 0.9f, .seed = 4},
      {.temperature = 1.0f, .min_p = 0.05f, .seed = 5},
      {.temperature = 1.0f, .repetition_penalty = 1.3f, .seed = 6},
      {.temperature = 0.9f,
       .top_k = 200,
       .top_p = 0.95f,
       .min_p = 0.01f,
       .repetition_penalty = 1.2f,
       .seed = 7},
  };
  for (const SamplingParams& p : settings) {
    const std::vector<int32_t> device = SampleCopies(row, kDraws, p, seen);
    ASSERT_EQ(device.size(), static_cast<size_t>(kDraws));
    Sampler host;
    int agree = 0;
    for (int d = 0; d < kDraws; ++d) {
      std::vector<float> l = row;
      agree += host.Sample(absl::MakeSpan(l), seen, p, d) == device[d] ? 1 : 0;
    }
    EXPECT_GE(agree, kDraws * 999 / 1000)
        << "temperature " << p.temperature << " top_k " << p.top_k << " top_p " << p.top_p
        << " min_p " << p.min_p << " penalty " << p.repetition_penalty << ": " << agree << " of "
        << kDraws;
  }
}

}  // namespace
}  // namespace catserve::engine::cuda
