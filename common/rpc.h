/*
 * Internal RPC helpers shared by engramd's transport, replica/ and
 * libengram itself: the pieces of the gRPC C core the public client API
 * (engram.h) hides. Not installed and not for applications; implemented
 * in client/lib/rpc.c (the accessors of eg_client in client.c).
 */
#ifndef EG_COMMON_RPC_H
#define EG_COMMON_RPC_H

#include <stdint.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <protobuf-c/protobuf-c.h>

#include "engram.h"

/* One unary call in flight, for callers that drive their own completion
 * queue (engramd forwarding a replica's write to its primary; the client's
 * own blocking call). */
typedef struct {
  grpc_call *call;
  grpc_metadata md[2]; /* authorization, engram-min-lsn */
  size_t nmd;
  grpc_byte_buffer *send;  /* the request: the caller's, not destroyed here */
  grpc_byte_buffer *recv;  /* the response; NULL unless one came */
  grpc_metadata_array initial, trailing;
  grpc_status_code code;
  grpc_slice details;
} eg_client_exchange;

/* Starts `path` on ch: sends req (with authorization, the whole metadata
 * value, and engram-min-lsn when min_lsn != 0; either may be absent) and
 * receives the answer into x; the batch completes with tag on cq. Returns
 * 0, or -1 if it could not start (then nothing completes). Whatever it
 * returns, end with eg_client_exchange_end once nothing is pending.
 * The authorization value is copied into x and wiped at the end. */
int eg_client_exchange_start(eg_client_exchange *x, grpc_channel *ch, grpc_completion_queue *cq,
                             const char *path, gpr_timespec deadline, grpc_byte_buffer *req,
                             const char *authorization, uint64_t min_lsn, void *tag);
/* The engram-lsn the answer carried, or 0. */
uint64_t eg_client_exchange_lsn(const eg_client_exchange *x);
/* Releases x (and x->recv unless the caller took it and set it to NULL). */
void eg_client_exchange_end(eg_client_exchange *x);

/* The first four ops of every Engram client call: send the initial
 * metadata md[0..nmd) and the request req, close the sending side, and
 * receive the server's initial metadata into initial. */
void eg_client_start_ops(grpc_op ops[4], grpc_metadata *md, size_t nmd, grpc_byte_buffer *req,
                         grpc_metadata_array *initial);

/* The call metadata of every Engram client call: authorization (the whole
 * value) when not NULL or empty, engram-min-lsn when min_lsn != 0, as
 * secret slices (below) in md[0..*n). 0, or -1 when memory runs out (the
 * first *n entries are still set: unref their values). */
int eg_client_call_metadata(grpc_metadata md[2], size_t *n, const char *authorization,
                            uint64_t min_lsn);

/* A copy of value as a slice that is wiped (then freed) once its last
 * reference goes: gRPC may hold metadata after a call returns, and a value
 * may be a bearer token. 0 and *out set, or -1 when memory runs out. */
int eg_client_secret_slice(const char *value, grpc_slice *out);

/* The value of metadata `key` in md as a u64 (the engram-lsn and
 * engram-min-lsn headers): 1 and *out set, 0 if absent, -1 if it is not
 * a decimal u64. */
int eg_client_metadata_u64(const grpc_metadata_array *md, const char *key, uint64_t *out);

/* Copies the trailing metadata of a failed call that the status carries
 * (engram-request-id, grpc-status-details-bin) into st. */
void eg_client_status_trailers(eg_client_status *st, const grpc_metadata_array *trailing);

/* A message as a byte buffer (the caller destroys it), and back: NULL if
 * bb is NULL or does not decode as desc. */
grpc_byte_buffer *eg_client_pack(const ProtobufCMessage *m);
ProtobufCMessage *eg_client_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb);

/* The channel of an eg_client that is not an Engram server's (the etcd
 * client's), or that dials over TLS (engramd to its primary and to etcd).
 * eg_client_new is eg_client_new_opts with {EG_CLIENT_MAX_RESPONSE_BYTES,
 * 0, NULL}. */
typedef struct {
  int max_response_bytes;       /* a larger response fails RESOURCE_EXHAUSTED */
  int max_reconnect_backoff_ms; /* 0: gRPC's own (up to 2 minutes) */
  const eg_client_tls *tls;     /* NULL: plaintext; else read as eg_client_new_tls does */
} eg_client_channel_opts;
/* eg_client_new_tls (same returns, same thread safety) on a channel with
 * o's settings. */
eg_client *eg_client_new_opts(const char *target, const char *token,
                              const eg_client_channel_opts *o, char *err, size_t errlen);

/* The PEM file at path, whole and NUL-terminated, for the caller to wipe
 * (it may be a private key) and free: the one reader of TLS files, client
 * and server (server/tls.c), which parse it each their own way. NULL, with
 * "<what> <path>: why" in err and errno set, when it cannot be opened or
 * read, is empty, is larger than EG_CLIENT_TLS_PEM_MAX or holds a NUL
 * byte. */
char *eg_pem_read(const char *what, const char *path, char *err, size_t errlen);

/* Channel credentials from tls's PEM files (each read now; the
 * credentials keep copies): the release is the caller's. NULL with why in
 * err when eg_client_new_tls documents it. Call grpc_init first. */
grpc_channel_credentials *eg_client_tls_credentials(const eg_client_tls *tls, char *err,
                                                    size_t errlen);

/* The one place a client channel is made (libengram, the CLI, engramd's
 * replica, forwarding, promotion probe and etcd client): target with the
 * nargs args, over plaintext when tls is NULL, else over TLS from tls's
 * PEM files (the server name override a channel arg of its own). NULL
 * with why in err (and errno EINVAL, or ENOMEM) when eg_client_new_tls
 * documents it. Call grpc_init first. */
grpc_channel *eg_client_channel_create(const char *target, const eg_client_tls *tls,
                                       const grpc_arg *args, size_t nargs, char *err,
                                       size_t errlen);

/* The client's channel, for streaming calls (valid until eg_client_free). */
grpc_channel *eg_client_channel(eg_client *c);
/* The client's `authorization` value ("Bearer <token>"), or NULL. */
const char *eg_client_authorization(const eg_client *c);

#endif
