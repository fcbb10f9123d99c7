#include "server/openai/openai_error.h"

#include <cctype>
#include <nlohmann/json.hpp>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "scheduler/request.h"

namespace catserve::server::openai {
namespace {

constexpr char kParamPayload[] = "type.catserve.dev/openai-param";
constexpr char kJson[] = "application/json";

const char* TypeOf(int status) {
  switch (status) {
    case 400:
    case 404:
    case 405:
      return "invalid_request_error";
    case 408:
      return "timeout_error";
    case 413:
      return "request_too_large";
    case 401:
      return "authentication_error";
    case 429:
      return "rate_limit_error";
    case 503:
      return "service_unavailable";
    default:
      return "server_error";
  }
}

std::string Body(int status, absl::string_view message, const std::string& param,
                 const char* code) {
  nlohmann::json error = {
      {"message", std::string(message)},
      {"type", TypeOf(status)},
      {"param", param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param)},
      {"code", code == nullptr ? nlohmann::json(nullptr) : code}};
  return nlohmann::json{{"error", std::move(error)}}.dump(-1, ' ', false,
                                                          nlohmann::json::error_handler_t::replace);
}

}  // namespace

absl::Status InvalidParam(absl::string_view param, absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kParamPayload, absl::Cord(param));
  return status;
}

absl::Status InOpenAiTerms(const absl::Status& status) {
  const std::string field = scheduler::FieldOf(status);
  if (field.empty()) return status;
  // catserve.v1's names for the fields this API names otherwise: the prompt's two forms, and
  // the sampling settings, which this API has at the top level (the message drops the prefix).
  std::string message(status.message());
  if (field == "text" || field == "token_ids") return InvalidParam("prompt", message);
  const std::string kSampling = "sampling.";
  if (!absl::StartsWith(field, kSampling)) return InvalidParam(field, message);
  for (size_t at; (at = message.find(kSampling)) != std::string::npos;) {
    message.erase(at, kSampling.size());
  }
  return InvalidParam(field.substr(kSampling.size()), message);
}

std::string ParamOf(const absl::Status& status) {
  absl::optional<absl::Cord> param = status.GetPayload(kParamPayload);
  return param.has_value() ? std::string(*param) : std::string();
}

HttpError ToHttpError(const absl::Status& status) {
  HttpError error;
  const char* code = nullptr;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      error.status = 400;
      break;
    case absl::StatusCode::kUnauthenticated:
      error.status = 401;
      code = "invalid_api_key";
      break;
    case absl::StatusCode::kNotFound:
      error.status = 404;
      code = "model_not_found";
      break;
    case absl::StatusCode::kResourceExhausted:
      if (scheduler::IsRetryLater(status)) {
        error.status = 429;
        error.headers.emplace_back("Retry-After", "1");
      } else {
        error.status = 413;
      }
      break;
    case absl::StatusCode::kUnavailable:
      error.status = 503;
      error.headers.emplace_back("Retry-After", "1");
      break;
    case absl::StatusCode::kDeadlineExceeded:
      error.status = 408;
      break;
    default:
      error.status = 500;
      break;
  }
  error.body = Body(error.status, status.message(), ParamOf(status), code);
  return error;
}

std::string ErrorBody(int status, absl::string_view message) {
  return Body(status, message, "", nullptr);
}

void ReplyError(http::Call& call, const absl::Status& status) {
  HttpError error = ToHttpError(status);
  call.Reply(error.status, kJson, std::move(error.body), std::move(error.headers));
}

}  // namespace catserve::server::openai
