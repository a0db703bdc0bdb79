// oneTBB behind bnorm::parallel: parallel_for in the caller's arena, isolated.
#include "lib/parallel/parallel.h"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

namespace bnorm {
namespace parallel {

void ForRanges(int64_t count, int64_t grain, RangeFn fn, const void* context) {
  tbb::this_task_arena::isolate([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, count, grain > 0 ? grain : 1),
                      [&](const tbb::blocked_range<int64_t>& r) { fn(context, r.begin(), r.end()); });
  });
}

}  // namespace parallel
}  // namespace bnorm
