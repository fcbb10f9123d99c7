#include "engine/sampling/sampler.h"

#include <algorithm>
#include <cmath>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "engine/kernels/attention_kernels.h"
#include "engine/sampling/draw.h"

namespace catserve::engine {

absl::Status ValidateSamplingParams(const SamplingParams& p, std::string* field) {
  auto invalid = [field](const char* name, std::string message) {
    if (field != nullptr) *field = name;
    return absl::InvalidArgumentError(absl::StrCat(name, message));
  };
  if (!(p.temperature >= 0) || !std::isfinite(p.temperature)) {
    return invalid("temperature", absl::StrCat(" must be >= 0 (0 = greedy), got ", p.temperature));
  }
  if (p.top_k < 0) return invalid("top_k", absl::StrCat(" must be >= 0 (0 = off), got ", p.top_k));
  if (!(p.top_p > 0 && p.top_p <= 1)) {
    return invalid("top_p", absl::StrCat(" must be in (0, 1] (1 = off), got ", p.top_p));
  }
  if (!(p.min_p >= 0 && p.min_p <= 1)) {
    return invalid("min_p", absl::StrCat(" must be in [0, 1] (0 = off), got ", p.min_p));
  }
  if (!(p.repetition_penalty > 0) || !std::isfinite(p.repetition_penalty)) {
    return invalid("repetition_penalty",
                   absl::StrCat(" must be > 0 (1 = off), got ", p.repetition_penalty));
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

namespace {

// The order of the support: descending probability, ties by ascending id. A function object, so
// that the sorts inline it (through a function pointer every comparison is a call).
struct ByProb {
  bool operator()(const Candidate& a, const Candidate& b) const {
    return a.prob > b.prob || (a.prob == b.prob && a.token < b.token);
  }
};

// Puts at least the n first candidates in ByProb order at the front of c, sorted (the rest after
// them in no order), and returns how many are sorted: n, or all of c. A heap of n rejects most of
// a vocabulary with one comparison each, far cheaper than sorting it; past an eighth of it a full
// sort is quicker.
size_t SortPrefix(std::vector<Candidate>& c, size_t n) {
  if (n >= c.size() / 8) {
    std::sort(c.begin(), c.end(), ByProb());
    return c.size();
  }
  std::partial_sort(c.begin(), c.begin() + n, c.end(), ByProb());
  return n;
}

// The largest of x (-inf when empty), over eight lanes so that the compiler vectorises it (one
// running maximum would be one dependency chain through every element).
// Through a raw pointer: Span's indexing checks its bounds, which keeps the loop scalar.
float Max(absl::Span<const float> span) {
  const float* x = span.data();
  const size_t n = span.size();
  float lanes[8];
  std::fill(lanes, lanes + 8, -INFINITY);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) lanes[k] = x[i + k] > lanes[k] ? x[i + k] : lanes[k];
  }
  for (; i < n; ++i) lanes[0] = x[i] > lanes[0] ? x[i] : lanes[0];
  return *std::max_element(lanes, lanes + 8);
}

// The sum of x in double, over eight running sums: one would be a chain of dependent adds through
// the whole vocabulary.
double SumOf(absl::Span<const float> span) {
  const float* x = span.data();
  const size_t n = span.size();
  double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) lanes[k] += x[i + k];
  }
  for (; i < n; ++i) lanes[0] += x[i];
  return ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) +
         ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
}

// w[i] = exp(w[i] - max w), with the AVX2 set's vector exp (within 2 ulp of expf) where the CPU
// has it: a softmax over a whole vocabulary is otherwise mostly calls to expf. Returns their sum,
// at least 1: the largest weight is exp(0) = 1, the others exp of a negative number, at most 1.
double ExpWeights(std::vector<float>& w) {
  BestAttentionKernels().exp_sum(w.data(), static_cast<int>(w.size()), Max(w));
  return SumOf(w);
}

// c[i].prob = exp(c[i].prob - max) / (the sum of them). Returns the largest probability,
// 1 / the sum.
float SoftmaxInPlace(std::vector<Candidate>& c) {
  std::vector<float> w(c.size());
  for (size_t i = 0; i < c.size(); ++i) w[i] = c[i].prob;
  const double sum = ExpWeights(w);
  for (size_t i = 0; i < c.size(); ++i) c[i].prob = static_cast<float>(w[i] / sum);
  return static_cast<float>(1.0 / sum);
}

// A whole vocabulary's softmax of logits / temperature, in id order: token i's probability is
// float(w[i] / sum), exactly what SoftmaxInPlace gives candidates built in id order, and the
// largest is float(1 / sum). Kept as weights so that a peaked row, whose most likely token takes
// the draw or the cut alone, needs no candidates and no sort.
struct VocabularySoftmax {
  VocabularySoftmax(absl::Span<const float> logits, float temperature, std::vector<float>& weights)
      : w(weights) {
    w.resize(logits.size());
    // Raw pointers and the temperature in a local, or the loop does not vectorise: Span's
    // indexing checks its bounds, and the temperature might alias w.
    const float* in = logits.data();
    float* out = w.data();
    for (size_t i = 0; i < w.size(); ++i) out[i] = in[i] / temperature;
    sum = ExpWeights(w);
    best = static_cast<float>(1.0 / sum);
  }
  float prob(size_t i) const { return static_cast<float>(w[i] / sum); }
  // The first token whose probability is `best`: the one a sort by ByProb puts first. None is
  // above it (ExpWeights), and only a weight within a few ulp of 1 can reach it.
  int32_t FirstMostLikely() const {
    for (size_t i = 0; i < w.size(); ++i) {
      if (w[i] > 1.0f - 0x1p-20f && prob(i) == best) return static_cast<int32_t>(i);
    }
    return 0;  // not reached
  }
  // Whether no token but the most likely has a probability of at least `floor` (<= best).
  bool OnlyOneReaches(float floor) const {
    // prob(i) >= floor needs w[i] >= floor * sum, give or take an ulp of each.
    const float near = static_cast<float>(floor * sum * (1 - 0x1p-20));
    int reach = 0;
    for (size_t i = 0; i < w.size() && reach < 2; ++i) {
      reach += w[i] >= near && prob(i) >= floor ? 1 : 0;
    }
    return reach == 1;
  }
  // Every token and its probability, in id order, into c (its storage reused).
  void Candidates(std::vector<Candidate>& c) const {
    c.resize(w.size());
    for (size_t i = 0; i < w.size(); ++i) c[i] = {static_cast<int32_t>(i), prob(i)};
  }

  std::vector<float>& w;
  double sum;
  float best;
};

}  // namespace

float LogSumExp(absl::Span<const float> logits) {
  if (logits.empty()) return -INFINITY;
  std::vector<float> w(logits.begin(), logits.end());
  const double sum = ExpWeights(w);  // >= 1, so the result is never below the largest logit
  return Max(logits) + static_cast<float>(std::log(sum));
}

std::vector<TokenLogprob> TopLogprobs(absl::Span<const float> logits, int n, float log_sum_exp) {
  n = std::clamp(n, 0, static_cast<int>(logits.size()));
  if (n == 0) return {};
  std::vector<int32_t> ids(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  std::vector<TokenLogprob> top(n);
  for (int i = 0; i < n; ++i) top[i] = {ids[i], logits[ids[i]] - log_sum_exp};
  return top;
}

std::vector<Candidate> SamplingSupport(absl::Span<const float> logits,
                                       const SamplingParams& params) {
  const int V = static_cast<int>(logits.size());
  const bool top_k = params.top_k > 0 && params.top_k < V;
  const bool prefix_cut = params.top_p < 1.0f || params.min_p > 0.0f;
  std::vector<Candidate> c;
  float best;
  if (prefix_cut && !top_k && V > 0) {
    std::vector<float> weights;
    const VocabularySoftmax softmax(logits, params.temperature, weights);
    best = softmax.best;
    // A peaked distribution (what a trained model mostly gives) keeps its most likely token alone
    // when that token reaches top_p, or no other reaches min_p of it: no sort at all.
    if ((params.top_p < 1.0f && best >= params.top_p) ||
        (params.min_p > 0.0f && softmax.OnlyOneReaches(params.min_p * best))) {
      return {{softmax.FirstMostLikely(), 1.0f}};
    }
    softmax.Candidates(c);
  } else {
    c.resize(V);
    for (int i = 0; i < V; ++i) c[i] = {i, logits[i] / params.temperature};
    if (top_k) {
      std::partial_sort(c.begin(), c.begin() + params.top_k, c.end(), ByProb());
      c.resize(params.top_k);
    } else {
      std::sort(c.begin(), c.end(), ByProb());  // the whole vocabulary is the support
    }
    best = SoftmaxInPlace(c);
  }
  if (prefix_cut && !top_k && !c.empty()) {
    // top_p and min_p keep a prefix of the sorted candidates: sort the first 64 (enough for a
    // peaked distribution), and all of them when the cut falls past those, or must (64 tokens
    // of at most `best` each cannot reach top_p).
    const size_t first = params.top_p < 1.0f && 64 * best < params.top_p ? c.size() : 64;
    for (size_t want = first;; want = c.size()) {
      const size_t sorted = SortPrefix(c, want);
      if (sorted == c.size()) break;
      // top_p's cut (and min_p's, which only shortens it) falls inside the sorted prefix when
      // the prefix's mass reaches top_p; min_p's alone when the prefix's last falls below it.
      bool inside;
      if (params.top_p < 1.0f) {
        double mass = 0;
        for (size_t n = 0; n < sorted && mass < params.top_p; ++n) mass += c[n].prob;
        inside = mass >= params.top_p;
      } else {
        inside = c[sorted - 1].prob < params.min_p * c[0].prob;
      }
      if (inside) break;
    }
  }
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

int32_t Sampler::Sample(absl::Span<float> logits, absl::Span<const int32_t> context,
                        const SamplingParams& params, uint64_t draw) {
  ApplyRepetitionPenalty(logits, context, params.repetition_penalty);
  if (params.temperature == 0.0f) {
    // The first largest logit (std::max_element's answer where no logit is NaN), in two passes
    // the compiler vectorises.
    const float best = Max(logits);
    for (size_t i = 0; i < logits.size(); ++i) {
      if (logits[i] == best) return static_cast<int32_t>(i);
    }
    return 0;
  }
  const double u = DrawUniform(params.seed, draw);
  const int V = static_cast<int>(logits.size());
  if ((params.top_k == 0 || params.top_k >= V) && params.top_p >= 1.0f && params.min_p <= 0.0f) {
    // The whole vocabulary is the support, walked in id order over the unnormalised weights
    // (u scaled by their sum): no candidates, no sort, no division per token.
    const VocabularySoftmax softmax(logits, params.temperature, weights_);
    const double target = u * softmax.sum;
    const float* w = weights_.data();
    double acc = 0;
    for (int i = 0; i < V; ++i) {
      acc += w[i];
      if (target < acc) return i;
    }
    return softmax.FirstMostLikely();
  }
  std::vector<Candidate> support = SamplingSupport(logits, params);
  const int32_t most_likely = support.front().token;
  if (support.size() == 1) return most_likely;
  std::sort(support.begin(), support.end(),
            [](const Candidate& a, const Candidate& b) { return a.token < b.token; });
  double acc = 0;
  for (const Candidate& c : support) {
    acc += c.prob;
    if (u < acc) return c.token;
  }
  return most_likely;
}

}  // namespace catserve::engine
