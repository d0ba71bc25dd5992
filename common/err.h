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

/*      name          message                          gRPC code */
#define EG_ERR_MAP(X)                                                   \
  X(EG_OK,        "ok",                              0  /* OK */)                 \
  X(EG_EINVAL,    "invalid argument",                3  /* INVALID_ARGUMENT */)   \
  X(EG_ENOTFOUND, "not found",                       5  /* NOT_FOUND */)          \
  X(EG_EEXIST,    "already exists",                  6  /* ALREADY_EXISTS */)     \
  X(EG_EPERM,     "permission denied",               7  /* PERMISSION_DENIED */)  \
  X(EG_ELIMIT,    "resource exhausted",              8  /* RESOURCE_EXHAUSTED */) \
  X(EG_EPRECOND,  "failed precondition",             9  /* FAILED_PRECONDITION */)\
  X(EG_EABORTED,  "aborted",                         10 /* ABORTED */)            \
  X(EG_EUNIMPL,   "unimplemented",                   12 /* UNIMPLEMENTED */)      \
  X(EG_EIO,       "internal storage error",          13 /* INTERNAL */)           \
  X(EG_ENOMEM,    "out of memory",                   8  /* RESOURCE_EXHAUSTED */) \
  X(EG_EMAPFULL,  "storage map full",                14 /* UNAVAILABLE */)        \
  X(EG_EUNAVAIL,  "unavailable",                     14 /* UNAVAILABLE */)        \
  X(EG_ECORRUPT,  "stored data failed to open",      15 /* DATA_LOSS */)          \
  X(EG_EUNAUTH,   "unauthenticated",                 16 /* UNAUTHENTICATED */)    \
  X(EG_EREADERS,  "too many concurrent readers",     14 /* UNAVAILABLE */)        \
  X(EG_ETXNFULL,  "transaction too large",           8  /* RESOURCE_EXHAUSTED */) \
  X(EG_ENOSPC,    "disk full",                       8  /* RESOURCE_EXHAUSTED */) \
  X(EG_EQUOTA,    "quota exceeded",                  8  /* RESOURCE_EXHAUSTED */) \
  X(EG_EDEADLINE, "deadline exceeded",               4  /* DEADLINE_EXCEEDED */)  \
  X(EG_EBROKEN,   "storage unusable after a failed write; the server is restarting", \
                                                     14 /* UNAVAILABLE */)        \
  X(EG_EMAPBUSY,  "the storage map is full and cannot grow while a long read (an export, " \
                  "a backup copy) holds it; retry",  14 /* UNAVAILABLE */)

typedef enum {
#define EG_ERR_ENUM(name, msg, code) name,
  EG_ERR_MAP(EG_ERR_ENUM)
#undef EG_ERR_ENUM
} eg_err;

/* Returns the constant name ("EG_ENOTFOUND"). Thread safety: pure. */
const char *eg_err_name(eg_err e);
/* Returns a short human message ("not found"). Thread safety: pure. */
const char *eg_err_msg(eg_err e);
/* Returns the grpc_status_code the transport answers with. */
int eg_err_grpc_code(eg_err e);

#endif
