#include "scheduler/admission_policy.h"

#include <algorithm>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace catserve::scheduler {
namespace {

// The head of the line: highest priority, then earliest arrival, then lowest id.
const WaitingRequest* Head(absl::Span<const WaitingRequest> waiting) {
  const WaitingRequest* best = nullptr;
  for (const WaitingRequest& w : waiting) {
    if (best == nullptr || w.priority > best->priority ||
        (w.priority == best->priority &&
         (w.arrival < best->arrival || (w.arrival == best->arrival && w.id < best->id)))) {
      best = &w;
    }
  }
  return best;
}

// The running sequence to give up first: lowest priority, then latest arrival, then highest id.
const RunningSequence* LastInLine(absl::Span<const RunningSequence> running) {
  const RunningSequence* worst = nullptr;
  for (const RunningSequence& r : running) {
    if (worst == nullptr || r.priority < worst->priority ||
        (r.priority == worst->priority &&
         (r.arrival > worst->arrival || (r.arrival == worst->arrival && r.id > worst->id)))) {
      worst = &r;
    }
  }
  return worst;
}

// `queue` and `coarser`: the head of the line at the first allowed size that fits, or wait.
class QueuePolicy : public AdmissionPolicy {
 public:
  QueuePolicy(std::string_view name, bool coarser) : name_(name), coarser_(coarser) {}
  std::string_view name() const override { return name_; }

  Decision Admit(const PressureView& view) const override {
    const WaitingRequest* head = Head(view.waiting);
    if (head == nullptr || view.batch_full) return Decision::Wait();
    const size_t sizes = coarser_ ? head->allowed.size() : 1;
    for (size_t i = 0; i < sizes; ++i) {
      if (Fits(view, *head, head->allowed[i])) return Decision::Admit(head->id, head->allowed[i]);
    }
    return Decision::Wait();
  }

 protected:
  // Whether `w` may be admitted at chunk size `l` now.
  virtual bool Fits(const PressureView& view, const WaitingRequest& w, int l) const {
    return view.kv->PeakPages(w.final_tokens, l) <= view.kv->Headroom();
  }

 private:
  const std::string_view name_;
  const bool coarser_;
};

// `degrade`: `coarser`, then degrading running sequences to make room for the head.
class DegradePolicy : public QueuePolicy {
 public:
  DegradePolicy() : QueuePolicy("degrade", /*coarser=*/true) {}

  Decision Admit(const PressureView& view) const override {
    Decision d = QueuePolicy::Admit(view);
    const WaitingRequest* head = Head(view.waiting);
    if (d.kind != Decision::Kind::kWait || head == nullptr || view.batch_full) return d;
    // Room the head needs at the coarsest size it allows.
    const int need =
        view.kv->PeakPages(head->final_tokens, head->allowed.back()) - view.kv->Headroom();
    // Degrading s to the coarsest size it allows returns the difference of its two peaks.
    auto gain = [&](const RunningSequence& r) {
      return view.kv->PeakPages(r.final_tokens, r.chunk_size) -
             view.kv->PeakPages(r.final_tokens, r.allowed.back());
    };
    int total_gain = 0;
    const RunningSequence* victim = nullptr;
    for (const RunningSequence& r : view.running) {
      if (r.priority > head->priority || r.allowed.back() == r.chunk_size || gain(r) <= 0) {
        continue;
      }
      total_gain += gain(r);
      if (victim == nullptr || r.priority < victim->priority ||
          (r.priority == victim->priority && gain(r) > gain(*victim))) {
        victim = &r;
      }
    }
    if (victim == nullptr || total_gain < need) return Decision::Wait();
    return Decision::Degrade(victim->id, victim->allowed.back());
  }
};

// `preempt`: admission on the prompt's pages; Relieve degrades, else preempts.
class PreemptPolicy : public QueuePolicy {
 public:
  PreemptPolicy() : QueuePolicy("preempt", /*coarser=*/true) {}
  bool promises_peak() const override { return false; }

  Decision Relieve(const PressureView& view, int pages_short) const override {
    // Degrading s frees what it holds and re-prefills its tokens at the coarser size.
    auto gain = [&](const RunningSequence& r) {
      return r.held_pages - view.kv->PeakPages(r.tokens, r.allowed.back());
    };
    const RunningSequence* victim = nullptr;
    for (const RunningSequence& r : view.running) {
      if (r.allowed.back() == r.chunk_size || gain(r) <= 0) continue;
      if (victim == nullptr || r.priority < victim->priority ||
          (r.priority == victim->priority && gain(r) > gain(*victim))) {
        victim = &r;
      }
    }
    if (victim != nullptr) return Decision::Degrade(victim->id, victim->allowed.back());
    return AdmissionPolicy::Relieve(view, pages_short);
  }

 protected:
  // The prompt's pages fit what the running sequences leave free in their next step: at least
  // one page each, and what a sequence admitted but not yet prefilled still needs for its tokens.
  bool Fits(const PressureView& view, const WaitingRequest& w, int l) const override {
    int claimed = 0;
    for (const RunningSequence& r : view.running) {
      claimed += std::max(1, view.kv->PeakPages(r.tokens, r.chunk_size) - r.held_pages);
    }
    return view.kv->PeakPages(w.pending_tokens, l) + claimed <= view.kv->free_pages();
  }
};

}  // namespace

Decision AdmissionPolicy::Relieve(const PressureView& view, int pages_short) const {
  const RunningSequence* victim = LastInLine(view.running);
  return victim == nullptr ? Decision::Wait() : Decision::Preempt(victim->id);
}

std::vector<std::string> AdmissionPolicyNames() {
  return {"queue", "coarser", "degrade", "preempt"};
}

absl::StatusOr<std::unique_ptr<AdmissionPolicy>> MakeAdmissionPolicy(std::string_view name) {
  if (name == "queue") return std::make_unique<QueuePolicy>("queue", /*coarser=*/false);
  if (name == "coarser") return std::make_unique<QueuePolicy>("coarser", /*coarser=*/true);
  if (name == "degrade") return std::make_unique<DegradePolicy>();
  if (name == "preempt") return std::make_unique<PreemptPolicy>();
  return absl::InvalidArgumentError(
      absl::StrCat("unknown pressure policy '", std::string(name),
                   "'; policies: ", absl::StrJoin(AdmissionPolicyNames(), ", ")));
}

}  // namespace catserve::scheduler
