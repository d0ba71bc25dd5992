#include "common/err.h"

#include <stddef.h>

struct eg_err_info {
  const char *name;
  const char *msg;
  int grpc_code;
  const char *reason;
  int retry_ms;
};

static const struct eg_err_info eg_err_table[] = {
#define EG_ERR_ROW(name, msg, code, reason, retry_ms) {#name, msg, code, reason, retry_ms},
    EG_ERR_MAP(EG_ERR_ROW)
#undef EG_ERR_ROW
};

static const struct eg_err_info *eg_err_info_of(eg_err e) {
  size_t n = sizeof eg_err_table / sizeof eg_err_table[0];
  /* An out-of-range value is a bug; report it as an internal error. */
  return (size_t)e < n ? &eg_err_table[e] : &eg_err_table[EG_EIO];
}

const char *eg_err_name(eg_err e) { return eg_err_info_of(e)->name; }
const char *eg_err_msg(eg_err e) { return eg_err_info_of(e)->msg; }
int eg_err_grpc_code(eg_err e) { return eg_err_info_of(e)->grpc_code; }
const char *eg_err_reason(eg_err e) { return eg_err_info_of(e)->reason; }
int eg_err_retry_ms(eg_err e) { return eg_err_info_of(e)->retry_ms; }
