/*
 * The names of gRPC's status codes ("NOT_FOUND"), in one table for the
 * server (metrics labels, ErrorInfo reasons), the client library and the
 * CLI. Header-only: libengram is built without the rest of common/.
 */
#ifndef EG_COMMON_GRPC_CODE_H
#define EG_COMMON_GRPC_CODE_H

/* grpc_status_code runs 0..16. */
#define EG_GRPC_CODES 17

/* The name of grpc_status_code code, "UNKNOWN" for a number outside
 * 0..EG_GRPC_CODES-1. Thread safety: pure. */
static inline const char *eg_grpc_code_name(int code) {
  static const char *const names[EG_GRPC_CODES] = {
      "OK",                 "CANCELLED",           "UNKNOWN",        "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED",  "NOT_FOUND",           "ALREADY_EXISTS", "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",        "OUT_OF_RANGE",
      "UNIMPLEMENTED",      "INTERNAL",            "UNAVAILABLE",    "DATA_LOSS",
      "UNAUTHENTICATED"};
  return code >= 0 && code < EG_GRPC_CODES ? names[code] : "UNKNOWN";
}

#endif
