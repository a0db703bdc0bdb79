// Failure reporting for the C API: a status plus this thread's one-line message.
#ifndef BNORM_LIB_API_STATUS_H_
#define BNORM_LIB_API_STATUS_H_

#include "bnorm/bnorm.h"

namespace bnorm {
namespace detail {

// Records a printf-style message for bnorm_last_error on this thread; returns `status`.
bnorm_status SetError(bnorm_status status, const char* format, ...)
    __attribute__((format(printf, 2, 3)));

}  // namespace detail
}  // namespace bnorm

#endif  // BNORM_LIB_API_STATUS_H_
