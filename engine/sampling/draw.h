#ifndef CATSERVE_ENGINE_SAMPLING_DRAW_H_
#define CATSERVE_ENGINE_SAMPLING_DRAW_H_

// The random numbers every sampler draws from, defined once for the host and the device (this
// header is plain C++ that nvcc compiles too: no Abseil, no standard library beyond <cstdint>).
//
// A draw is a pure function of (seed, draw): `draw` is the index of the token in its request's
// stream (0 for the first generated token, 1 for the next, ...). So a request's tokens do not
// depend on the batch around it, on the CPU's thread count, on the device's launch shape, on a
// restart, or on a degrade or preemption that recomputes its cache: it goes on drawing number
// `generated` of its own stream. The generator is a keyed SplitMix64 (Steele, Lea and Flood,
// "Fast splittable pseudorandom number generators", 2014): the draw index is mixed once and the
// result, xor the seed, mixed again; its top 53 bits make a double in [0, 1).

#include <cstdint>

#if defined(__CUDACC__)
#define CATSERVE_HOST_DEVICE __host__ __device__
#else
#define CATSERVE_HOST_DEVICE
#endif

namespace catserve::engine {

CATSERVE_HOST_DEVICE inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The uniform number in [0, 1) of draw `draw` of the stream keyed by `seed`.
CATSERVE_HOST_DEVICE inline double DrawUniform(uint64_t seed, uint64_t draw) {
  const uint64_t bits = SplitMix64(seed ^ SplitMix64(draw));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_SAMPLING_DRAW_H_
