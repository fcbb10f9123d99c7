#include "engine/sampler.h"

#include <algorithm>
#include <cmath>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace catserve::engine {

absl::Status ValidateSamplingParams(const SamplingParams& p) {
  if (!(p.temperature >= 0) || !std::isfinite(p.temperature)) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be >= 0 (0 = greedy), got ", p.temperature));
  }
  if (p.top_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0 (0 = off), got ", p.top_k));
  }
  if (!(p.top_p > 0 && p.top_p <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_p must be in (0, 1] (1 = off), got ", p.top_p));
  }
  if (!(p.min_p >= 0 && p.min_p <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_p must be in [0, 1] (0 = off), got ", p.min_p));
  }
  if (!(p.repetition_penalty > 0) || !std::isfinite(p.repetition_penalty)) {
    return absl::InvalidArgumentError(
        absl::StrCat("repetition_penalty must be > 0 (1 = off), got ", p.repetition_penalty));
  }
  return absl::OkStatus();
}

void ApplyRepetitionPenalty(absl::Span<float> logits, absl::Span<const int32_t> context,
                            float penalty) {
  if (penalty == 1.0f) return;
  absl::flat_hash_set<int32_t> seen(context.begin(), context.end());
  for (int32_t t : seen) {
    if (t < 0 || t >= static_cast<int32_t>(logits.size())) continue;
    logits[t] = logits[t] > 0 ? logits[t] / penalty : logits[t] * penalty;
  }
}

std::vector<Candidate> SamplingSupport(absl::Span<const float> logits,
                                       const SamplingParams& params) {
  const int V = static_cast<int>(logits.size());
  std::vector<Candidate> c(V);
  for (int i = 0; i < V; ++i) c[i] = {i, logits[i] / params.temperature};
  auto by_prob = [](const Candidate& a, const Candidate& b) {
    return a.prob > b.prob || (a.prob == b.prob && a.token < b.token);
  };
  int keep = V;
  if (params.top_k > 0 && params.top_k < V) {
    keep = params.top_k;
    std::partial_sort(c.begin(), c.begin() + keep, c.end(), by_prob);
    c.resize(keep);
  } else {
    std::sort(c.begin(), c.end(), by_prob);
  }
  // Softmax over what is left (c[0] holds the largest logit).
  const float mx = c[0].prob;
  double sum = 0;
  for (Candidate& x : c) {
    x.prob = std::exp(x.prob - mx);
    sum += x.prob;
  }
  for (Candidate& x : c) x.prob = static_cast<float>(x.prob / sum);
  if (params.top_p < 1.0f) {
    // Keep the smallest prefix whose mass reaches top_p.
    double mass = 0;
    size_t n = 0;
    while (n < c.size()) {
      mass += c[n].prob;
      ++n;
      if (mass >= params.top_p) break;
    }
    c.resize(n);
  }
  if (params.min_p > 0.0f) {
    const float floor = params.min_p * c[0].prob;
    size_t n = 1;
    while (n < c.size() && c[n].prob >= floor) ++n;
    c.resize(n);
  }
  double total = 0;
  for (const Candidate& x : c) total += x.prob;
  for (Candidate& x : c) x.prob = static_cast<float>(x.prob / total);
  return c;
}

int32_t Sampler::Sample(absl::Span<float> logits, absl::Span<const int32_t> context) {
  ApplyRepetitionPenalty(logits, context, params_.repetition_penalty);
  if (params_.temperature == 0.0f) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  const std::vector<Candidate> support = SamplingSupport(logits, params_);
  // A uniform double in [0, 1) from the top 53 bits, fixed by the standard generator's output.
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
  double acc = 0;
  for (const Candidate& c : support) {
    acc += c.prob;
    if (u < acc) return c.token;
  }
  return support.back().token;
}

}  // namespace catserve::engine
