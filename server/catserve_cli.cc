// catserve-cli: a command-line client of catserve.v1.Generation.
//   catserve-cli generate --addr=localhost:50051 --prompt="Once upon a time" [--tier=quality]
//   catserve-cli tokenize --prompt="Hello"
//   catserve-cli info
// Errors print the gRPC status code and message and exit non-zero.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catserve/v1/generation.grpc.pb.h"
#include "google/protobuf/text_format.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, addr, "localhost:50051", "Server address HOST:PORT");
ABSL_FLAG(std::string, prompt, "", "Prompt text (generate, tokenize)");
ABSL_FLAG(std::string, token_ids, "", "Prompt as comma-separated token ids instead of --prompt");
ABSL_FLAG(int, max_tokens, 64, "Most tokens to generate");
ABSL_FLAG(int, chunk_size, 0, "Chunk size (0: the tier's or the server default)");
ABSL_FLAG(std::string, tier, "", "Named chunk size, e.g. quality, balanced, throughput");
ABSL_FLAG(int, coarsest_chunk_size, 0,
          "Coarsest chunk size the server may switch to under memory pressure (0: the tier's, "
          "or none coarser)");
ABSL_FLAG(std::optional<float>, temperature, std::nullopt, "0 = greedy; server default 1");
ABSL_FLAG(int, top_k, 0, "0 = off");
ABSL_FLAG(std::optional<float>, top_p, std::nullopt, "in (0, 1]; server default 1 (off)");
ABSL_FLAG(float, min_p, 0.0f, "in [0, 1]; 0 = off");
ABSL_FLAG(std::optional<float>, repetition_penalty, std::nullopt, "> 0; 1 = off");
ABSL_FLAG(std::optional<uint64_t>, seed, std::nullopt, "Sampling seed (unset: random)");
ABSL_FLAG(std::vector<std::string>, stop, {}, "Stop strings, comma-separated");
ABSL_FLAG(bool, ignore_eos, false, "Keep generating past the end-of-sequence token");
ABSL_FLAG(int, priority, 0, "Higher is admitted first");
ABSL_FLAG(bool, logprobs, false, "Print each token id and its log-probability to stderr");
ABSL_FLAG(int, top_logprobs, 0,
          "With each token, print this many most likely alternatives and their log-probabilities "
          "to stderr (0-20; implies --logprobs)");
ABSL_FLAG(double, timeout_s, 0, "Deadline of the call in seconds (0: none)");

namespace catserve::cli {
namespace {

constexpr char kUsage[] =
    "catserve-cli COMMAND [--flags]\n"
    "Commands:\n"
    "  generate  stream a completion of --prompt (or --token_ids)\n"
    "  tokenize  print the token ids of --prompt\n"
    "  info      print the model, chunk sizes, tiers and limits\n"
    "Example: catserve-cli generate --addr=localhost:50051 --prompt=\"Once upon a time\" "
    "--tier=quality --max_tokens=32";

int Fail(const grpc::Status& status) {
  absl::FPrintF(stderr, "\nerror: %s: %s\n",
                absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())),
                status.error_message());
  return EXIT_FAILURE;
}

void SetDeadline(grpc::ClientContext& context) {
  const double timeout = absl::GetFlag(FLAGS_timeout_s);
  if (timeout > 0) {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::microseconds(static_cast<int64_t>(timeout * 1e6)));
  }
}

absl::StatusOr<v1::GenerateRequest> BuildRequest() {
  v1::GenerateRequest request;
  const std::string ids = absl::GetFlag(FLAGS_token_ids);
  if (!ids.empty()) {
    for (absl::string_view id : absl::StrSplit(ids, ',', absl::SkipWhitespace())) {
      int value;
      if (!absl::SimpleAtoi(id, &value)) {
        return absl::InvalidArgumentError(absl::StrFormat("--token_ids: '%s' is not an id", id));
      }
      request.mutable_token_ids()->add_ids(value);
    }
  } else {
    request.set_text(absl::GetFlag(FLAGS_prompt));
  }
  request.set_max_tokens(absl::GetFlag(FLAGS_max_tokens));
  v1::SamplingParams* s = request.mutable_sampling();
  if (auto t = absl::GetFlag(FLAGS_temperature)) s->set_temperature(*t);
  s->set_top_k(absl::GetFlag(FLAGS_top_k));
  if (auto p = absl::GetFlag(FLAGS_top_p)) s->set_top_p(*p);
  s->set_min_p(absl::GetFlag(FLAGS_min_p));
  if (auto r = absl::GetFlag(FLAGS_repetition_penalty)) s->set_repetition_penalty(*r);
  if (auto seed = absl::GetFlag(FLAGS_seed)) s->set_seed(*seed);
  for (const std::string& stop : absl::GetFlag(FLAGS_stop)) request.add_stop(stop);
  request.set_ignore_eos(absl::GetFlag(FLAGS_ignore_eos));
  request.set_chunk_size(absl::GetFlag(FLAGS_chunk_size));
  request.set_tier(absl::GetFlag(FLAGS_tier));
  request.set_coarsest_chunk_size(absl::GetFlag(FLAGS_coarsest_chunk_size));
  request.set_priority(absl::GetFlag(FLAGS_priority));
  request.set_logprobs(absl::GetFlag(FLAGS_logprobs));
  request.set_top_logprobs(absl::GetFlag(FLAGS_top_logprobs));
  return request;
}

int Generate(v1::Generation::Stub& stub) {
  absl::StatusOr<v1::GenerateRequest> request = BuildRequest();
  if (!request.ok()) {
    absl::FPrintF(stderr, "error: %s\n", request.status().message());
    return EXIT_FAILURE;
  }
  grpc::ClientContext context;
  SetDeadline(context);
  const absl::Time start = absl::Now();
  absl::Time first = absl::InfinitePast();
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub.Generate(&context, *request);
  v1::GenerateResponse response;
  v1::GenerateResponse last;
  while (reader->Read(&response)) {
    if (first == absl::InfinitePast() && response.token_ids_size() > 0) first = absl::Now();
    std::fwrite(response.text().data(), 1, response.text().size(), stdout);
    std::fflush(stdout);
    if (absl::GetFlag(FLAGS_logprobs) || absl::GetFlag(FLAGS_top_logprobs) > 0) {
      for (int i = 0; i < response.token_ids_size(); ++i) {
        std::string alternatives;
        if (i < response.top_logprobs_size()) {
          const v1::TokenAlternatives& top = response.top_logprobs(i);
          for (int k = 0; k < top.token_ids_size() && k < top.logprobs_size(); ++k) {
            absl::StrAppendFormat(&alternatives, " %d:%.4f", top.token_ids(k), top.logprobs(k));
          }
          alternatives = absl::StrCat(" top", alternatives);
        }
        absl::FPrintF(stderr, "[token %d logprob %.4f%s]\n", response.token_ids(i),
                      i < response.logprobs_size() ? response.logprobs(i) : 0.0f, alternatives);
      }
    }
    if (!response.finish_reason().empty()) last = response;
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) return Fail(status);
  const v1::Usage& u = last.usage();
  absl::FPrintF(stderr,
                "\n[finish_reason=%s prompt_tokens=%d generated_tokens=%d chunk_size=%d "
                "degraded=%s preempted=%s kv_bytes=%d ttft_ms=%.1f total_ms=%.1f]\n",
                last.finish_reason(), u.prompt_tokens(), u.generated_tokens(), u.chunk_size(),
                u.degraded() ? "true" : "false", u.preempted() ? "true" : "false", u.kv_bytes(),
                first == absl::InfinitePast() ? 0.0 : absl::ToDoubleMilliseconds(first - start),
                absl::ToDoubleMilliseconds(absl::Now() - start));
  return EXIT_SUCCESS;
}

int Tokenize(v1::Generation::Stub& stub) {
  grpc::ClientContext context;
  SetDeadline(context);
  v1::TokenizeRequest request;
  request.set_text(absl::GetFlag(FLAGS_prompt));
  v1::TokenizeResponse response;
  grpc::Status status = stub.Tokenize(&context, request, &response);
  if (!status.ok()) return Fail(status);
  for (int i = 0; i < response.token_ids_size(); ++i) {
    absl::PrintF("%d\t%s\n", response.token_ids(i),
                 i < response.pieces_size() ? response.pieces(i) : "");
  }
  absl::FPrintF(stderr, "[%d tokens]\n", response.token_ids_size());
  return EXIT_SUCCESS;
}

int Info(v1::Generation::Stub& stub) {
  grpc::ClientContext context;
  SetDeadline(context);
  v1::ModelInfo info;
  grpc::Status status = stub.GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
  if (!status.ok()) return Fail(status);
  std::string text;
  google::protobuf::TextFormat::PrintToString(info, &text);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return EXIT_SUCCESS;
}

}  // namespace
}  // namespace catserve::cli

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(catserve::cli::kUsage);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    absl::FPrintF(stderr, "%s\n", catserve::cli::kUsage);
    return EXIT_FAILURE;
  }
  const std::string command = args[1];
  auto stub = catserve::v1::Generation::NewStub(
      grpc::CreateChannel(absl::GetFlag(FLAGS_addr), grpc::InsecureChannelCredentials()));
  if (command == "generate") return catserve::cli::Generate(*stub);
  if (command == "tokenize") return catserve::cli::Tokenize(*stub);
  if (command == "info") return catserve::cli::Info(*stub);
  absl::FPrintF(stderr, "unknown command '%s'\n%s\n", command, catserve::cli::kUsage);
  return EXIT_FAILURE;
}
