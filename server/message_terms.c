/* A message's keyword index fields (message_terms.h). */
#include "server/message_terms.h"

#include "server/text_terms.h"

eg_err eg_message_index_fields(eg_arena *a, const eg_blind_ctx *ctx, uint32_t key_id,
                               unsigned version, const char *lang, const char *user_id,
                               const char *content, size_t len, eg_message_rec *rec) {
  uint64_t *terms = EG_ARENA_ARRAY(a, uint64_t, EG_MESSAGE_TERMS_MAX);
  uint8_t *tf = EG_ARENA_ARRAY(a, uint8_t, EG_MESSAGE_TERMS_MAX);
  size_t n;
  uint32_t words;
  if (!terms || !tf) return EG_ENOMEM;
  eg_err e = eg_text_terms(ctx, version, lang, content, len, terms, tf, EG_MESSAGE_TERMS_MAX, &n,
                           &words, NULL);
  if (e != EG_OK) return e;
  rec->index_version = version;
  rec->index_terms = terms;
  rec->n_index_terms = n;
  rec->index_tf = (ProtobufCBinaryData){.len = n, .data = tf};
  rec->index_words = words;
  rec->index_user_id = (char *)user_id;
  rec->blind_key_id = key_id;
  return EG_OK;
}
