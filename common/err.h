/*
 * The one error table of Engram.
 *
 * Every module returns eg_err (EG_OK == 0). Each module converts its
 * library's codes where they enter (MDB_NOTFOUND -> EG_ENOTFOUND, a failed
 * AEAD open -> EG_ECORRUPT); only the transport maps an eg_err to a gRPC
 * status, through eg_err_grpc_code(). The numbers in the third column are
 * grpc_status_code values, written out so this header needs no gRPC.
 */
#ifndef EG_COMMON_ERR_H
#define EG_COMMON_ERR_H

/* reason: the google.rpc.ErrorInfo reason clients switch on (UPPER_SNAKE,
 * stable: part of the API). retry ms: the google.rpc.RetryInfo delay sent
 * with it, or 0 where retrying the same call cannot help (no RetryInfo). */
/*      name          message                          gRPC code   reason   retry ms */
#define EG_ERR_MAP(X)                                                   \
  X(EG_OK,        "ok",                              0  /* OK */, "OK", 0)                 \
  X(EG_EINVAL,    "invalid argument",                3  /* INVALID_ARGUMENT */, "INVALID_ARGUMENT", 0)   \
  X(EG_ENOTFOUND, "not found",                       5  /* NOT_FOUND */, "NOT_FOUND", 0)          \
  X(EG_EEXIST,    "already exists",                  6  /* ALREADY_EXISTS */, "ALREADY_EXISTS", 0)     \
  X(EG_EPERM,     "permission denied",               7  /* PERMISSION_DENIED */, "PERMISSION_DENIED", 0)  \
  X(EG_ELIMIT,    "resource exhausted",              8  /* RESOURCE_EXHAUSTED */, "LIMIT_EXCEEDED", 0) \
  X(EG_EPRECOND,  "failed precondition",             9  /* FAILED_PRECONDITION */, "FAILED_PRECONDITION", 0)\
  X(EG_EABORTED,  "aborted",                         10 /* ABORTED */, "ABORTED", 100)            \
  X(EG_EUNIMPL,   "unimplemented",                   12 /* UNIMPLEMENTED */, "UNIMPLEMENTED", 0)      \
  X(EG_EIO,       "internal storage error",          13 /* INTERNAL */, "INTERNAL", 0)           \
  X(EG_ENOMEM,    "out of memory",                   8  /* RESOURCE_EXHAUSTED */, "OUT_OF_MEMORY", 0) \
  X(EG_EMAPFULL,  "storage map full",                14 /* UNAVAILABLE */, "STORAGE_MAP_FULL", 1000)        \
  X(EG_EUNAVAIL,  "unavailable",                     14 /* UNAVAILABLE */, "UNAVAILABLE", 1000)        \
  X(EG_ECORRUPT,  "stored data failed to open",      15 /* DATA_LOSS */, "DATA_CORRUPT", 0)          \
  X(EG_EUNAUTH,   "unauthenticated",                 16 /* UNAUTHENTICATED */, "UNAUTHENTICATED", 0)    \
  X(EG_EREADERS,  "too many concurrent readers",     14 /* UNAVAILABLE */, "TOO_MANY_READERS", 200)        \
  X(EG_ETXNFULL,  "transaction too large",           8  /* RESOURCE_EXHAUSTED */, "TRANSACTION_TOO_LARGE", 0) \
  X(EG_ENOSPC,    "disk full",                       8  /* RESOURCE_EXHAUSTED */, "DISK_FULL", 0) \
  X(EG_EQUOTA,    "quota exceeded",                  8  /* RESOURCE_EXHAUSTED */, "QUOTA_EXCEEDED", 0) \
  X(EG_EDEADLINE, "deadline exceeded",               4  /* DEADLINE_EXCEEDED */, "DEADLINE_EXCEEDED", 0)  \
  X(EG_EBROKEN,   "storage unusable after a failed write; the server is restarting", \
                                                     14 /* UNAVAILABLE */, "STORAGE_BROKEN", 2000)        \
  X(EG_EMAPBUSY,  "the storage map is full and cannot grow while a long read (an export, " \
                  "a backup copy) holds it; retry",  14 /* UNAVAILABLE */, "STORAGE_MAP_BUSY", 1000) \
  X(EG_EBUSY,     "server busy; retry",              8  /* RESOURCE_EXHAUSTED */, "SERVER_BUSY", 500) \
  X(EG_ENOPRIMARY, "no primary: an election is in progress; retry", \
                                                     14 /* UNAVAILABLE */, "NO_PRIMARY", 1000)   \
  X(EG_EFENCED,   "this node is fenced: retry on the new primary", \
                                                     14 /* UNAVAILABLE */, "FENCED", 1000)       \
  X(EG_ENOTPRIMARY, "this node is not the primary",  9  /* FAILED_PRECONDITION */, "NOT_PRIMARY", 0) \
  X(EG_ECANCELLED, "the client cancelled the call or went away", \
                                                     1  /* CANCELLED */, "CANCELLED", 0)         \
  X(EG_EERASED,   "the data was erased (its data key is destroyed)",  \
                                                     15 /* DATA_LOSS */, "ERASED", 0)            \
  X(EG_ERATE,     "tenant rate limit exceeded; retry after the RetryInfo delay", \
                                                     8  /* RESOURCE_EXHAUSTED */, "RATE_LIMITED", 1000)

typedef enum {
#define EG_ERR_ENUM(name, msg, code, reason, retry_ms) name,
  EG_ERR_MAP(EG_ERR_ENUM)
#undef EG_ERR_ENUM
} eg_err;

/* Returns the constant name ("EG_ENOTFOUND"). Thread safety: pure. */
const char *eg_err_name(eg_err e);
/* Returns a short human message ("not found"). Thread safety: pure. */
const char *eg_err_msg(eg_err e);
/* Returns the grpc_status_code the transport answers with. */
int eg_err_grpc_code(eg_err e);
/* Returns the ErrorInfo reason ("NOT_FOUND"). Thread safety: pure. */
const char *eg_err_reason(eg_err e);
/* Returns the RetryInfo delay in ms, 0 when a retry cannot help.
 * Thread safety: pure. */
int eg_err_retry_ms(eg_err e);

#endif
