/* Page tokens: opaque to clients, bound to the request that got them.
 *
 * A token is the base64url (no padding) of a page seal (crypto.h: the
 * field-token layout under the page-token subkey, so every node sharing
 * the keyring opens the others' tokens, and a rotated-out primary key
 * still opens while it is in the ring) of
 *   digest 32 B | position
 * with the context {tenant, "page_token", the request's type name, ""}.
 * digest = SHA-256 of the request packed with page_size and page_token
 * cleared: every other field (filters, order, ids) is bound, so a token
 * used with another request is refused. A request without page_size
 * (SearchMessages pages by top_k) binds every field but page_token. The position's bytes are the
 * listing's own (it checks what they mean after opening).
 */
#ifndef EG_SERVER_PAGE_TOKEN_H
#define EG_SERVER_PAGE_TOKEN_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/crypto.h"
#include "server/service.h"

/* The longest position a listing puts in a token (ListSessions: mode byte
 * + index cursor; ListMemories: kind + importance + memory position; each
 * listing static-asserts that its own fits). */
#define EG_PAGE_POS_MAX 256
#define EG_PAGE_DIGEST_LEN 32
/* Characters of the longest token (base64 without padding). The reply
 * budget's reserve holds it (static assert in page_token.c). */
#define EG_PAGE_TOKEN_MAX ((4 * (EG_TOKEN_OVERHEAD + EG_PAGE_DIGEST_LEN + EG_PAGE_POS_MAX) + 2) / 3)

/* Sets *out to the token for the page after pos[0..n) of request in,
 * which must have a page_token field; allocated in r->arena.
 * EG_OK; EG_ENOMEM when out of memory; EG_EIO with r->msg naming it for
 * n > EG_PAGE_POS_MAX (a listing's bug: the static asserts beside each
 * listing's position rule it out). Thread safety: any thread. */
eg_err eg_page_token_seal(eg_req *r, const ProtobufCMessage *in, const uint8_t *pos, size_t n,
                          char **out) __attribute__((warn_unused_result));

/* Opens in's page_token (non-empty) into pos (cap bytes) and sets *n.
 * EG_OK; EG_EINVAL with r->msg "page_token: ..." when it is not a token
 * this cluster issued to this tenant for this listing (garbled,
 * truncated, sealed under a key no longer in the ring, another tenant's
 * or another method's) or was issued for a request with other fields;
 * EG_ENOMEM. */
eg_err eg_page_token_open(eg_req *r, const ProtobufCMessage *in, uint8_t *pos, size_t cap,
                          size_t *n) __attribute__((warn_unused_result));

#endif
