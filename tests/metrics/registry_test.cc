#include "server/metrics/registry.h"

#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace catserve::metrics {
namespace {

TEST(RegistryTest, DuplicateNameIsAlreadyExists) {
  Registry registry;
  ASSERT_TRUE(registry.AddCounter("x_total", "X.").ok());
  EXPECT_EQ(registry.AddCounter("x_total", "X again.").status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.AddGauge("x_total", "As a gauge.").status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.AddCallbackGauge("x_total", "Callback.", [] { return 1.0; }).code(),
            absl::StatusCode::kAlreadyExists);
}

TEST(RegistryTest, HistogramClaimsItsSuffixedNames) {
  Registry registry;
  ASSERT_TRUE(registry.AddHistogram("lat_seconds", "L.", {}, {1}).ok());
  EXPECT_EQ(registry.AddGauge("lat_seconds_count", "C.").status().code(),
            absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(registry.AddGauge("other_sum", "S.").ok());
  EXPECT_EQ(registry.AddHistogram("other", "O.", {}, {1}).status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST(RegistryTest, InvalidNamesAreRejected) {
  Registry registry;
  for (const char* name : {"", "1abc", "a-b", "a b", "é"}) {
    EXPECT_EQ(registry.AddGauge(name, "Bad.").status().code(), absl::StatusCode::kInvalidArgument)
        << name;
  }
  EXPECT_TRUE(registry.AddGauge("ns:sub_name_1", "Colons are legal in metric names.").ok());
  for (const char* label : {"", "a:b", "1x", "__reserved", "a-b"}) {
    EXPECT_EQ(registry.AddGauge("good", "Bad label.", {label}).status().code(),
              absl::StatusCode::kInvalidArgument)
        << label;
  }
  EXPECT_EQ(registry.AddGauge("good", "Twice.", {"a", "a"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddHistogram("good", "le.", {"le"}, {1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(registry.AddGauge("good", "Still free after the failures.", {"_a"}).ok());
}

TEST(RegistryTest, BadBucketBoundsAreRejected) {
  Registry registry;
  const double inf = std::numeric_limits<double>::infinity();
  for (const std::vector<double>& bounds :
       std::vector<std::vector<double>>{{}, {1, 1}, {2, 1}, {1, inf}, {std::nan("")}}) {
    EXPECT_EQ(registry.AddHistogram("h", "H.", {}, bounds).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST(RegistryTest, WithLabelsReturnsTheSameSeries) {
  Registry registry;
  CounterFamily* family = *registry.AddCounter("c_total", "C.", {"chunk_size"});
  Counter* first = &family->WithLabels({"8"});
  EXPECT_EQ(&family->WithLabels({"8"}), first);
  EXPECT_NE(&family->WithLabels({"16"}), first);
}

TEST(RegistryTest, CounterIgnoresNegativeAndNan) {
  Registry registry;
  Counter& counter = (*registry.AddCounter("c_total", "C."))->WithLabels({});
  counter.Increment();
  counter.Add(0.5);
  counter.Add(-4);
  counter.Add(std::nan(""));
  EXPECT_EQ(counter.Value(), 1.5);
}

constexpr int kThreads = 8;
constexpr int kIncrements = 100000;

TEST(RegistryConcurrencyTest, CounterIncrementsAddUpExactly) {
  Registry registry;
  CounterFamily* family = *registry.AddCounter("c_total", "C.", {"chunk_size"});
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([family] {
      // Every thread looks the series up itself: creation races must yield one series.
      Counter& whole = family->WithLabels({"8"});
      Counter& halves = family->WithLabels({"16"});
      for (int i = 0; i < kIncrements; ++i) {
        whole.Increment();
        halves.Add(0.5);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(family->WithLabels({"8"}).Value(), kThreads * kIncrements);
  EXPECT_EQ(family->WithLabels({"16"}).Value(), kThreads * kIncrements * 0.5);
}

TEST(RegistryConcurrencyTest, HistogramObservationsAddUpExactly) {
  Registry registry;
  HistogramFamily* family = *registry.AddHistogram("h", "H.", {}, {0.5, 1, 4});
  Histogram& histogram = family->WithLabels({});
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&histogram] {
      for (int i = 0; i < kIncrements; ++i) {
        histogram.Observe(i % 4 == 0 ? 0.25 : i % 4 == 1 ? 1 : i % 4 == 2 ? 2 : 8);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const uint64_t quarter = kThreads * kIncrements / 4;
  EXPECT_EQ(histogram.CumulativeCounts(),
            (std::vector<uint64_t>{quarter, 2 * quarter, 3 * quarter, 4 * quarter}));
  EXPECT_EQ(histogram.Sum(), quarter * (0.25 + 1 + 2 + 8));
}

TEST(RegistryConcurrencyTest, GaugeIncrementsAndDecrementsCancel) {
  Registry registry;
  Gauge& gauge = (*registry.AddGauge("g", "G."))->WithLabels({});
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&gauge, t] {
      for (int i = 0; i < kIncrements; ++i) {
        if (t % 2 == 0) {
          gauge.Increment();
        } else {
          gauge.Decrement();
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(gauge.Value(), 0);
}

TEST(RegistryConcurrencyTest, ScrapeWhileRegisteringAndUpdating) {
  Registry registry;
  Counter& counter = (*registry.AddCounter("c_total", "C."))->WithLabels({});
  std::thread writer([&] {
    for (int i = 0; i < 200; ++i) {
      ASSERT_TRUE(registry.AddGauge(absl::StrCat("g", i), "G.", {"l"}).ok());
      counter.Increment();
    }
  });
  for (int i = 0; i < 200; ++i) EXPECT_FALSE(registry.Scrape().empty());
  writer.join();
  EXPECT_EQ(registry.Collect().size(), 201u);
}

}  // namespace
}  // namespace catserve::metrics
