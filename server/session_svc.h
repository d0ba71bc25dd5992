/*
 * Private to the engram.v1.SessionService files (svc_session.c: the method
 * table and every call but one; svc_session_list.c: ListSessions): the
 * helpers both use. What they return lives in r->arena (or is deferred on
 * it) until the call ends; on an error the message is in r->msg.
 * Thread safety: one eg_req, one thread.
 */
#ifndef EG_SERVER_SESSION_SVC_H
#define EG_SERVER_SESSION_SVC_H

#include <stddef.h>
#include <stdint.h>

#include "server/service.h"

/* page_size / max_messages v into *out: negative is an error naming field,
 * 0 the default, above the maximum the maximum. */
eg_err eg_page_size(eg_req *r, const char *field, int32_t v, size_t *out);

/* Frees a SessionRecord (for eg_arena_defer). */
void eg_session_rec_free(void *p);

/* The ListSessions read handler. */
eg_err eg_list_sessions(eg_req *r, const ProtobufCMessage *msg);

#endif
