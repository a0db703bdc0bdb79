// Threading for bnorm: the only interface to oneTBB. Work is cut by the callers into
// items whose boundaries depend on the shape only; this runs them, in parallel or on
// the calling thread, inside the caller's task arena.
#ifndef BNORM_LIB_PARALLEL_PARALLEL_H_
#define BNORM_LIB_PARALLEL_PARALLEL_H_

#include <cstdint>

namespace bnorm {
namespace parallel {

using RangeFn = void (*)(const void* context, int64_t begin, int64_t end);

// Runs fn(context, b, e) over disjoint ranges covering [0, count), each at least
// `grain` items (but the last), concurrently in the current task arena, isolated so
// that a waiting thread does not pick up unrelated work. Returns when all are done.
void ForRanges(int64_t count, int64_t grain, RangeFn fn, const void* context);

// Calls body(item) for each item in [0, count): on the calling thread, in order, when
// `serial`, else through ForRanges. body must not depend on which thread runs it.
template <class Body>
void For(int64_t count, int64_t grain, bool serial, const Body& body) {
  if (count <= 0) return;
  if (serial || count <= grain) {
    for (int64_t i = 0; i < count; ++i) body(i);
    return;
  }
  ForRanges(
      count, grain,
      [](const void* context, int64_t begin, int64_t end) {
        const Body& b = *static_cast<const Body*>(context);
        for (int64_t i = begin; i < end; ++i) b(i);
      },
      &body);
}

}  // namespace parallel
}  // namespace bnorm

#endif  // BNORM_LIB_PARALLEL_PARALLEL_H_
