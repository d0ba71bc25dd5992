#include "server/page_token.h"

#include <sodium.h>
#include <string.h>

#include "server/config.h"
#include "server/validate.h"

/* The next_page_token field goes out beside the page's items: the reply
 * budget's reserve must hold it (tag, 2-byte length, the token). */
_Static_assert(1 + 2 + EG_PAGE_TOKEN_MAX <= EG_REPLY_RESERVE, "a page token fits the reserve");

#define EG_PAGE_SEALED_MAX (EG_TOKEN_OVERHEAD + EG_PAGE_DIGEST_LEN + EG_PAGE_POS_MAX)

/* The digest of in without its page_size (if it has one) and page_token: a
 * shallow copy with those two cleared, packed. NULL-free: -1 when out of
 * memory. */
static int eg_page_digest(eg_req *r, const ProtobufCMessage *in, uint8_t out[EG_PAGE_DIGEST_LEN]) {
  const ProtobufCMessageDescriptor *d = in->descriptor;
  const ProtobufCFieldDescriptor *size = protobuf_c_message_descriptor_get_field_by_name(d, "page_size");
  const ProtobufCFieldDescriptor *tok = protobuf_c_message_descriptor_get_field_by_name(d, "page_token");
  char *copy = eg_arena_alloc(r->arena, d->sizeof_message);
  if (!copy || !tok) return -1;
  memcpy(copy, in, d->sizeof_message);
  if (size) *(int32_t *)(copy + size->offset) = 0;
  *(const char **)(copy + tok->offset) = ""; /* proto3: an empty string is not packed */
  size_t len = protobuf_c_message_get_packed_size((const ProtobufCMessage *)copy);
  uint8_t *packed = eg_arena_alloc(r->arena, len ? len : 1);
  if (!packed) return -1;
  protobuf_c_message_pack((const ProtobufCMessage *)copy, packed);
  eg_sha256 h;
  eg_sha256_init(&h);
  eg_sha256_update(&h, packed, len);
  eg_sha256_final(&h, out);
  return 0;
}

static eg_field_ctx eg_page_ctx(const eg_req *r, const ProtobufCMessage *in) {
  return (eg_field_ctx){.tenant = r->tenant, .kind = "page_token",
                        .record_id = in->descriptor->name, .field = ""};
}

eg_err eg_page_token_seal(eg_req *r, const ProtobufCMessage *in, const uint8_t *pos, size_t n,
                          char **out) {
  uint8_t pt[EG_PAGE_DIGEST_LEN + EG_PAGE_POS_MAX], sealed[EG_PAGE_SEALED_MAX];
  *out = NULL;
  if (n > EG_PAGE_POS_MAX) {
    snprintf(r->msg, sizeof r->msg, "page_token: a position of %zu bytes, more than the %d a "
             "token holds", n, EG_PAGE_POS_MAX);
    return EG_EIO;
  }
  if (eg_page_digest(r, in, pt) != 0) return EG_ENOMEM;
  memcpy(pt + EG_PAGE_DIGEST_LEN, pos, n);
  eg_field_ctx ctx = eg_page_ctx(r, in);
  size_t len = eg_token_len(EG_PAGE_DIGEST_LEN + n);
  eg_err e = eg_page_seal(eg_srv_keys(r->srv), &ctx, pt, EG_PAGE_DIGEST_LEN + n, sealed);
  if (e != EG_OK) return e;
  size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  char *s = eg_arena_alloc(r->arena, cap);
  if (!s) return EG_ENOMEM;
  *out = sodium_bin2base64(s, cap, sealed, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  return EG_OK;
}

static eg_err eg_page_bad(eg_req *r, const char *why) {
  return eg_invalid(r->msg, sizeof r->msg, "page_token", "%s", why);
}

eg_err eg_page_token_open(eg_req *r, const ProtobufCMessage *in, uint8_t *pos, size_t cap,
                          size_t *n) {
  const char *tok = *(const char *const *)((const char *)in +
      protobuf_c_message_descriptor_get_field_by_name(in->descriptor, "page_token")->offset);
  uint8_t sealed[EG_PAGE_SEALED_MAX], pt[EG_PAGE_SEALED_MAX], digest[EG_PAGE_DIGEST_LEN];
  size_t len, plen;
  /* Checked before decoding: the decoder's work and the buffer stay bounded. */
  if (strlen(tok) > EG_PAGE_TOKEN_MAX ||
      sodium_base642bin(sealed, sizeof sealed, tok, strlen(tok), NULL, &len, NULL,
                        sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
    return eg_page_bad(r, "not a token this server issued (garbled or truncated)");
  eg_field_ctx ctx = eg_page_ctx(r, in);
  eg_err e = eg_page_open(eg_srv_keys(r->srv), &ctx, sealed, len, pt, &plen);
  if (e == EG_ENOMEM) return e;
  if (e != EG_OK || plen < EG_PAGE_DIGEST_LEN)
    return eg_page_bad(r, "not a token issued to this caller for this listing (garbled, "
                          "truncated, another tenant's or method's, or its key left the keyring)");
  if (eg_page_digest(r, in, digest) != 0) return EG_ENOMEM;
  if (!eg_crypto_equal(digest, pt, EG_PAGE_DIGEST_LEN))
    return eg_page_bad(r, "issued for a request with other filters or order; page with the "
                          "request the token came with, changing only page_size");
  if (plen - EG_PAGE_DIGEST_LEN > cap) return eg_page_bad(r, "not a position of this listing");
  *n = plen - EG_PAGE_DIGEST_LEN;
  memcpy(pos, pt + EG_PAGE_DIGEST_LEN, *n);
  return EG_OK;
}
