// A real catserve on loopback: what Generate, Tokenize, GetModelInfo and health return.
#include "engine/generate.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "engine/load_engine.h"
#include "engine/model/tokenizer.h"
#include "engine/step/engine.h"
#include "gtest/gtest.h"
#include "server/server_options.h"
#include "tests/server/server_process.h"

namespace catserve::testing {
namespace {

class GenerateTest : public ::testing::Test {
 protected:
  // The daemon runs with default flags on TestDevice(); the offline engine it is compared with
  // runs on the same device and stores KV the same way, so greedy and seeded streams must match
  // it token for token (on the GPU too: one backend, the same steps).
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    absl::StatusOr<std::unique_ptr<engine::Engine>> engine = engine::LoadEngine(
        TinyModelDir(),
        {.threads = 1,
         .device = TestDevice() == "cuda" ? engine::Device::kCuda : engine::Device::kCpu,
         .kv_dtype = server::ServerOptions().kv_dtype});
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = engine->release();
    absl::StatusOr<std::unique_ptr<engine::Tokenizer>> tokenizer =
        engine::Tokenizer::Load(TinyModelDir() + "/tokenizer.model");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = tokenizer->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    delete engine_;
    delete tokenizer_;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    stub_ = server_->NewStub();
  }

  std::vector<int32_t> Encode(const std::string& text) { return *tokenizer_->Encode(text); }

  static ServerProcess* server_;
  static engine::Engine* engine_;
  static engine::Tokenizer* tokenizer_;
  std::unique_ptr<v1::Generation::Stub> stub_;
};
ServerProcess* GenerateTest::server_ = nullptr;
engine::Engine* GenerateTest::engine_ = nullptr;
engine::Tokenizer* GenerateTest::tokenizer_ = nullptr;

TEST_F(GenerateTest, GreedyStreamEqualsOfflineGenerationForEveryChunkSize) {
  const std::vector<int32_t> prompt = Encode("Once upon a time there was a little");
  const int eos = engine_->config().eos_token_id;
  for (int chunk_size : engine_->config().chunk_sizes()) {
    SCOPED_TRACE(chunk_size);
    engine::SamplingParams greedy;
    greedy.temperature = 0;
    absl::StatusOr<std::vector<int32_t>> offline =
        engine::GenerateAlone(*engine_, prompt, chunk_size, 40, greedy, {&eos, 1});
    ASSERT_TRUE(offline.ok()) << offline.status();

    Generation served = Generate(*stub_, GreedyRequest(prompt, 40, chunk_size));
    ASSERT_TRUE(served.status.ok()) << served.status.error_message();
    EXPECT_EQ(served.ids, *offline);
    EXPECT_EQ(served.finish_reason, offline->back() == eos ? "stop" : "length");
    EXPECT_EQ(served.usage.prompt_tokens(), static_cast<int>(prompt.size()));
    EXPECT_EQ(served.usage.generated_tokens(), static_cast<int>(offline->size()));
    EXPECT_EQ(served.usage.chunk_size(), chunk_size);
    EXPECT_GT(served.usage.kv_bytes(), 0);
    EXPECT_FALSE(served.usage.degraded());  // the pool is far from full
    EXPECT_FALSE(served.usage.preempted());

    // The pieces add up to the text of the whole sequence after the prompt's.
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), offline->begin(), offline->end());
    const std::string prompt_text = *tokenizer_->Decode(prompt);
    const std::string all_text = *tokenizer_->Decode(all);
    ASSERT_TRUE(absl::StartsWith(all_text, prompt_text));
    EXPECT_EQ(served.text, all_text.substr(prompt_text.size()));
  }
}

TEST_F(GenerateTest, SeededSamplingIsReproducibleAndMatchesOffline) {
  v1::GenerateRequest request;
  request.set_text("The dog and the cat");
  request.set_max_tokens(30);
  request.set_ignore_eos(true);
  request.set_tier("quality");
  request.mutable_sampling()->set_temperature(0.9f);
  request.mutable_sampling()->set_top_p(0.95f);
  request.mutable_sampling()->set_seed(1234);
  Generation first = Generate(*stub_, request);
  Generation second = Generate(*stub_, request);
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  EXPECT_EQ(first.ids, second.ids);
  EXPECT_EQ(first.text, second.text);
  EXPECT_EQ(first.finish_reason, "length");
  EXPECT_EQ(first.usage.chunk_size(), 2);

  engine::SamplingParams sampling;
  sampling.temperature = 0.9f;
  sampling.top_p = 0.95f;
  sampling.seed = 1234;
  absl::StatusOr<std::vector<int32_t>> offline =
      engine::GenerateAlone(*engine_, Encode("The dog and the cat"), 2, 30, sampling);
  ASSERT_TRUE(offline.ok()) << offline.status();
  EXPECT_EQ(first.ids, *offline);
}

TEST_F(GenerateTest, StopStringEndsTheStreamBeforeIt) {
  v1::GenerateRequest request = GreedyRequest(Encode("Once upon a time"), 60, 4);
  request.set_ignore_eos(true);
  Generation full = Generate(*stub_, request);
  ASSERT_TRUE(full.status.ok()) << full.status.error_message();
  ASSERT_GE(full.text.size(), 12u) << full.text;
  // A stop string of about 3 bytes from the middle of the greedy text, cut at UTF-8 character
  // boundaries (a request's strings must be valid UTF-8).
  auto boundary = [&](size_t at) {
    while (at < full.text.size() && (static_cast<unsigned char>(full.text[at]) & 0xc0) == 0x80) {
      ++at;
    }
    return at;
  };
  const size_t from = boundary(full.text.size() / 2);
  const std::string stop = full.text.substr(from, boundary(from + 3) - from);
  ASSERT_FALSE(stop.empty()) << full.text;
  request.add_stop(stop);
  Generation stopped = Generate(*stub_, request);
  ASSERT_TRUE(stopped.status.ok()) << stopped.status.error_message();
  EXPECT_EQ(stopped.finish_reason, "stop");
  EXPECT_EQ(stopped.text, full.text.substr(0, full.text.find(stop)));
  EXPECT_LT(stopped.ids.size(), full.ids.size());
  EXPECT_EQ(stopped.usage.generated_tokens(), static_cast<int>(stopped.ids.size()));
  // The ids are a prefix of the unstopped run's.
  EXPECT_TRUE(std::equal(stopped.ids.begin(), stopped.ids.end(), full.ids.begin()));
}

TEST_F(GenerateTest, StopTokenIdAndLogprobs) {
  v1::GenerateRequest request = GreedyRequest(Encode("Once upon a time"), 30, 8);
  request.set_ignore_eos(true);
  request.set_logprobs(true);
  Generation full = Generate(*stub_, request);
  ASSERT_TRUE(full.status.ok()) << full.status.error_message();
  ASSERT_EQ(full.logprobs.size(), full.ids.size());
  for (float lp : full.logprobs) EXPECT_LE(lp, 0.0f);

  request.add_stop_token_ids(full.ids[5]);
  Generation stopped = Generate(*stub_, request);
  ASSERT_TRUE(stopped.status.ok()) << stopped.status.error_message();
  EXPECT_EQ(stopped.finish_reason, "stop");
  const size_t first = std::find(full.ids.begin(), full.ids.end(), full.ids[5]) - full.ids.begin();
  EXPECT_EQ(stopped.ids, std::vector<int32_t>(full.ids.begin(), full.ids.begin() + first + 1));
}

TEST_F(GenerateTest, TokenizeMatchesTheModelTokenizer) {
  grpc::ClientContext context;
  v1::TokenizeRequest request;
  request.set_text("Once upon a time");
  v1::TokenizeResponse response;
  ASSERT_TRUE(stub_->Tokenize(&context, request, &response).ok());
  EXPECT_EQ(std::vector<int32_t>(response.token_ids().begin(), response.token_ids().end()),
            Encode("Once upon a time"));
  EXPECT_EQ(response.pieces_size(), response.token_ids_size());
}

TEST_F(GenerateTest, ModelInfoDescribesModelAndLimits) {
  grpc::ClientContext context;
  v1::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&context, v1::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.model(), "tiny");
  EXPECT_EQ(std::vector<int>(info.chunk_sizes().begin(), info.chunk_sizes().end()),
            (std::vector<int>{1, 2, 4, 8, 16}));
  EXPECT_EQ(info.default_chunk_size(), 8);
  EXPECT_EQ(info.tiers().at("quality"), 2);
  EXPECT_EQ(info.tiers().at("balanced"), 8);
  EXPECT_EQ(info.tiers().at("throughput"), 16);
  // Under memory pressure a balanced request may go to 16; the others stay where they are.
  EXPECT_EQ(info.tier_coarsest_chunk_sizes().at("quality"), 2);
  EXPECT_EQ(info.tier_coarsest_chunk_sizes().at("balanced"), 16);
  EXPECT_EQ(info.tier_coarsest_chunk_sizes().at("throughput"), 16);
  EXPECT_EQ(info.pressure_policy(), "degrade");
  EXPECT_EQ(info.limits().max_context(), 128);
  EXPECT_EQ(info.limits().max_prompt_tokens(), 127);
  EXPECT_EQ(info.limits().max_new_tokens(), 127);
  EXPECT_EQ(info.limits().max_queued(), 1024);
  EXPECT_EQ(info.vocab_size(), 384);
  EXPECT_EQ(info.eos_token_id(), 2);
  // 2 layers x (K and V) x 4 kv heads x 16 head dim x 2 bytes (--kv_dtype's default, bf16).
  EXPECT_EQ(info.kv_bytes_per_entry(), 2 * 2 * 4 * 16 * 2);
  EXPECT_EQ(info.kv_pool().page_entries(), 16);
  EXPECT_EQ(info.kv_pool().total_pages(), (16 << 20) / info.kv_pool().page_bytes());
  EXPECT_EQ(info.backend(), TestDevice());
}

TEST_F(GenerateTest, HealthServesProcessAndService) {
  EXPECT_EQ(CheckHealth(server_->address(), "").value_or(-1), 1);
  EXPECT_EQ(CheckHealth(server_->address(), "catserve.v1.Generation").value_or(-1), 1);
  EXPECT_EQ(CheckHealth(server_->address(), "no.such.Service").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(GenerateTest, MetricsCountRequestsAndIdlePoolIsEmpty) {
  Generation g = Generate(*stub_, GreedyRequest(Encode("Hello"), 5, 16));
  ASSERT_TRUE(g.status.ok());
  EXPECT_EQ(server_->AwaitMetric("catserve_kv_pages_used", 0, absl::Seconds(5)).value_or(-1), 0);
  EXPECT_GT(server_->Metric("catserve_kv_pages_capacity").value_or(0), 0);
  EXPECT_GE(server_->Metric("catserve_generation_tokens_total{chunk_size=\"16\"}").value_or(0), 5);
  EXPECT_GE(
      server_->Metric("catserve_requests_finished_total{outcome=\"length\",chunk_size=\"16\"}")
          .value_or(0),
      1);
}

}  // namespace
}  // namespace catserve::testing
