#include "scheduler/scheduler.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace catserve::scheduler {

struct Scheduler::Sequence {
  uint64_t id = 0;
  GenerationRequest request;
  std::shared_ptr<GenerationSink> sink;
  engine::SequenceState state;
  engine::Sampler sampler;
  absl::Time arrival;
  int worst_pages = 0;
  int generated = 0;

  Sequence(uint64_t id, GenerationRequest req, std::shared_ptr<GenerationSink> sink)
      : id(id), request(std::move(req)), sink(std::move(sink)), sampler(request.sampling) {
    state.chunk_size = request.chunk_size;
    state.tokens = request.prompt;
  }
  int prompt_tokens() const { return static_cast<int>(request.prompt.size()); }
  // Tokens known but not yet in the cache: the prompt's rest, or the last sampled token.
  int pending() const { return static_cast<int>(state.tokens.size()) - state.cached; }
};

struct Scheduler::Outbox {
  struct Event {
    std::shared_ptr<GenerationSink> sink;
    enum Kind { kAdmitted, kToken, kFinish } kind;
    GeneratedToken token;
    FinishInfo finish;
  };
  std::vector<Event> events;

  void Deliver() {
    for (Event& e : events) {
      switch (e.kind) {
        case Event::kAdmitted:
          e.sink->OnAdmitted();
          break;
        case Event::kToken:
          e.sink->OnToken(e.token);
          break;
        case Event::kFinish:
          e.sink->OnFinish(e.finish);
          break;
      }
    }
    events.clear();
  }
};

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(
    engine::Engine* engine, const SchedulerOptions& options,
    std::unique_ptr<AdmissionPolicy> policy, SchedulerObserver* observer) {
  if (options.max_queued < 1 || options.max_running < 1 || options.max_tokens_per_step < 1) {
    return absl::InvalidArgumentError(
        "max_queued, max_running and max_tokens_per_step must each be at least 1");
  }
  absl::StatusOr<engine::KvPool> pool =
      engine->CreateKvPool(options.kv_pool_pages, options.kv_page_entries);
  if (!pool.ok()) return pool.status();
  if (policy == nullptr) policy = MakeQueuePolicy();
  return std::unique_ptr<Scheduler>(
      new Scheduler(engine, *std::move(pool), options, std::move(policy), observer));
}

Scheduler::Scheduler(engine::Engine* engine, engine::KvPool pool, const SchedulerOptions& options,
                     std::unique_ptr<AdmissionPolicy> policy, SchedulerObserver* observer)
    : engine_(engine),
      options_(options),
      policy_(std::move(policy)),
      observer_(observer),
      pool_(std::move(pool)) {
  logits_.resize(static_cast<size_t>(options_.max_running) * engine_->config().vocab_size);
  deliver_thread_ = std::thread([this] { DeliverLoop(); });
  thread_ = std::thread([this] { Loop(); });
}

Scheduler::~Scheduler() { Shutdown(); }

int Scheduler::WorstCasePages(const GenerationRequest& r) const {
  // Every token but the last generated one enters the cache. The local region peaks at
  // min(l, 1 + n) entries somewhere along the way.
  const int n = static_cast<int>(r.prompt.size()) + r.max_new_tokens - 1;
  const int l = r.chunk_size;
  return pool_.PagesFor(1 + n / l) + pool_.PagesFor(std::min(l, 1 + n));
}

absl::Status Scheduler::Validate(const GenerationRequest& r) const {
  const engine::ModelConfig& c = engine_->config();
  if (r.prompt.empty()) {
    return absl::InvalidArgumentError("prompt is empty: send text or at least one token id");
  }
  for (int32_t t : r.prompt) {
    if (t < 0 || t >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt token id ", t, " is outside the vocabulary [0, ", c.vocab_size, ")"));
    }
  }
  for (int32_t t : r.stop_token_ids) {
    if (t < 0 || t >= c.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop token id ", t, " is outside the vocabulary [0, ", c.vocab_size, ")"));
    }
  }
  if (r.max_new_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens must be at least 1, got ", r.max_new_tokens));
  }
  if (!c.serves_chunk_size(r.chunk_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk size ", r.chunk_size,
                     " is not served; served chunk sizes: ", absl::StrJoin(c.chunk_sizes(), ", ")));
  }
  const int64_t total = static_cast<int64_t>(r.prompt.size()) + r.max_new_tokens;
  if (total > c.max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt (", r.prompt.size(), " tokens) plus max_tokens (", r.max_new_tokens,
                     ") is ", total, ", past the model's context of ", c.max_position_embeddings,
                     " tokens: shorten the prompt or lower max_tokens"));
  }
  if (absl::Status s = engine::ValidateSamplingParams(r.sampling); !s.ok()) return s;
  if (WorstCasePages(r) > pool_.total_pages()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "request needs up to ", WorstCasePages(r), " KV pages but the pool has only ",
        pool_.total_pages(), ": use a larger chunk size, fewer tokens, or a larger pool"));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Scheduler::Submit(GenerationRequest request,
                                           std::shared_ptr<GenerationSink> sink) {
  if (absl::Status s = Validate(request); !s.ok()) return s;
  if (!request.ignore_eos) request.stop_token_ids.push_back(engine_->config().eos_token_id);
  absl::MutexLock lock(&mu_);
  if (!fatal_.ok()) return fatal_;
  if (!accepting_ || stop_) {
    return absl::UnavailableError("server is draining and accepts no new requests");
  }
  if (static_cast<int>(waiting_.size()) >= options_.max_queued) {
    return absl::ResourceExhaustedError(
        absl::StrCat("queue is full (", options_.max_queued, " waiting requests): retry later"));
  }
  const uint64_t id = next_id_++;
  auto seq = std::make_unique<Sequence>(id, std::move(request), std::move(sink));
  seq->arrival = absl::Now();
  seq->worst_pages = WorstCasePages(seq->request);
  waiting_.push_back(std::move(seq));
  return id;
}

void Scheduler::Cancel(uint64_t id) {
  absl::MutexLock lock(&mu_);
  cancelled_.push_back(id);
}

void Scheduler::StopAccepting() {
  absl::MutexLock lock(&mu_);
  accepting_ = false;
}

bool Scheduler::Idle() const {
  absl::MutexLock lock(&mu_);
  return waiting_.empty() && running_.empty();
}

void Scheduler::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    stop_ = true;
    accepting_ = false;
  }
  if (thread_.joinable()) thread_.join();
  Outbox out;
  {
    absl::MutexLock lock(&mu_);
    while (!running_.empty()) Finish(*running_.front(), FinishReason::kCancelled, {}, out);
    while (!waiting_.empty()) Finish(*waiting_.front(), FinishReason::kCancelled, {}, out);
  }
  Post(std::move(out));
  {
    absl::MutexLock lock(&out_mu_);
    out_stop_ = true;  // the delivery thread drains what is queued, then ends
  }
  if (deliver_thread_.joinable()) deliver_thread_.join();
}

void Scheduler::Post(Outbox out) {
  if (out.events.empty()) return;
  absl::MutexLock lock(&out_mu_);
  out_queue_.push_back(std::make_unique<Outbox>(std::move(out)));
}

void Scheduler::DeliverLoop() {
  while (true) {
    std::unique_ptr<Outbox> next;
    {
      absl::MutexLock lock(&out_mu_);
      out_mu_.Await(absl::Condition(
          +[](Scheduler* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->out_mu_) {
            return s->out_stop_ || !s->out_queue_.empty();
          },
          this));
      if (out_queue_.empty()) return;  // stopping, and nothing left to hand out
      next = std::move(out_queue_.front());
      out_queue_.pop_front();
    }
    next->Deliver();
  }
}

SchedulerSnapshot Scheduler::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return SnapshotLocked();
}

SchedulerSnapshot Scheduler::SnapshotLocked() const {
  SchedulerSnapshot s;
  for (const auto& q : running_) ++s.running[q->request.chunk_size];
  for (const auto& q : waiting_) ++s.waiting[q->request.chunk_size];
  s.kv_pages_used = pages_used_;
  s.kv_pages_total = pool_.total_pages();
  s.kv_bytes_used = static_cast<size_t>(pages_used_) * pool_.geometry().page_bytes();
  s.kv_bytes_total = pool_.total_bytes();
  s.accepting = accepting_;
  return s;
}

void Scheduler::Finish(Sequence& seq, FinishReason reason, absl::Status error, Outbox& out) {
  FinishInfo info;
  info.reason = reason;
  info.error = std::move(error);
  info.prompt_tokens = seq.prompt_tokens();
  info.generated_tokens = seq.generated;
  info.chunk_size = seq.request.chunk_size;
  info.kv_bytes_at_end = (seq.state.pages.compressed.size() + seq.state.pages.local.size()) *
                         pool_.geometry().page_bytes();
  pool_.ReleaseAll(seq.state.pages);
  pages_used_ = pool_.used_pages();
  out.events.push_back({seq.sink, Outbox::Event::kFinish, {}, std::move(info)});
  for (auto* list : {&running_, &waiting_}) {
    auto it = std::find_if(list->begin(), list->end(),
                           [&](const std::unique_ptr<Sequence>& p) { return p.get() == &seq; });
    if (it != list->end()) {
      list->erase(it);
      return;
    }
  }
}

void Scheduler::Admit(Outbox& out) {
  // Pages the running sequences may still claim; admission keeps them available so a running
  // sequence never waits for memory.
  int promised = 0;
  for (const auto& q : running_) {
    promised += q->worst_pages -
                static_cast<int>(q->state.pages.compressed.size() + q->state.pages.local.size());
  }
  std::vector<WaitingRequest> view;
  while (!waiting_.empty() && static_cast<int>(running_.size()) < options_.max_running) {
    view.clear();
    for (const auto& q : waiting_) {
      view.push_back({q->id, q->request.priority, q->request.chunk_size, q->prompt_tokens(),
                      q->worst_pages, q->arrival});
    }
    const int pick = policy_->PickNext(view);
    if (pick < 0) break;
    Sequence& seq = *waiting_[pick];
    if (seq.worst_pages > pool_.free_pages() - promised) break;
    promised += seq.worst_pages;
    out.events.push_back({seq.sink, Outbox::Event::kAdmitted, {}, {}});
    running_.push_back(std::move(waiting_[pick]));
    waiting_.erase(waiting_.begin() + pick);
  }
}

void Scheduler::UpdateQueues(Outbox& out) {
  for (uint64_t id : cancelled_) {
    for (auto* list : {&running_, &waiting_}) {
      auto it = std::find_if(list->begin(), list->end(),
                             [&](const std::unique_ptr<Sequence>& p) { return p->id == id; });
      if (it != list->end()) {
        Finish(**it, FinishReason::kCancelled, {}, out);
        break;
      }
    }
  }
  cancelled_.clear();
  const absl::Time now = absl::Now();
  for (auto* list : {&running_, &waiting_}) {
    for (size_t i = 0; i < list->size();) {
      if ((*list)[i]->request.deadline <= now) {
        Finish(*(*list)[i], FinishReason::kDeadlineExceeded, {}, out);
      } else {
        ++i;
      }
    }
  }
  Admit(out);
}

bool Scheduler::RunStep(Outbox& out, StepReport& report, SchedulerSnapshot& after) {
  const absl::Time start = absl::Now();
  const int V = engine_->config().vocab_size;
  // Decoding sequences first (one token each keeps every stream's pace), then prompt pieces in
  // admission order within the remaining token budget.
  std::vector<engine::StepItem> items;
  std::vector<Sequence*> owners;
  int budget = options_.max_tokens_per_step;
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& q : running_) {
      const bool prefilling = q->state.cached < q->prompt_tokens();
      if (prefilling != (pass == 1) || budget == 0) continue;
      const int n = std::min(q->pending(), budget);
      budget -= n;
      const bool last_piece = q->state.cached + n == static_cast<int>(q->state.tokens.size());
      items.push_back({&q->state, n, last_piece});
      owners.push_back(q.get());
    }
  }
  if (items.empty()) return false;
  int tokens = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    Sequence& q = *owners[i];
    // Admission promised these pages, so reserving cannot fail.
    engine::ReservePages(pool_, q.state, q.state.cached + items[i].num_tokens);
    tokens += items[i].num_tokens;
  }
  engine::StepStats stats;
  const absl::Time engine_start = absl::Now();
  absl::Status status = engine_->Step(items, pool_, absl::MakeSpan(logits_), &stats);
  const absl::Duration engine_time = absl::Now() - engine_start;

  std::vector<std::pair<Sequence*, FinishReason>> finished;
  for (size_t i = 0; i < items.size(); ++i) {
    Sequence& q = *owners[i];
    engine::TrimPages(pool_, q.state);
    if (!status.ok() || !items[i].want_logits) continue;
    absl::Span<float> row(logits_.data() + i * V, V);
    GeneratedToken token;
    if (q.request.want_logprobs) {
      const float mx = *std::max_element(row.begin(), row.end());
      double sum = 0;
      for (float v : row) sum += std::exp(static_cast<double>(v - mx));
      const float lse = mx + static_cast<float>(std::log(sum));
      std::vector<float> raw(row.begin(), row.end());
      token.id = q.sampler.Sample(row, q.state.tokens);
      token.logprob = raw[token.id] - lse;
    } else {
      token.id = q.sampler.Sample(row, q.state.tokens);
    }
    q.state.tokens.push_back(token.id);
    ++q.generated;
    out.events.push_back({q.sink, Outbox::Event::kToken, token, {}});
    const auto& stops = q.request.stop_token_ids;
    if (std::find(stops.begin(), stops.end(), token.id) != stops.end()) {
      finished.push_back({&q, FinishReason::kStop});
    } else if (q.generated >= q.request.max_new_tokens) {
      finished.push_back({&q, FinishReason::kLength});
    }
  }
  report.engine_time = engine_time;
  report.batch_size = static_cast<int>(items.size());
  report.tokens = tokens;
  report.decoder_positions = stats.decoder_positions;
  if (status.ok()) {
    for (const engine::StepItem& it : items) {
      const int l = it.seq->chunk_size;
      const int completed = (it.seq->cached / l) - ((it.seq->cached - it.num_tokens) / l);
      if (completed > 0) report.compressed_chunks[l] += completed;
    }
  }
  {
    absl::MutexLock lock(&mu_);
    if (!status.ok()) {
      for (Sequence* q : owners) Finish(*q, FinishReason::kError, status, out);
      if (status.code() == absl::StatusCode::kInternal) FailEverything(status, out);
    }
    for (auto& [q, reason] : finished) Finish(*q, reason, {}, out);
    pages_used_ = pool_.used_pages();
    after = SnapshotLocked();
  }
  report.duration = absl::Now() - start;
  return true;
}

void Scheduler::FailEverything(const absl::Status& error, Outbox& out) {
  fatal_ = error;
  accepting_ = false;
  while (!running_.empty()) Finish(*running_.front(), FinishReason::kError, error, out);
  while (!waiting_.empty()) Finish(*waiting_.front(), FinishReason::kError, error, out);
}

absl::Status Scheduler::FatalError() const {
  absl::MutexLock lock(&mu_);
  return fatal_;
}

void Scheduler::Iterate() {
  const absl::Time start = absl::Now();
  Outbox out;
  {
    absl::MutexLock lock(&mu_);
    UpdateQueues(out);
    pages_used_ = pool_.used_pages();
  }
  StepReport report;
  SchedulerSnapshot after;
  const bool stepped = RunStep(out, report, after);
  Post(std::move(out));
  if (stepped && observer_ != nullptr) {
    report.iteration = absl::Now() - start;
    observer_->OnStep(report, after);
  }
}

void Scheduler::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](Scheduler* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
            return s->stop_ || !s->waiting_.empty() || !s->running_.empty() ||
                   !s->cancelled_.empty();
          },
          this));
      if (stop_) return;
    }
    Iterate();
  }
}

}  // namespace catserve::scheduler
