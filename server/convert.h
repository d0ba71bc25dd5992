/*
 * Between stored records and API messages, sealing and opening the
 * encrypted fields on the way. Everything returned lives in r->arena.
 */
#ifndef EG_SERVER_CONVERT_H
#define EG_SERVER_CONVERT_H

#include "engram/v1/session.pb-c.h"
#include "server/service.h"

/* The shape shared by every generated map<string,string> entry. */
typedef struct {
  ProtobufCMessage base;
  char *key;
  char *value;
} eg_kv_entry;

/* Seals pt[0..len) for (kind, record_id, field) of r's tenant into out,
 * as a format 2 token under the current data key of (r's tenant, user)
 * (server/data_keys.h; user EG_DATA_KEY_TENANT_USER for records without
 * one). The first seal for a user creates its key, a durable key-store
 * commit: seal in prepare, on the worker, not on the writer. On failure
 * r->msg names the record.
 *
 * Erasure is not ordered against prepare: DeleteUser or DeleteTenant (or
 * a rotation retiring a generation) may destroy the key between this seal
 * and the apply that stores the token. So every apply checks, before it
 * writes, each token its prepare sealed with eg_field_sealed_live. */
eg_err eg_field_seal(eg_req *r, const char *user, const char *kind, const char *record_id,
                     const char *field, const void *pt, size_t len, ProtobufCBinaryData *out);
/* eg_field_seal for the writer (an apply) and other threads that must not
 * make a key: under user's current data key only if it exists. A prepare
 * made it (eg_field_key_ready, or its own seals), so a missing or destroyed
 * one means an erasure raced the write: EG_EABORTED, r->msg saying the
 * user's data keys were destroyed meanwhile (retry). A key made on the
 * writer after an erasure would outlive it. */
eg_err eg_field_seal_existing(eg_req *r, const char *user, const char *kind,
                              const char *record_id, const char *field, const void *pt,
                              size_t len, ProtobufCBinaryData *out);
/* An apply's check of a token its prepare sealed for (kind, record_id) of
 * user, before writing it: EG_OK if the data key generation it names is
 * still live (a cache hit normally), or if it is empty or format 1;
 * EG_EABORTED (r->msg: the user's data keys were destroyed meanwhile;
 * retry) if that key was destroyed or is gone since the seal; a key-store
 * error as itself. Run on the writer, after every erasure whose prepare
 * finished before this apply began, so a record it lets through is
 * erased by that erasure's own applies, which come after it. */
eg_err eg_field_sealed_live(eg_req *r, const char *user, const char *kind, const char *record_id,
                            const ProtobufCBinaryData *tok);
/* Makes sure user's current data key exists (creating it now, durably):
 * a prepare whose apply seals calls it, so that the writer finds the key
 * (eg_field_seal_existing) instead of committing a new one. */
eg_err eg_field_key_ready(eg_req *r, const char *user);
/* Opens a token of a record of user into a NUL-terminated arena string:
 * format 1 under the keyring's master key it names, format 2 under user's
 * data key of the generation it names. EG_EERASED (r->msg naming the
 * record and the user) if that key was destroyed (DeleteUser,
 * DeleteTenant); EG_ECORRUPT (r->msg naming the record) if it does not
 * open or its key is missing; EG_ENOMEM. An empty token opens to "". */
eg_err eg_field_open(eg_req *r, const char *user, const char *kind, const char *record_id,
                     const char *field, const ProtobufCBinaryData *tok, char **out, size_t *len);

/* Checks a metadata map (keys non-empty, total key+value bytes within the
 * limit) and packs it as a StringMap into *packed (empty for no entries). */
eg_err eg_metadata_pack(eg_req *r, const char *field, eg_kv_entry **entries, size_t n,
                        ProtobufCBinaryData *packed);

/* Opens the sealed StringMap tok of (kind, record_id, "metadata") of a
 * record of user into *n API map entries (*out; each entry_size bytes, set
 * up by init, then its key and value), all arena-owned. An empty token is
 * no entries. As eg_field_open (EG_EERASED, EG_ECORRUPT, EG_ENOMEM), and
 * EG_ECORRUPT if it does not decode. */
eg_err eg_metadata_open(eg_req *r, const char *user, const char *kind, const char *record_id,
                        const ProtobufCBinaryData *tok, void (*init)(void *entry),
                        size_t entry_size, eg_kv_entry ***out, size_t *n);

/* "<session_id>/<seq>": a message's record id in token contexts. */
const char *eg_message_record_id(eg_req *r, const char *session_id, int64_t seq);

/* A checkpoint's record id in token contexts (with_task: one of its
 * pending writes', task and idx): each part length-prefixed, so no two
 * places encode alike. */
const char *eg_ck_record_id(eg_req *r, const char *user, const char *thread, const char *ns,
                            const char *id, const char *task, int32_t idx, int with_task);
/* A store item's record id in token contexts: its namespace encoding
 * (ns-enc, storage/store_items.h) in hex, ':', its key (hex has no ':',
 * so no two items share one). */
const char *eg_item_record_id(eg_req *r, const uint8_t *ns, size_t ns_len, const char *key);
/* Session as the API shows it (state EXPIRED derived from expire_time). */
eg_err eg_session_to_api(eg_req *r, const eg_session_rec *rec, Engram__V1__Session **out);
/* A message of user's session session_id (user: the session's user_id,
 * whose data key seals its fields). */
eg_err eg_message_to_api(eg_req *r, const char *user, const char *session_id,
                         const eg_message_rec *rec, Engram__V1__Message **out);

/* The state a stored session is in at time now. */
int eg_session_state_at(const eg_session_rec *rec, int64_t now_us);

Google__Protobuf__Timestamp *eg_timestamp(eg_req *r, int64_t us);

/* ---- the reply byte budget ------------------------------------------------ */

/* Bounds a reply by --max-reply-bytes while it is built: a page stops
 * before the item that would exceed it (and says where the next page
 * starts), so a small request never builds a reply a client cannot
 * receive. One item always goes, so paging always moves forward
 * (--max-reply-bytes holds one largest item). */
typedef struct {
  size_t left;  /* bytes still free for items */
  size_t taken; /* items charged so far */
} eg_reply_budget;

/* A budget of --max-reply-bytes less EG_REPLY_RESERVE for the rest of the
 * reply. */
void eg_reply_budget_init(eg_reply_budget *b, const eg_req *r);

/* Charges the bytes of a string field of the reply outside its items
 * (GetContext's summary; at most all that is left). */
void eg_reply_budget_charge(eg_reply_budget *b, size_t len);

/* Charges item as a value of a repeated message field (its packed size plus
 * tag and length). Returns 1 if it fits, or if nothing was charged before
 * it; else 0, nothing charged, and the reply should stop there. */
int eg_reply_budget_take(eg_reply_budget *b, const ProtobufCMessage *item);

#endif
