// One owner per rule: every rule of the model (served chunk sizes, token ids, context, sampling
// ranges, max_tokens) is stated once, by scheduler::ValidateRequest. The gRPC parser refuses the
// same requests with exactly its message, and keeps to itself only what the transport knows.
#include "server/request_parser.h"

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "engine/model/config.h"
#include "gtest/gtest.h"
#include "scheduler/request.h"

namespace catserve::server {
namespace {

class RequestParserTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<engine::ModelConfig> config =
        engine::LoadModelConfig(std::string(CATSERVE_FIXTURES_DIR) + "/tiny");
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *config;
    parser_ = std::make_unique<RequestParser>(
        /*tokenizer=*/nullptr, config_,
        ServingLimits{.max_prompt_tokens = 100,
                      .max_prompt_bytes = 1000,
                      .max_new_tokens = 100,
                      .max_context = config_.max_position_embeddings},
        /*default_chunk_size=*/4, std::map<std::string, Tier>{{"fast", Tier{16, 0}}});
  }

  static v1::GenerateRequest Valid() {
    v1::GenerateRequest r;
    for (int id : {5, 6, 7}) r.mutable_token_ids()->add_ids(id);
    r.set_max_tokens(4);
    return r;
  }

  absl::Status Parse(const v1::GenerateRequest& r) const {
    return parser_->Parse(r, absl::InfiniteFuture(), 1).status();
  }

  engine::ModelConfig config_;
  std::unique_ptr<RequestParser> parser_;
};

TEST_F(RequestParserTest, ModelRulesComeFromValidateRequestWordForWord) {
  std::vector<std::pair<std::string, v1::GenerateRequest>> cases;
  v1::GenerateRequest r = Valid();
  r.set_chunk_size(3);
  cases.push_back({"unserved chunk_size", r});
  r = Valid();
  r.set_chunk_size(8);
  r.set_coarsest_chunk_size(4);
  cases.push_back({"coarsest finer than chunk_size", r});
  r = Valid();
  r.mutable_token_ids()->set_ids(1, config_.vocab_size);
  cases.push_back({"prompt id outside the vocabulary", r});
  r = Valid();
  r.add_stop_token_ids(-1);
  cases.push_back({"stop id outside the vocabulary", r});
  r = Valid();
  r.set_max_tokens(0);
  cases.push_back({"max_tokens 0", r});
  r = Valid();
  r.set_max_tokens(config_.max_position_embeddings - 1);
  cases.push_back({"past the context", r});
  r = Valid();
  r.mutable_sampling()->set_top_p(0);
  cases.push_back({"top_p 0", r});

  for (const auto& [name, request] : cases) {
    SCOPED_TRACE(name);
    absl::StatusOr<ParsedGeneration> parsed =
        RequestParser(nullptr, config_,
                      ServingLimits{.max_prompt_tokens = 1000,
                                    .max_prompt_bytes = 10000,
                                    .max_new_tokens = 1000,
                                    .max_context = config_.max_position_embeddings},
                      4, {})
            .Parse(request, absl::InfiniteFuture(), 1);
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    // The same request as the scheduler sees it gets the same words from the rule's owner.
    scheduler::GenerationRequest converted;
    converted.prompt.assign(request.token_ids().ids().begin(), request.token_ids().ids().end());
    converted.max_new_tokens = request.max_tokens();
    converted.stop_token_ids.assign(request.stop_token_ids().begin(),
                                    request.stop_token_ids().end());
    converted.chunk_size = request.chunk_size() == 0 ? 4 : request.chunk_size();
    converted.coarsest_chunk_size = request.coarsest_chunk_size();
    converted.sampling.top_p = request.sampling().has_top_p() ? request.sampling().top_p() : 1.0f;
    EXPECT_EQ(parsed.status(), scheduler::ValidateRequest(config_, converted));
  }
}

TEST_F(RequestParserTest, TransportRulesStayWithTheParser) {
  v1::GenerateRequest r = Valid();
  r.set_chunk_size(4);
  r.set_tier("fast");
  EXPECT_NE(Parse(r).message().find("set chunk_size or tier, not both"), std::string::npos);
  r = Valid();
  r.set_tier("slow");
  EXPECT_NE(Parse(r).message().find("unknown tier 'slow'; tiers: fast=16"), std::string::npos);
  r = Valid();
  r.set_max_tokens(101);
  EXPECT_NE(Parse(r).message().find("more than the limit of 100"), std::string::npos);
  r = Valid();
  r.add_stop("");
  EXPECT_NE(Parse(r).message().find("stop[0] is empty"), std::string::npos);
  EXPECT_TRUE(Parse(Valid()).ok()) << Parse(Valid());
}

// Every refusal names its field in the status too (scheduler::FieldOf), as catserve.v1 spells it,
// for the OpenAI API to name it in its own terms.
TEST_F(RequestParserTest, EveryRefusalNamesItsField) {
  const std::vector<std::pair<std::function<void(v1::GenerateRequest&)>, std::string>> cases = {
      {[](v1::GenerateRequest& r) { r.set_tier("slow"); }, "tier"},
      {[](v1::GenerateRequest& r) { r.set_max_tokens(101); }, "max_tokens"},
      {[](v1::GenerateRequest& r) { r.add_stop(""); }, "stop"},
      {[](v1::GenerateRequest& r) { r.set_chunk_size(3); }, "chunk_size"},
      {[](v1::GenerateRequest& r) { r.mutable_token_ids()->add_ids(-1); }, "prompt"},
      {[](v1::GenerateRequest& r) { r.mutable_token_ids()->clear_ids(); }, "token_ids"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_top_p(2); }, "sampling.top_p"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_temperature(-1); },
       "sampling.temperature"},
  };
  for (const auto& [edit, field] : cases) {
    v1::GenerateRequest r = Valid();
    edit(r);
    const absl::Status status = Parse(r);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_EQ(scheduler::FieldOf(status), field) << status;
  }
}

TEST_F(RequestParserTest, ATierResolvesToItsChunkSizeAndAnUnservedSizeIsStillReported) {
  v1::GenerateRequest r = Valid();
  r.set_tier("fast");
  EXPECT_EQ(parser_->ResolveChunkSize(r).value_or(-1), 16);
  r = Valid();
  r.set_chunk_size(3);
  EXPECT_EQ(parser_->ResolveChunkSize(r).value_or(-1), 3);
  EXPECT_FALSE(parser_->serves_chunk_size(3));
}

}  // namespace
}  // namespace catserve::server
