#include "server/serving_daemon.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "engine/load_engine.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/impl/server_builder_plugin.h"
#include "server/kv_pool_sizing.h"
#include "server/log.h"
#include "server/server_credentials.h"
#include "server/unhandled_call_interceptor.h"

#ifndef CATSERVE_VERSION
#define CATSERVE_VERSION "0.0.0"
#endif

namespace catserve::server {
namespace {

constexpr char kServiceName[] = "catserve.v1.Generation";

// "cat-small-en" for "models/cat-small-en/".
std::string ModelName(const std::filesystem::path& dir) {
  std::filesystem::path p = std::filesystem::absolute(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

// Removes gRPC's reflection plugin from a ServerBuilder. Linking grpc++_reflection registers the
// plugin for every builder in a static initializer, so leaving it out takes this.
class WithoutReflection : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments* args) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    std::erase_if(*plugins, [](const std::unique_ptr<grpc::ServerBuilderPlugin>& plugin) {
      return plugin->name() == "proto_server_reflection";
    });
  }
};

// A flag's limit when set (> 0) and tighter than the model's, else the model's.
int Limit(int flag, int model) { return flag > 0 ? std::min(flag, model) : model; }

}  // namespace

absl::StatusOr<std::unique_ptr<ServingDaemon>> ServingDaemon::Start(const ServerOptions& options) {
  if (absl::Status s = ValidateServerOptions(options); !s.ok()) return s;
  std::unique_ptr<ServingDaemon> daemon(new ServingDaemon(options));
  if (absl::Status s = daemon->Init(); !s.ok()) return s;
  return daemon;
}

absl::Status ServingDaemon::Init() {
  if (absl::Status s = LoadModel(); !s.ok()) return s;
  if (absl::Status s = SizeKvPool(); !s.ok()) return s;
  StartMetrics();
  if (absl::Status s = StartScheduler(); !s.ok()) return s;
  BuildParser();
  if (absl::Status s = LoadSecurity(); !s.ok()) return s;
  if (absl::Status s = StartHttp(); !s.ok()) return s;
  if (absl::Status s = StartOpenAi(); !s.ok()) return s;
  if (absl::Status s = StartGrpc(); !s.ok()) return s;
  ready_ = true;
  LogStartup();
  return absl::OkStatus();
}

absl::Status ServingDaemon::LoadModel() {
  namespace fs = std::filesystem;
  const fs::path model_dir(options_.model_dir);
  std::error_code error;
  if (fs::exists(model_dir, error) && !fs::is_directory(model_dir, error)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--model_dir=", options_.model_dir,
                     " is not a directory; pass a directory with config.json, model.safetensors "
                     "and tokenizer.model"));
  }
  if (!fs::is_directory(model_dir, error)) {
    return absl::NotFoundError(
        absl::StrCat("model directory '", options_.model_dir,
                     "' does not exist (relative paths start at ", fs::current_path(error).string(),
                     "); pass --model_dir=DIR, a directory with config.json, model.safetensors and "
                     "tokenizer.model (tests/fixtures/tiny is a small test model)"));
  }
  model_name_ = ModelName(model_dir);

  sampling_threads_ = options_.sampling_threads > 0
                          ? options_.sampling_threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  absl::StatusOr<std::unique_ptr<engine::Engine>> engine = engine::LoadEngine(
      model_dir, engine::EngineOptions{.threads = options_.threads,
                                       .sampling_threads = sampling_threads_,
                                       .device = options_.device == "cuda" ? engine::Device::kCuda
                                                                           : engine::Device::kCpu,
                                       .cuda_attention = options_.cuda_attention,
                                       .cuda_graphs = options_.cuda_graphs,
                                       .check_weights = options_.check_weights,
                                       .kv_dtype = options_.kv_dtype});
  if (!engine.ok()) {
    return absl::Status(engine.status().code(),
                        absl::StrCat("loading the model from '", options_.model_dir,
                                     "': ", engine.status().message()));
  }
  engine_ = *std::move(engine);
  const engine::ModelConfig& config = engine_->config();
  absl::StatusOr<std::unique_ptr<engine::Tokenizer>> tokenizer =
      engine::Tokenizer::Load(model_dir / "tokenizer.model");
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        absl::StrCat("loading the tokenizer: ", tokenizer.status().message()));
  }
  tokenizer_ = *std::move(tokenizer);
  if (tokenizer_->vocab_size() > config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "loading the tokenizer: ", (model_dir / "tokenizer.model").string(), " has ",
        tokenizer_->vocab_size(), " pieces but config.json's vocab_size is ", config.vocab_size,
        "; text would encode to ids the model has no embedding for"));
  }
  if (absl::Status s = ValidateChunkSizes(options_, config); !s.ok()) return s;
  return ValidateModelLimits(options_, config);
}

absl::Status ServingDaemon::SizeKvPool() {
  // As many whole pages as --kv_pool_mb (or --gpu_memory_fraction of the free device memory)
  // holds.
  absl::StatusOr<engine::DeviceInfo> device = engine_->device_info();
  if (!device.ok()) return device.status();
  device_ = *std::move(device);
  geometry_ = engine_->kv_geometry(options_.kv_page_entries);
  absl::StatusOr<int> pool_pages = KvPoolPages({.kv_pool_mb = options_.kv_pool_mb,
                                                .gpu_memory_fraction = options_.gpu_memory_fraction,
                                                .free_bytes = device_.free_bytes,
                                                .page_bytes = geometry_.page_bytes()});
  if (!pool_pages.ok()) return pool_pages.status();
  pool_pages_ = *pool_pages;
  return absl::OkStatus();
}

void ServingDaemon::StartMetrics() {
  serving_metrics_ = std::make_unique<metrics::ServingMetrics>(
      metrics::BuildInfo{CATSERVE_VERSION, model_name_, options_.device});
  serving_metrics_->SetDevice(options_.device, options_.device == "cuda" ? device_.name : "",
                              static_cast<double>(device_.weights_bytes));
  scheduler_metrics_ =
      std::make_unique<SchedulerMetrics>(serving_metrics_.get(), engine_->config().chunk_sizes());
}

absl::Status ServingDaemon::StartScheduler() {
  scheduler::SchedulerOptions scheduler_options;
  scheduler_options.max_queued = options_.max_queued;
  scheduler_options.max_running = options_.max_running;
  scheduler_options.max_tokens_per_step = options_.max_tokens_per_step;
  scheduler_options.kv_pool_pages = pool_pages_;
  scheduler_options.kv_page_entries = options_.kv_page_entries;
  scheduler_options.prefix_cache = options_.prefix_cache;
  absl::StatusOr<std::unique_ptr<scheduler::AdmissionPolicy>> policy =
      scheduler::MakeAdmissionPolicy(options_.pressure_policy);
  if (!policy.ok()) return policy.status();
  absl::StatusOr<std::unique_ptr<scheduler::Scheduler>> scheduler = scheduler::Scheduler::Create(
      engine_.get(), scheduler_options, *std::move(policy), scheduler_metrics_.get());
  if (!scheduler.ok()) return scheduler.status();
  scheduler_ = *std::move(scheduler);
  RefreshMetrics();
  return absl::OkStatus();
}

void ServingDaemon::BuildParser() {
  const engine::ModelConfig& config = engine_->config();
  const int context = config.max_position_embeddings;
  const int max_prompt_tokens = Limit(options_.max_prompt_tokens, context - 1);
  const ServingLimits limits{
      .max_prompt_tokens = max_prompt_tokens,
      .max_prompt_bytes = options_.max_prompt_bytes > 0
                              ? options_.max_prompt_bytes
                              : static_cast<int64_t>(max_prompt_tokens) * kPromptBytesPerToken,
      .max_new_tokens = Limit(options_.max_new_tokens, context - 1),
      .max_context = context};
  parser_ = std::make_unique<RequestParser>(tokenizer_.get(), config, limits,
                                            options_.default_chunk_size, options_.tiers);
}

absl::Status ServingDaemon::LoadSecurity() {
  if (!options_.auth_tokens_file.empty()) {
    absl::StatusOr<std::unique_ptr<TokenAuthenticator>> auth =
        TokenAuthenticator::Load(options_.auth_tokens_file);
    if (!auth.ok()) return auth.status();
    authenticator_ = *std::move(auth);
  }
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials(options_.tls);
  if (!credentials.ok()) return credentials.status();
  credentials_ = *std::move(credentials);
  return absl::OkStatus();
}

absl::Status ServingDaemon::StartHttp() {
  absl::StatusOr<std::unique_ptr<metrics::MetricsHttpServer>> http =
      metrics::MetricsHttpServer::Start(options_.http_listen, serving_metrics_.get(),
                                        [this] { return ready_.load(); });
  if (!http.ok()) {
    return absl::Status(http.status().code(), absl::StrCat("--http_listen=", options_.http_listen,
                                                           ": ", http.status().message()));
  }
  http_server_ = *std::move(http);
  return absl::OkStatus();
}

absl::Status ServingDaemon::StartOpenAi() {
  if (options_.openai_listen.empty()) return absl::OkStatus();
  openai::OpenAiApi::Config config{
      .shared = {scheduler_.get(), tokenizer_.get(), serving_metrics_.get(), model_name_},
      .parser = parser_.get(),
      .authenticator = authenticator_.get(),
      .model_info = BuildModelInfo(),
      .request_timeout = options_.openai_request_timeout_seconds > 0
                             ? absl::Seconds(options_.openai_request_timeout_seconds)
                             : absl::InfiniteDuration(),
      .chat_template = std::nullopt,
      .jinja_chat_template = openai::HasJinjaChatTemplate(options_.model_dir)};
  absl::StatusOr<std::optional<openai::ChatTemplate>> chat_template =
      openai::ChatTemplate::Load(options_.model_dir);
  if (!chat_template.ok()) {
    return absl::Status(chat_template.status().code(),
                        absl::StrCat("loading the model from '", options_.model_dir,
                                     "': ", chat_template.status().message()));
  }
  config.chat_template = *std::move(chat_template);
  openai_api_ = std::make_unique<openai::OpenAiApi>(std::move(config));
  http::Routes routes;
  openai_api_->AddRoutes(routes);
  metrics::MetricsHttpServer::AddProbeRoutes(routes, serving_metrics_.get(),
                                             [this] { return ready_.load(); });
  http::Options http_options;
  http_options.name = "the OpenAI API";
  http_options.max_body_bytes = openai_api_->max_body_bytes();
  // Every request the scheduler may hold (running and queued) plus room for idle keep-alive
  // connections, from one address alike: behind a gateway every client has the gateway's.
  http_options.max_connections = options_.max_running + options_.max_queued + 1024;
  http_options.max_connections_per_address = http_options.max_connections;
  http_options.error_answer = &openai::OpenAiApi::AnswerError;
  absl::StatusOr<http::TlsPem> tls = ReadTlsPem(options_.tls);
  if (!tls.ok()) return tls.status();
  http_options.tls = *std::move(tls);
  absl::StatusOr<std::unique_ptr<http::HttpServer>> server =
      http::HttpServer::Start(options_.openai_listen, std::move(routes), std::move(http_options));
  if (!server.ok()) {
    return absl::Status(
        server.status().code(),
        absl::StrCat("--openai_listen=", options_.openai_listen, ": ", server.status().message()));
  }
  openai_server_ = *std::move(server);
  return absl::OkStatus();
}

absl::Status ServingDaemon::StartGrpc() {
  service_ = std::make_unique<GenerationService>(
      GenerateStream::Shared{scheduler_.get(), tokenizer_.get(), serving_metrics_.get()},
      parser_.get(), authenticator_.get(), BuildModelInfo());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  if (!options_.reflection) builder.SetOption(std::make_unique<WithoutReflection>());
  // gRPC sets SO_REUSEPORT by default, which lets a second daemon share the port and take half
  // its calls; a port in use must be an error at start instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  if (options_.grpc_max_connection_age_seconds > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               options_.grpc_max_connection_age_seconds * 1000);
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               options_.grpc_max_connection_age_grace_seconds * 1000);
  }
  builder.AddListeningPort(options_.listen, credentials_, &grpc_port_);
  builder.RegisterService(service_.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<UnhandledCallInterceptorFactory>(
      serving_metrics_.get(), options_.default_chunk_size));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  grpc_server_ = builder.BuildAndStart();
  if (grpc_server_ == nullptr || grpc_port_ == 0) {
    return absl::UnavailableError(absl::StrCat("--listen=", options_.listen,
                                               ": cannot listen there: the address is in use "
                                               "(another catserve?) or not a local address"));
  }
  grpc::HealthCheckServiceInterface* health = grpc_server_->GetHealthCheckService();
  health->SetServingStatus("", true);
  health->SetServingStatus(kServiceName, true);
  return absl::OkStatus();
}

void ServingDaemon::LogStartup() const {
  const engine::ModelConfig& config = engine_->config();
  const ServingLimits& limits = parser_->limits();
  const size_t pages = pool_pages_;
  const HostPort grpc_address = *ParseHostPort(options_.listen, "listen");
  const HostPort http_address = *ParseHostPort(options_.http_listen, "http_listen");
  Log("model %s (%s): vocab %d, %d layers, context %d; chunk sizes %s, default %d, tiers %s, "
      "pressure policy %s",
      model_name_, options_.model_dir, config.vocab_size, config.num_hidden_layers,
      config.max_position_embeddings, absl::StrJoin(config.chunk_sizes(), ","),
      options_.default_chunk_size, FormatTiers(options_.tiers), options_.pressure_policy);
  Log("kv pool: %d pages x %d entries x %d bytes = %.1f MiB (%d bytes per entry); backend %s, "
      "%d compute threads, %d sampling threads",
      pages, options_.kv_page_entries, geometry_.page_bytes() / options_.kv_page_entries,
      static_cast<double>(pages * geometry_.page_bytes()) / (1 << 20), geometry_.entry_bytes(),
      options_.device, engine_->threads(), sampling_threads_);
  if (options_.device == "cuda") {
    Log("device cuda: %s; weights %.1f MiB; kv pool %.1f MiB; %.1f of %.1f MiB were free before "
        "the pool",
        device_.name, static_cast<double>(device_.weights_bytes) / (1 << 20),
        static_cast<double>(pages * geometry_.page_bytes()) / (1 << 20),
        static_cast<double>(device_.free_bytes) / (1 << 20),
        static_cast<double>(device_.total_bytes) / (1 << 20));
  }
  Log("prefix cache: %s",
      options_.prefix_cache ? "on (whole compressed pages, LRU-evicted)" : "off");
  Log("limits: prompt %d tokens / %d bytes, new tokens %d, queued %d, running %d, tokens per "
      "step %d",
      limits.max_prompt_tokens, limits.max_prompt_bytes, limits.max_new_tokens, options_.max_queued,
      options_.max_running, options_.max_tokens_per_step);
  Log("security: %s, %s, reflection %s",
      options_.tls.cert.empty()        ? "plaintext gRPC"
      : options_.tls.client_ca.empty() ? "TLS"
                                       : "mTLS (client certificates required)",
      authenticator_ != nullptr ? "bearer tokens required" : "no token required",
      options_.reflection ? "on" : "off");
  Log("listening on %s:%d", grpc_address.host, grpc_port_);
  Log("metrics on http://%s:%d/metrics", http_address.host, http_server_->port());
  if (openai_server_ != nullptr) {
    const HostPort openai_address = *ParseHostPort(options_.openai_listen, "openai_listen");
    Log("openai api on %s://%s:%d/v1", options_.tls.cert.empty() ? "http" : "https",
        openai_address.host, openai_server_->port());
  }
  Log("ready");
}

v1::ModelInfo ServingDaemon::BuildModelInfo() const {
  const engine::ModelConfig& config = engine_->config();
  const std::string& model_name = model_name_;
  const int pool_pages = pool_pages_;
  const engine::KvGeometry& geometry = geometry_;
  v1::ModelInfo info;
  info.set_model(model_name);
  for (int l : config.chunk_sizes()) info.add_chunk_sizes(l);
  info.set_default_chunk_size(options_.default_chunk_size);
  for (const auto& [name, tier] : options_.tiers) {
    (*info.mutable_tiers())[name] = tier.chunk_size;
    (*info.mutable_tier_coarsest_chunk_sizes())[name] = tier.coarsest_chunk_size;
  }
  info.set_pressure_policy(options_.pressure_policy);
  v1::Limits* limits = info.mutable_limits();
  const ServingLimits& serving = parser_->limits();
  limits->set_max_prompt_tokens(serving.max_prompt_tokens);
  limits->set_max_new_tokens(serving.max_new_tokens);
  limits->set_max_context(serving.max_context);
  limits->set_max_queued(options_.max_queued);
  limits->set_max_running(options_.max_running);
  limits->set_max_tokens_per_step(options_.max_tokens_per_step);
  info.set_vocab_size(config.vocab_size);
  info.set_eos_token_id(config.eos_token_id);
  info.set_bos_token_id(config.bos_token_id);
  info.set_kv_bytes_per_entry(static_cast<int64_t>(geometry.entry_bytes()));
  v1::KvPoolInfo* pool = info.mutable_kv_pool();
  pool->set_total_pages(pool_pages);
  pool->set_page_entries(options_.kv_page_entries);
  pool->set_page_bytes(static_cast<int64_t>(geometry.page_bytes()));
  pool->set_total_bytes(static_cast<int64_t>(geometry.page_bytes()) * pool_pages);
  info.set_backend(options_.device);
  info.set_version(CATSERVE_VERSION);
  return info;
}

ServingDaemon::~ServingDaemon() { Shutdown(); }

void ServingDaemon::RefreshMetrics() {
  if (scheduler_ != nullptr) scheduler_metrics_->Update(scheduler_->Snapshot());
}

void ServingDaemon::BeginDrain() {
  ready_ = false;
  if (grpc_server_ != nullptr) {
    grpc_server_->GetHealthCheckService()->SetServingStatus(kServiceName, false);
  }
  if (scheduler_ != nullptr) scheduler_->StopAccepting();
}

absl::Status ServingDaemon::CheckEngine() {
  if (scheduler_ == nullptr) return absl::OkStatus();
  absl::Status fatal = scheduler_->FatalError();
  if (!fatal.ok()) {
    BeginDrain();
    if (grpc_server_ != nullptr) grpc_server_->GetHealthCheckService()->SetServingStatus("", false);
  }
  return fatal;
}

bool ServingDaemon::Idle() const { return scheduler_ == nullptr || scheduler_->Idle(); }

void ServingDaemon::Shutdown() {
  if (shut_down_.exchange(true)) return;
  BeginDrain();
  // The scheduler first: it finishes every remaining stream, so the gRPC server has nothing
  // left to wait for.
  if (scheduler_ != nullptr) scheduler_->Shutdown();
  if (grpc_server_ != nullptr) {
    // Calls left are at most writing their last message; the deadline mostly bounds how long
    // idle client connections get to answer the GOAWAY before they are closed.
    grpc_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    grpc_server_->Wait();
  }
  RefreshMetrics();
  openai_server_.reset();
  http_server_.reset();
}

}  // namespace catserve::server
