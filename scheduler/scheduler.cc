#include "scheduler/scheduler.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace catserve::scheduler {

struct Scheduler::Sequence {
  uint64_t id = 0;
  GenerationRequest request;
  std::shared_ptr<GenerationSink> sink;
  KvSequence kv;  // its tokens and KV pages, through kv_cache_
  absl::Time arrival;
  std::vector<int> allowed;  // chunk sizes it may run at, ascending from the asked one
  int final_tokens = 0;      // tokens its cache holds at most: all but the last generated one
  int generated = 0;
  bool admitted_once = false;
  bool degraded = false;
  bool preempted = false;
  int cached_prompt_tokens = 0;  // prompt tokens its first prefill took from the prefix cache

  Sequence(uint64_t id, GenerationRequest req, std::shared_ptr<GenerationSink> sink)
      : id(id),
        request(std::move(req)),
        sink(std::move(sink)),
        kv(request.prompt, request.chunk_size) {
    final_tokens = static_cast<int>(request.prompt.size()) + request.max_new_tokens - 1;
  }
  int prompt_tokens() const { return static_cast<int>(request.prompt.size()); }
  // Tokens known but not yet in the cache: the prompt's rest (or every token after a degrade or
  // preemption), or the last sampled token.
  int pending() const { return kv.pending(); }
  // Allowed chunk sizes from the one it runs at now.
  absl::Span<const int> allowed_now() const {
    auto it = std::find(allowed.begin(), allowed.end(), kv.chunk_size());
    return absl::MakeConstSpan(&*it, allowed.end() - it);
  }
};

struct Scheduler::Plan {
  std::vector<engine::StepItem> items;
  std::vector<Sequence*> owners;
  int tokens = 0;
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
  absl::StatusOr<KvCacheManager> kv = KvCacheManager::Create(
      *engine, options.kv_pool_pages, options.kv_page_entries, options.prefix_cache);
  if (!kv.ok()) return kv.status();
  if (policy == nullptr) policy = *MakeAdmissionPolicy("queue");
  return std::unique_ptr<Scheduler>(
      new Scheduler(engine, *std::move(kv), options, std::move(policy), observer));
}

Scheduler::Scheduler(engine::Engine* engine, KvCacheManager kv_cache,
                     const SchedulerOptions& options, std::unique_ptr<AdmissionPolicy> policy,
                     SchedulerObserver* observer)
    : engine_(engine),
      options_(options),
      policy_(std::move(policy)),
      observer_(observer),
      pool_pages_(kv_cache.total_pages()),
      page_entries_(kv_cache.pool().geometry().page_entries),
      kv_cache_(std::move(kv_cache)) {
  kv_ = kv_cache_.Snapshot();
  deliver_thread_ = std::thread([this] { DeliverLoop(); });
  thread_ = std::thread([this] { Loop(); });
}

Scheduler::~Scheduler() { Shutdown(); }

absl::Status Scheduler::Validate(const GenerationRequest& r) const {
  if (absl::Status s = ValidateRequest(engine_->config(), r); !s.ok()) return s;
  const int64_t total = static_cast<int64_t>(r.prompt.size()) + r.max_new_tokens;
  // At the asked size: a request must be servable without pressure ever switching it.
  const int peak = engine::PeakPages(static_cast<int>(total) - 1, r.chunk_size, page_entries_);
  if (peak > pool_pages_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("request needs up to ", peak, " KV pages but the pool has only ", pool_pages_,
                     ": use a larger chunk size, fewer tokens, or a larger pool"));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Scheduler::Submit(GenerationRequest request,
                                           std::shared_ptr<GenerationSink> sink) {
  if (absl::Status s = Validate(request); !s.ok()) return s;
  if (!request.ignore_eos) request.stop_token_ids.push_back(engine_->config().eos_token_id);
  const int coarsest =
      request.coarsest_chunk_size == 0 ? request.chunk_size : request.coarsest_chunk_size;
  absl::MutexLock lock(&mu_);
  if (!fatal_.ok()) return fatal_;
  if (!accepting_ || stop_) {
    return absl::UnavailableError("server is draining and accepts no new requests");
  }
  if (static_cast<int>(waiting_.size()) >= options_.max_queued) {
    return RetryLaterError(
        absl::StrCat("queue is full (", options_.max_queued, " waiting requests): retry later"));
  }
  const uint64_t id = next_id_++;
  auto seq = std::make_unique<Sequence>(id, std::move(request), std::move(sink));
  seq->arrival = absl::Now();
  for (int l : engine_->config().chunk_sizes()) {
    if (l >= seq->request.chunk_size && l <= coarsest) seq->allowed.push_back(l);
  }
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
  for (const auto& q : running_) ++s.running[q->kv.chunk_size()];
  for (const auto& q : waiting_) ++s.waiting[q->kv.chunk_size()];
  s.kv_pages_used = kv_.pages_used;
  s.kv_pages_total = kv_.pages_total;
  s.kv_pages_cached = kv_.pages_cached;
  s.kv_pages_free = kv_.pages_free;
  s.prefix_query_tokens = kv_.prefix_query_tokens;
  s.prefix_hit_tokens = kv_.prefix_hit_tokens;
  s.kv_bytes_used = kv_.bytes_used;
  s.kv_bytes_total = kv_.bytes_total;
  s.accepting = accepting_;
  return s;
}

void Scheduler::Finish(Sequence& seq, FinishReason reason, absl::Status error, Outbox& out) {
  FinishInfo info;
  info.reason = reason;
  info.error = std::move(error);
  info.prompt_tokens = seq.prompt_tokens();
  info.generated_tokens = seq.generated;
  info.chunk_size = seq.kv.chunk_size();
  info.degraded = seq.degraded;
  info.preempted = seq.preempted;
  info.cached_prompt_tokens = seq.cached_prompt_tokens;
  info.kv_bytes_at_end = kv_cache_.BytesOf(kv_cache_.HeldPages(seq.kv));
  kv_cache_.Unpromise(seq.id);
  kv_cache_.Release(seq.kv);
  kv_ = kv_cache_.Snapshot();
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

PressureView Scheduler::View(std::vector<WaitingRequest>& waiting,
                             std::vector<RunningSequence>& running) const {
  waiting.clear();
  running.clear();
  for (const auto& q : waiting_) {
    waiting.push_back({q->id, q->request.priority, q->arrival, q->kv.chunk_size(), q->allowed_now(),
                       q->pending(), q->final_tokens});
  }
  for (const auto& q : running_) {
    running.push_back({q->id, q->request.priority, q->arrival, q->kv.chunk_size(), q->allowed_now(),
                       q->kv.size(), q->final_tokens, kv_cache_.HeldPages(q->kv)});
  }
  return {waiting, running, &kv_cache_, static_cast<int>(running_.size()) >= options_.max_running};
}

bool Scheduler::Apply(const Decision& d, Outbox& out) {
  auto find = [&](std::vector<std::unique_ptr<Sequence>>& list) {
    return std::find_if(list.begin(), list.end(),
                        [&](const std::unique_ptr<Sequence>& p) { return p->id == d.id; });
  };
  auto allows = [](const Sequence& q, int l) {
    absl::Span<const int> a = q.allowed_now();
    return std::find(a.begin(), a.end(), l) != a.end();
  };
  switch (d.kind) {
    case Decision::Kind::kWait:
      return false;
    case Decision::Kind::kAdmit: {
      auto it = find(waiting_);
      if (it == waiting_.end() || static_cast<int>(running_.size()) >= options_.max_running ||
          !allows(**it, d.chunk_size)) {
        return false;
      }
      Sequence& q = **it;
      if (d.chunk_size != q.kv.chunk_size()) {
        pressure_.push_back(
            {PressureEvent::Kind::kDegrade, q.id, q.kv.chunk_size(), d.chunk_size, q.kv.size()});
        kv_cache_.Rechunk(q.kv, d.chunk_size);
        q.degraded = true;
      }
      if (policy_->promises_peak()) {
        kv_cache_.Promise(q.id, &q.kv, kv_cache_.PeakPages(q.final_tokens, d.chunk_size));
      }
      if (!q.admitted_once) out.events.push_back({q.sink, Outbox::Event::kAdmitted, {}, {}});
      q.admitted_once = true;
      running_.push_back(std::move(*it));
      waiting_.erase(it);
      return true;
    }
    case Decision::Kind::kDegrade: {
      auto it = find(running_);
      if (it == running_.end() || d.chunk_size <= (*it)->kv.chunk_size() ||
          !allows(**it, d.chunk_size)) {
        return false;
      }
      Sequence& q = **it;
      pressure_.push_back(
          {PressureEvent::Kind::kDegrade, q.id, q.kv.chunk_size(), d.chunk_size, q.kv.size()});
      kv_cache_.Rechunk(q.kv, d.chunk_size);  // its tokens are prefilled again at that size
      q.degraded = true;
      if (policy_->promises_peak()) {
        kv_cache_.Promise(q.id, &q.kv, kv_cache_.PeakPages(q.final_tokens, d.chunk_size));
      }
      return true;
    }
    case Decision::Kind::kPreempt: {
      auto it = find(running_);
      if (it == running_.end()) return false;
      Sequence& q = **it;
      pressure_.push_back(
          {PressureEvent::Kind::kPreempt, q.id, q.kv.chunk_size(), q.kv.chunk_size(), q.kv.size()});
      kv_cache_.Unpromise(q.id);
      kv_cache_.Release(q.kv);
      q.preempted = true;
      waiting_.insert(waiting_.begin(), std::move(*it));
      running_.erase(it);
      return true;
    }
  }
  return false;
}

void Scheduler::Admit(Outbox& out) {
  std::vector<WaitingRequest> waiting;
  std::vector<RunningSequence> running;
  // Each sequence is admitted at most once and switched to a coarser size at most once per size
  // served; the bound stops a policy that would cycle.
  const size_t bound =
      (waiting_.size() + running_.size()) * (1 + engine_->config().chunk_sizes().size()) + 1;
  for (size_t i = 0; i < bound && !waiting_.empty(); ++i) {
    if (!Apply(policy_->Admit(View(waiting, running)), out)) break;
  }
  kv_ = kv_cache_.Snapshot();
}

void Scheduler::DropFinished(Outbox& out) {
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
}

bool Scheduler::Schedule(Plan& plan, Outbox& out) {
  std::vector<WaitingRequest> waiting;
  std::vector<RunningSequence> running;
  while (true) {
    // A sequence about to be prefilled from nothing first takes what the prefix cache holds of
    // it.
    for (const auto& q : running_) {
      if (q->kv.cached() != 0) continue;
      const int attached = kv_cache_.AttachPrefix(q->kv);
      if (q->generated == 0) q->cached_prompt_tokens = attached;
    }
    // Decoding sequences first (one token each keeps every stream's pace), then prefill pieces in
    // admission order within the remaining token budget.
    plan.items.clear();
    plan.owners.clear();
    plan.tokens = 0;
    int budget = options_.max_tokens_per_step;
    int pages = 0;
    for (int pass = 0; pass < 2; ++pass) {
      for (const auto& q : running_) {
        const bool prefilling = q->pending() > 1;
        if (prefilling != (pass == 1) || budget == 0) continue;
        const int n = std::min(q->pending(), budget);
        budget -= n;
        plan.tokens += n;
        const bool last_piece = q->kv.cached() + n == q->kv.size();
        // A degraded or preempted sequence goes on with draw number `generated` of its stream.
        const GenerationRequest& r = q->request;
        plan.items.push_back(
            {.seq = kv_cache_.StepState(q->kv),
             .num_tokens = n,
             .want_logits = last_piece,
             .sampling = &r.sampling,
             .draw = static_cast<uint64_t>(q->generated),
             .logprobs = r.top_logprobs > 0 ? r.top_logprobs : (r.want_logprobs ? 0 : -1)});
        plan.owners.push_back(q.get());
        pages += kv_cache_.PagesToGrow(q->kv, q->kv.cached() + n);
      }
    }
    if (plan.items.empty()) return false;
    if (pages <= kv_cache_.free_pages()) break;
    // Only a policy that does not promise peak pages gets here.
    if (!Apply(policy_->Relieve(View(waiting, running), pages - kv_cache_.free_pages()), out) &&
        !Apply(Decision::Preempt(running_.back()->id), out)) {
      return false;
    }
  }
  for (size_t i = 0; i < plan.items.size(); ++i) {
    KvSequence& kv = plan.owners[i]->kv;
    kv_cache_.Reserve(kv, kv.cached() + plan.items[i].num_tokens);  // fits: counted above
  }
  kv_ = kv_cache_.Snapshot();
  return true;
}

void Scheduler::Postprocess(Plan& plan, const absl::Status& status, Outbox& out, StepReport& report,
                            SchedulerSnapshot& after) {
  std::vector<std::pair<Sequence*, FinishReason>> finished;
  for (size_t i = 0; i < plan.items.size(); ++i) {
    Sequence& q = *plan.owners[i];
    kv_cache_.Trim(q.kv);
    if (status.ok()) kv_cache_.Publish(q.kv);
    if (!status.ok() || !plan.items[i].want_logits) continue;
    engine::SampledToken& sampled = tokens_[i];
    const GeneratedToken token{sampled.token, sampled.logprob, std::move(sampled.top)};
    q.kv.Append(token.id);
    ++q.generated;
    out.events.push_back({q.sink, Outbox::Event::kToken, token, {}});
    const auto& stops = q.request.stop_token_ids;
    if (std::find(stops.begin(), stops.end(), token.id) != stops.end()) {
      finished.push_back({&q, FinishReason::kStop});
    } else if (q.generated >= q.request.max_new_tokens) {
      finished.push_back({&q, FinishReason::kLength});
    }
  }
  report.batch_size = static_cast<int>(plan.items.size());
  report.tokens = plan.tokens;
  if (status.ok()) {
    for (const engine::StepItem& it : plan.items) {
      const int l = it.seq->chunk_size;
      const int completed = (it.seq->cached / l) - ((it.seq->cached - it.num_tokens) / l);
      if (completed > 0) report.compressed_chunks[l] += completed;
    }
  }
  absl::MutexLock lock(&mu_);
  if (!status.ok()) {
    for (Sequence* q : plan.owners) Finish(*q, FinishReason::kError, status, out);
    if (status.code() == absl::StatusCode::kInternal) FailEverything(status, out);
  }
  for (auto& [q, reason] : finished) Finish(*q, reason, {}, out);
  kv_ = kv_cache_.Snapshot();
  for (const auto& q : running_) {
    report.sequences.push_back(
        {q->id, q->kv.chunk_size(), q->kv.cached(), kv_cache_.HeldPages(q->kv)});
  }
  after = SnapshotLocked();
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
  Plan plan;
  bool scheduled;
  {
    absl::MutexLock lock(&mu_);
    DropFinished(out);
    Admit(out);
    scheduled = Schedule(plan, out);
  }
  StepReport report;
  SchedulerSnapshot after;
  if (scheduled) {
    engine::StepStats stats;
    const absl::Time engine_start = absl::Now();
    tokens_.resize(plan.items.size());
    const absl::Status status =
        engine_->Step(plan.items, kv_cache_.pool(), absl::MakeSpan(tokens_), &stats);
    report.engine_time = absl::Now() - engine_start;
    report.decoder_positions = stats.decoder_positions;
    Postprocess(plan, status, out, report, after);
    report.duration = absl::Now() - start;
  }
  Post(std::move(out));
  if (scheduled && observer_ != nullptr) {
    report.pressure = std::move(pressure_);
    pressure_.clear();
    report.iteration = absl::Now() - start;
    observer_->OnStep(report, after);
  } else if (scheduled) {
    pressure_.clear();
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
