/*
 * Rich errors: the google.rpc.Status engramd sends with every non-OK reply
 * as trailing metadata `grpc-status-details-bin`, and the request ids that
 * name those replies (also `engram-request-id`, and the log line of an
 * INTERNAL or DATA_LOSS reply).
 *
 * The Status's code and message are the call's grpc-status and
 * grpc-message; its details, in this order:
 *   ErrorInfo{reason, domain "engram.v1"}  always (reason: eg_status_reason)
 *   BadRequest{field_violations[1]}        INVALID_ARGUMENT whose message
 *                                          has the form "<field path>: <problem>"
 *   RetryInfo{retry_delay}                 where a retry can help (eg_status_retry_ms,
 *                                          or the call's own: eg_status_details_retry)
 *   RequestInfo{request_id}                always
 */
#ifndef EG_SERVER_STATUS_DETAILS_H
#define EG_SERVER_STATUS_DETAILS_H

#include <grpc/slice.h>
#include <stddef.h>

#include "common/err.h"

#define EG_ERROR_DOMAIN "engram.v1"

/* A request id: lowercase hex, at most this many characters. */
#define EG_REQUEST_ID_MAX 32

/* Writes a fresh request id (32 hex characters and a NUL) into id: a
 * random 64-bit prefix drawn once per process, then a 64-bit counter, so
 * ids are unique within a process and (but for a 2^-64 chance) across
 * restarts, at the cost of an atomic add (no system call) each.
 * Thread safety: any thread. */
void eg_request_id_new(char id[EG_REQUEST_ID_MAX + 1]);

/* Splits an INVALID_ARGUMENT message of the house form "<field path>:
 * <problem>": the path is snake_case names joined by '.', each name
 * optionally indexed ("messages[3].content"); the problem is what follows
 * the first ": " (it may hold colons of its own) and is not empty. Returns
 * 1 with *path_len (the path is msg[0..*path_len)) and *problem set, or 0
 * when msg has no field path ("request: ..." names the whole request, not a
 * field). Thread safety: pure. */
int eg_bad_request_parse(const char *msg, size_t *path_len, const char **problem);

/* The ErrorInfo reason of a reply with grpc code and, when the status
 * came from one, eg_err e (EG_OK: none; the reason is then the code's
 * name, "DEADLINE_EXCEEDED"). Thread safety: pure. */
const char *eg_status_reason(int code, eg_err e);

/* The RetryInfo delay of the same reply in ms, 0 for none: the table's
 * for e; without one, EG_EUNAVAIL's for UNAVAILABLE and EG_EABORTED's for
 * ABORTED. Thread safety: pure. */
int eg_status_retry_ms(int code, eg_err e);

/* The serialized google.rpc.Status of a non-OK reply (code, e as above,
 * msg its grpc-message, request_id as eg_request_id_new made it). Its size
 * is bounded by msg's (every caller's message comes from a fixed buffer of
 * at most 512 bytes) plus a few hundred bytes of details. Returns an
 * empty slice when memory runs out (the reply then goes without
 * details). The caller unrefs the slice. Thread safety: any thread. */
grpc_slice eg_status_details(int code, eg_err e, const char *msg, const char *request_id);

/* eg_status_details with the call's own RetryInfo delay, retry_ms > 0 (a
 * tenant's bucket says when it holds a token: server/limits.h); 0 keeps
 * eg_status_retry_ms's. Thread safety: any thread. */
grpc_slice eg_status_details_retry(int code, eg_err e, const char *msg, const char *request_id,
                                   int retry_ms);

/* The google.rpc.Status of a forwarded write's non-OK answer (code, e,
 * msg: the status the replica actually sends), given the primary's
 * serialized Status (primary, or NULL when it sent none) and request_id
 * (the primary's, when it sent one). The primary's Status passes through
 * unchanged when its code and message are the ones sent; when only the
 * message differs (the replica cut it to fit), it is repacked with the
 * message sent, its details (reason, field, retry delay, request id)
 * kept; when it is absent, garbled or of another code (the replica
 * answers something else, e.g. server busy), it is built afresh as
 * eg_status_details does, under request_id. Empty when memory runs out.
 * The caller unrefs the slice. Thread safety: any thread. */
grpc_slice eg_status_details_relay(const grpc_slice *primary, int code, eg_err e, const char *msg,
                                   const char *request_id);

#endif
