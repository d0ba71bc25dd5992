/*
 * Private to the engram.v1.SessionService files (svc_session.c: the method
 * table and every call but two; svc_session_list.c: ListSessions;
 * svc_message_search.c: SearchMessages): the
 * helpers both use (and UserService/ExportUser, which pages messages as
 * ListMessages does). What they return lives in r->arena (or is deferred on
 * it) until the call ends; on an error the message is in r->msg.
 * Thread safety: one eg_req, one thread.
 */
#ifndef EG_SERVER_SESSION_SVC_H
#define EG_SERVER_SESSION_SVC_H

#include <stddef.h>
#include <stdint.h>

#include "engram/v1/session.pb-c.h"
#include "server/service.h"

/* page_size / max_messages v into *out: negative is an error naming field,
 * 0 the default, above the maximum the maximum. */
eg_err eg_page_size(eg_req *r, const char *field, int32_t v, size_t *out);

/* Frees a SessionRecord (for eg_arena_defer). */
void eg_session_rec_free(void *p);
/* Frees a MessageRecord (for eg_arena_defer). */
void eg_message_rec_free(void *p);

/* One page of sid's messages, as ListMessages pages them. */
typedef struct {
  Engram__V1__Message **msgs; /* the arena's */
  size_t n;
  int more;          /* a message past the page (count or reply budget) exists */
  uint64_t next_seq; /* with more: where the next page starts */
} eg_message_page;

/* Reads through t the messages of session s (stored, of r's tenant)
 * from seq start, ascending (descending: from start down), at most want
 * (> 0) and within the --max-reply-bytes budget (one message always goes),
 * opened (under s's user's data key) as the API shows them, into *out.
 * The records and the page live in r's arena (the records decoded into it
 * too: eg_arena_pb_allocator). Returns EG_OK, EG_ECORRUPT or EG_EERASED
 * (r->msg naming the message) if one does not open, EG_ENOMEM, or a
 * storage error. */
eg_err eg_messages_page(eg_req *r, eg_txn *t, const eg_session_rec *s, uint64_t start,
                        int descending, size_t want, eg_message_page *out);

/* The ListSessions read handler. */
eg_err eg_list_sessions(eg_req *r, const ProtobufCMessage *msg);

/* The SearchMessages read handler (svc_message_search.c). */
eg_err eg_search_messages(eg_req *r, const ProtobufCMessage *msg);

#endif
