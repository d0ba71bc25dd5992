/*
 * libengram: the C client of Engram (docs/architecture.md section 1).
 *
 * A thin layer over the gRPC C core: one client holds one channel; every
 * call is blocking (unary, or server-streaming read one message at a
 * time) and runs on its own completion queue, so one client may be shared
 * by any number of threads.
 *
 * Messages are the protobuf-c types generated from proto/ (engram.v1 and
 * grpc.health.v1). Requests are the caller's (build them on the stack,
 * e.g. `Engram__V1__GetSessionRequest req = ENGRAM__V1__GET_SESSION_REQUEST__INIT;`);
 * NULL string fields are sent as "".
 *
 * Errors: every call returns a gRPC status code (grpc_status_code values from
 * <grpc/status.h>: 0 OK, 3 INVALID_ARGUMENT, 5 NOT_FOUND, 14 UNAVAILABLE …)
 * and fills an eg_client_status with the code, the server's message and the
 * commit LSN. Failures on the client side (the server cannot be reached,
 * the deadline passes, the response does not decode) come back the same
 * way, as UNAVAILABLE, DEADLINE_EXCEEDED or INTERNAL.
 */
#ifndef ENGRAM_H
#define ENGRAM_H

#include <stdint.h>

#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>

#include "engram/v1/admin.pb-c.h"
#include "engram/v1/memory.pb-c.h"
#include "engram/v1/user.pb-c.h"
#include "engram/v1/session.pb-c.h"
#include "grpc_health/v1/health.pb-c.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What this header declares is libengram.so's API: the library is built
 * with hidden visibility, and exports these (and the generated code of the
 * headers above) only. */
#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

typedef struct eg_client eg_client;

/* Deadline of a call whose options give none. */
#define EG_CLIENT_DEFAULT_TIMEOUT_MS 10000
/* Largest response the client accepts. */
#define EG_CLIENT_MAX_RESPONSE_BYTES (64 * 1024 * 1024)
#define EG_CLIENT_MESSAGE_MAX 512
/* Largest grpc-status-details-bin kept (a google.rpc.Status with a few
 * details is well under 1 KiB; a larger one is dropped, not cut). */
#define EG_CLIENT_DETAILS_MAX 4096
/* Request ids are lowercase hex, at most 32 characters. */
#define EG_CLIENT_REQUEST_ID_MAX 32

/* The outcome of one call. */
typedef struct {
  int code;                               /* grpc_status_code; 0 is OK */
  char message[EG_CLIENT_MESSAGE_MAX];    /* the server's message, cut to fit; "" if none */
  uint64_t lsn;                           /* `engram-lsn` of a write; 0 if absent */
  /* Of a failed call, from the trailing metadata: `engram-request-id`
   * ("" if absent or too long), and `grpc-status-details-bin`, a serialized
   * google.rpc.Status (code, message, details: ErrorInfo, BadRequest,
   * RetryInfo, RequestInfo; decode it with the google/rpc/ types generated
   * from proto/), details_len 0 if absent or over EG_CLIENT_DETAILS_MAX. */
  char request_id[EG_CLIENT_REQUEST_ID_MAX + 1];
  size_t details_len;
  uint8_t details[EG_CLIENT_DETAILS_MAX];
} eg_client_status;

/* Per-call options. A NULL options pointer means all defaults. */
typedef struct {
  int64_t timeout_ms; /* <= 0: EG_CLIENT_DEFAULT_TIMEOUT_MS */
  uint64_t min_lsn;   /* > 0: sent as `engram-min-lsn` (read-your-writes) */
} eg_client_opts;

/* An RPC: its path and message types. */
typedef struct {
  const char *path;                            /* "/engram.v1.SessionService/GetSession" */
  const ProtobufCMessageDescriptor *request;
  const ProtobufCMessageDescriptor *response;
} eg_client_method;

/* Creates a client for target ("host:port", any gRPC target string), over
 * plaintext HTTP/2. When token is not NULL every call sends
 * `authorization: Bearer <token>`; the client keeps its own copy.
 * No connection is made until the first call.
 * Returns NULL if target is NULL or empty, the token holds a byte outside
 * printable ASCII, or memory runs out.
 * Thread safety: safe from any thread. */
eg_client *eg_client_new(const char *target, const char *token);

/* TLS settings of a client: paths of PEM files (each read once, when the
 * client is made; at most EG_CLIENT_TLS_PEM_MAX bytes). */
typedef struct {
  const char *ca_file;     /* CA bundle the server's certificate must chain to;
                              NULL: the system's roots */
  const char *cert_file;   /* client certificate chain (mutual TLS); NULL: none */
  const char *key_file;    /* its private key; set exactly when cert_file is */
  const char *server_name; /* name the server's certificate must carry; NULL:
                              the target's host */
} eg_client_tls;
#define EG_CLIENT_TLS_PEM_MAX (1024 * 1024)

/* eg_client_new over TLS when tls is not NULL (over plaintext when it is).
 * Returns NULL, with why in err (errlen bytes, may be 0) and errno set, if
 * eg_client_new would, or a file cannot be read, is empty, larger than
 * EG_CLIENT_TLS_PEM_MAX or holds no PEM block, or only one of cert_file
 * and key_file is set. Certificates themselves are checked at the
 * handshake: a server that fails verification makes calls fail
 * UNAVAILABLE.
 * Thread safety: safe from any thread. */
eg_client *eg_client_new_tls(const char *target, const char *token, const eg_client_tls *tls,
                             char *err, size_t errlen);

/* Closes the channel and frees the client. NULL is fine.
 * Thread safety: no call on this client may be running or start later. */
void eg_client_free(eg_client *c);

/* Calls method `path` with req and waits for the answer.
 *   path      "/package.Service/Method"
 *   req       the request; not modified, still the caller's
 *   resp_desc the type of the response
 *   opts      deadline and min LSN; NULL for defaults
 *   st        OUT: always filled
 *   resp      OUT: on OK only, the decoded response, which is the caller's:
 *             free it with protobuf_c_message_free_unpacked(*resp, NULL).
 *             Left untouched on any error.
 * Returns st->code.
 * Thread safety: safe on a shared client; each call has its own queue. */
int eg_client_call(eg_client *c, const char *path, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *resp_desc, const eg_client_opts *opts,
                   eg_client_status *st, ProtobufCMessage **resp);

/*
 * Server-streaming calls (AdminService/Backup, UserService/ExportUser).
 *
 *   eg_client_stream *s = eg_client_stream_open(c, path, req, opts, &st);
 *   ProtobufCMessage *m;
 *   while (s && eg_client_stream_next(s, resp_desc, &m, &st) == 1) {
 *     ... use m ...; protobuf_c_message_free_unpacked(m, NULL);
 *   }
 *   eg_client_stream_free(s);   (st.code: how the stream ended)
 */
typedef struct eg_client_stream eg_client_stream;

/* Starts a server-streaming call of `path` with req (sent at once; still
 * the caller's) and waits for the server's initial metadata.
 * opts->timeout_ms bounds the whole stream (<= 0:
 * EG_CLIENT_DEFAULT_TIMEOUT_MS); opts->min_lsn is sent as for unary calls.
 * Returns the stream, or NULL with st filled when the call failed before
 * the server answered at all (e.g. UNAVAILABLE, DEADLINE_EXCEEDED). A
 * refusal by the server (UNAUTHENTICATED, INVALID_ARGUMENT, ...) comes as
 * the end of the stream from the first eg_client_stream_next.
 * Thread safety: safe on a shared client; a stream is used by one thread. */
eg_client_stream *eg_client_stream_open(eg_client *c, const char *path,
                                        const ProtobufCMessage *req, const eg_client_opts *opts,
                                        eg_client_status *st);

/* Waits for the next response (bounded by the stream's deadline).
 * Returns 1 and *msg (the caller's: protobuf_c_message_free_unpacked), or 0
 * when the stream ended, with st filled: OK after the last message, else
 * the server's status, or INTERNAL for a response that does not decode
 * (the call is then cancelled). After 0, only eg_client_stream_free. */
int eg_client_stream_next(eg_client_stream *s, const ProtobufCMessageDescriptor *desc,
                          ProtobufCMessage **msg, eg_client_status *st);

/* Cancels the call if it is still running and frees the stream. NULL is
 * fine. */
void eg_client_stream_free(eg_client_stream *s);

/* The name of a gRPC status code ("NOT_FOUND"), or "UNKNOWN" for a number
 * outside the table. Thread safety: pure. */
const char *eg_client_code_name(int code);

/*
 * Typed calls, one per RPC, all made from this table. A row
 *     X(name, path, Request, request_desc, Response, response_desc)
 * declares
 *     extern const eg_client_method eg_client_method_<name>;
 *     int eg_client_<name>(eg_client *c, const Request *req,
 *                          const eg_client_opts *opts,
 *                          eg_client_status *st, Response **resp);
 * which is eg_client_call() with the method's path and response type:
 * same returns, same ownership (free *resp with
 * protobuf_c_message_free_unpacked(&(*resp)->base, NULL)), same thread
 * safety. req must be of the method's request type (asserted).
 * The AdminService rows (get_status, promote, checksum, *_retention_policy) act on the node
 * the client targets and need a token with the `admin` role.
 */
#define EG_CLIENT_SESSION_SVC "/engram.v1.SessionService/"
#define EG_CLIENT_ADMIN_SVC "/engram.v1.AdminService/"
#define EG_CLIENT_MEMORY_SVC "/engram.v1.MemoryService/"
#define EG_CLIENT_USER_SVC "/engram.v1.UserService/"
#define EG_CLIENT_METHODS(X)                                                            \
  X(create_session, EG_CLIENT_SESSION_SVC "CreateSession",                               \
    Engram__V1__CreateSessionRequest, engram__v1__create_session_request__descriptor,    \
    Engram__V1__Session, engram__v1__session__descriptor)                                \
  X(get_session, EG_CLIENT_SESSION_SVC "GetSession",                                     \
    Engram__V1__GetSessionRequest, engram__v1__get_session_request__descriptor,          \
    Engram__V1__Session, engram__v1__session__descriptor)                                \
  X(list_sessions, EG_CLIENT_SESSION_SVC "ListSessions",                                 \
    Engram__V1__ListSessionsRequest, engram__v1__list_sessions_request__descriptor,      \
    Engram__V1__ListSessionsResponse, engram__v1__list_sessions_response__descriptor)    \
  X(end_session, EG_CLIENT_SESSION_SVC "EndSession",                                     \
    Engram__V1__EndSessionRequest, engram__v1__end_session_request__descriptor,          \
    Engram__V1__Session, engram__v1__session__descriptor)                                \
  X(update_session, EG_CLIENT_SESSION_SVC "UpdateSession",                               \
    Engram__V1__UpdateSessionRequest, engram__v1__update_session_request__descriptor,    \
    Engram__V1__Session, engram__v1__session__descriptor)                                \
  X(delete_session, EG_CLIENT_SESSION_SVC "DeleteSession",                               \
    Engram__V1__DeleteSessionRequest, engram__v1__delete_session_request__descriptor,    \
    Engram__V1__DeleteSessionResponse, engram__v1__delete_session_response__descriptor)  \
  X(append_messages, EG_CLIENT_SESSION_SVC "AppendMessages",                             \
    Engram__V1__AppendMessagesRequest, engram__v1__append_messages_request__descriptor,  \
    Engram__V1__AppendMessagesResponse, engram__v1__append_messages_response__descriptor)\
  X(list_messages, EG_CLIENT_SESSION_SVC "ListMessages",                                 \
    Engram__V1__ListMessagesRequest, engram__v1__list_messages_request__descriptor,      \
    Engram__V1__ListMessagesResponse, engram__v1__list_messages_response__descriptor)    \
  X(get_context, EG_CLIENT_SESSION_SVC "GetContext",                                     \
    Engram__V1__GetContextRequest, engram__v1__get_context_request__descriptor,          \
    Engram__V1__GetContextResponse, engram__v1__get_context_response__descriptor)        \
  X(update_summary, EG_CLIENT_SESSION_SVC "UpdateSummary",                               \
    Engram__V1__UpdateSummaryRequest, engram__v1__update_summary_request__descriptor,    \
    Engram__V1__Session, engram__v1__session__descriptor)                                \
  X(fork_session, EG_CLIENT_SESSION_SVC "ForkSession",                                   \
    Engram__V1__ForkSessionRequest, engram__v1__fork_session_request__descriptor,        \
    Engram__V1__Session, engram__v1__session__descriptor)                                \
  X(search_messages, EG_CLIENT_SESSION_SVC "SearchMessages",                             \
    Engram__V1__SearchMessagesRequest, engram__v1__search_messages_request__descriptor,  \
    Engram__V1__SearchMessagesResponse, engram__v1__search_messages_response__descriptor)\
  X(health_check, "/grpc.health.v1.Health/Check",                                        \
    Grpc__Health__V1__HealthCheckRequest, grpc__health__v1__health_check_request__descriptor, \
    Grpc__Health__V1__HealthCheckResponse, grpc__health__v1__health_check_response__descriptor) \
  X(get_status, EG_CLIENT_ADMIN_SVC "GetStatus",                                         \
    Engram__V1__GetStatusRequest, engram__v1__get_status_request__descriptor,            \
    Engram__V1__GetStatusResponse, engram__v1__get_status_response__descriptor)          \
  X(promote, EG_CLIENT_ADMIN_SVC "Promote",                                              \
    Engram__V1__PromoteRequest, engram__v1__promote_request__descriptor,                 \
    Engram__V1__PromoteResponse, engram__v1__promote_response__descriptor)               \
  X(checksum, EG_CLIENT_ADMIN_SVC "Checksum",                                            \
    Engram__V1__ChecksumRequest, engram__v1__checksum_request__descriptor,               \
    Engram__V1__ChecksumResponse, engram__v1__checksum_response__descriptor)             \
  X(get_retention_policy, EG_CLIENT_ADMIN_SVC "GetRetentionPolicy",                      \
    Engram__V1__GetRetentionPolicyRequest, engram__v1__get_retention_policy_request__descriptor, \
    Engram__V1__GetRetentionPolicyResponse, engram__v1__get_retention_policy_response__descriptor) \
  X(set_retention_policy, EG_CLIENT_ADMIN_SVC "SetRetentionPolicy",                      \
    Engram__V1__SetRetentionPolicyRequest, engram__v1__set_retention_policy_request__descriptor, \
    Engram__V1__SetRetentionPolicyResponse, engram__v1__set_retention_policy_response__descriptor) \
  X(delete_tenant, EG_CLIENT_ADMIN_SVC "DeleteTenant",                                  \
    Engram__V1__DeleteTenantRequest, engram__v1__delete_tenant_request__descriptor,      \
    Engram__V1__DeleteTenantResponse, engram__v1__delete_tenant_response__descriptor)    \
  X(get_key_status, EG_CLIENT_ADMIN_SVC "GetKeyStatus",                                  \
    Engram__V1__GetKeyStatusRequest, engram__v1__get_key_status_request__descriptor,     \
    Engram__V1__GetKeyStatusResponse, engram__v1__get_key_status_response__descriptor)   \
  X(rewrap_keys, EG_CLIENT_ADMIN_SVC "RewrapKeys",                                       \
    Engram__V1__RewrapKeysRequest, engram__v1__rewrap_keys_request__descriptor,          \
    Engram__V1__RewrapKeysResponse, engram__v1__rewrap_keys_response__descriptor)        \
  X(rotate_data_keys, EG_CLIENT_ADMIN_SVC "RotateDataKeys",                              \
    Engram__V1__RotateDataKeysRequest, engram__v1__rotate_data_keys_request__descriptor, \
    Engram__V1__RotateDataKeysResponse, engram__v1__rotate_data_keys_response__descriptor) \
  X(rotate_blind_index_key, EG_CLIENT_ADMIN_SVC "RotateBlindIndexKey",                   \
    Engram__V1__RotateBlindIndexKeyRequest, engram__v1__rotate_blind_index_key_request__descriptor, \
    Engram__V1__RotateBlindIndexKeyResponse, engram__v1__rotate_blind_index_key_response__descriptor) \
  X(get_tenant_limits, EG_CLIENT_ADMIN_SVC "GetTenantLimits",                            \
    Engram__V1__GetTenantLimitsRequest, engram__v1__get_tenant_limits_request__descriptor, \
    Engram__V1__GetTenantLimitsResponse, engram__v1__get_tenant_limits_response__descriptor) \
  X(set_tenant_limits, EG_CLIENT_ADMIN_SVC "SetTenantLimits",                            \
    Engram__V1__SetTenantLimitsRequest, engram__v1__set_tenant_limits_request__descriptor, \
    Engram__V1__GetTenantLimitsResponse, engram__v1__get_tenant_limits_response__descriptor) \
  X(create_memory, EG_CLIENT_MEMORY_SVC "CreateMemory",                                  \
    Engram__V1__CreateMemoryRequest, engram__v1__create_memory_request__descriptor,      \
    Engram__V1__CreateMemoryResponse, engram__v1__create_memory_response__descriptor)    \
  X(get_memory, EG_CLIENT_MEMORY_SVC "GetMemory",                                        \
    Engram__V1__GetMemoryRequest, engram__v1__get_memory_request__descriptor,            \
    Engram__V1__Memory, engram__v1__memory__descriptor)                                  \
  X(update_memory, EG_CLIENT_MEMORY_SVC "UpdateMemory",                                  \
    Engram__V1__UpdateMemoryRequest, engram__v1__update_memory_request__descriptor,      \
    Engram__V1__Memory, engram__v1__memory__descriptor)                                  \
  X(delete_memory, EG_CLIENT_MEMORY_SVC "DeleteMemory",                                  \
    Engram__V1__DeleteMemoryRequest, engram__v1__delete_memory_request__descriptor,      \
    Engram__V1__DeleteMemoryResponse, engram__v1__delete_memory_response__descriptor)    \
  X(list_memories, EG_CLIENT_MEMORY_SVC "ListMemories",                                  \
    Engram__V1__ListMemoriesRequest, engram__v1__list_memories_request__descriptor,      \
    Engram__V1__ListMemoriesResponse, engram__v1__list_memories_response__descriptor)    \
  X(search_memories, EG_CLIENT_MEMORY_SVC "SearchMemories",                              \
    Engram__V1__SearchMemoriesRequest, engram__v1__search_memories_request__descriptor,  \
    Engram__V1__SearchMemoriesResponse, engram__v1__search_memories_response__descriptor)\
  X(deduplicate_memories, EG_CLIENT_MEMORY_SVC "DeduplicateMemories",                    \
    Engram__V1__DeduplicateMemoriesRequest,                                              \
    engram__v1__deduplicate_memories_request__descriptor,                                \
    Engram__V1__DeduplicateMemoriesResponse,                                             \
    engram__v1__deduplicate_memories_response__descriptor)                               \
  X(batch_create_memories, EG_CLIENT_MEMORY_SVC "BatchCreateMemories",                  \
    Engram__V1__BatchCreateMemoriesRequest,                                              \
    engram__v1__batch_create_memories_request__descriptor,                               \
    Engram__V1__BatchCreateMemoriesResponse,                                             \
    engram__v1__batch_create_memories_response__descriptor)                              \
  X(batch_delete_memories, EG_CLIENT_MEMORY_SVC "BatchDeleteMemories",                  \
    Engram__V1__BatchDeleteMemoriesRequest,                                              \
    engram__v1__batch_delete_memories_request__descriptor,                               \
    Engram__V1__BatchDeleteMemoriesResponse,                                             \
    engram__v1__batch_delete_memories_response__descriptor)                              \
  X(delete_user, EG_CLIENT_USER_SVC "DeleteUser",                                        \
    Engram__V1__DeleteUserRequest, engram__v1__delete_user_request__descriptor,          \
    Engram__V1__DeleteUserResponse, engram__v1__delete_user_response__descriptor)        \
  X(get_user_stats, EG_CLIENT_USER_SVC "GetUserStats",                                   \
    Engram__V1__GetUserStatsRequest, engram__v1__get_user_stats_request__descriptor,     \
    Engram__V1__GetUserStatsResponse, engram__v1__get_user_stats_response__descriptor)

#define EG_CLIENT_DECLARE(name, path, Req, req_desc, Resp, resp_desc)             \
  extern const eg_client_method eg_client_method_##name;                           \
  int eg_client_##name(eg_client *c, const Req *req, const eg_client_opts *opts,   \
                       eg_client_status *st, Resp **resp);
EG_CLIENT_METHODS(EG_CLIENT_DECLARE)
#undef EG_CLIENT_DECLARE

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif

#endif
