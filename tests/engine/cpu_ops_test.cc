// Linear: a row's output does not depend on how many rows share the call, on the BLAS cores
// where cpu_ops.cc can promise it (OpenBLAS's AVX-512 ones); the batching tests of the scheduler
// and the server rest on it.
#include "engine/kernels/cpu_ops.h"

#include <cblas.h>

#include <cctype>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace catserve::engine {
namespace {

bool RowsAreBatchInvariantOnThisCore() {
  std::string core = openblas_get_corename();
  for (char& c : core) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return core == "skylakex" || core == "cooperlake" || core == "sapphirerapids";
}

TEST(LinearTest, ARowsOutputDoesNotDependOnTheRowsBesideIt) {
  if (!RowsAreBatchInvariantOnThisCore()) {
    GTEST_SKIP() << "OpenBLAS core " << openblas_get_corename()
                 << " rounds rows by their position in a call";
  }
  // The shipped model's and the test models' layer shapes, and slices of them.
  const int shapes[][2] = {{64, 64},   {64, 256}, {256, 64},   {192, 192}, {192, 768},
                           {768, 192}, {96, 96},  {192, 4096}, {32, 32},   {48, 16}};
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (const auto& [in, out] : shapes) {
    SCOPED_TRACE(testing::Message() << in << " -> " << out);
    constexpr int kRows = 80;
    std::vector<float> w(static_cast<size_t>(in) * out), x(static_cast<size_t>(in) * kRows);
    for (float& v : w) v = dist(rng);
    for (float& v : x) v = dist(rng);
    std::vector<float> alone(static_cast<size_t>(out) * kRows), together(alone.size());
    for (int r = 0; r < kRows; ++r) {
      Linear(x.data() + static_cast<size_t>(r) * in, 1, in, w.data(), out,
             alone.data() + static_cast<size_t>(r) * out);
    }
    for (int rows = 1; rows <= kRows; ++rows) {
      Linear(x.data(), rows, in, w.data(), out, together.data());
      ASSERT_EQ(std::memcmp(together.data(), alone.data(), sizeof(float) * rows * out), 0)
          << rows << " rows";
    }
  }
}

}  // namespace
}  // namespace catserve::engine
