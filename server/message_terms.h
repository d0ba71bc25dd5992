/*
 * A message's keyword index fields (MessageRecord.index_*,
 * storage/message_index.h) from its plain content: what AppendMessages
 * stores for a new message and the background reindex (server/reindex.h)
 * for an old one, so both index alike.
 */
#ifndef EG_SERVER_MESSAGE_TERMS_H
#define EG_SERVER_MESSAGE_TERMS_H

#include <stddef.h>

#include "crypto/crypto.h"
#include "server/arena.h"
#include "storage/storage.h"

/* Sets rec's index fields for content[0..len) under tokenizer `version`
 * in language lang, for the session's user user_id (kept by pointer):
 * index_version, index_terms (at most EG_MESSAGE_TERMS_MAX, the first
 * distinct words), index_tf, index_words, index_user_id; arrays in a;
 * blind_key_id = key_id, the id ctx is under (server/blind_key.h).
 * Returns EG_OK or EG_ENOMEM (out of memory, or the tokenizer failed). */
eg_err eg_message_index_fields(eg_arena *a, const eg_blind_ctx *ctx, uint32_t key_id,
                               unsigned version, const char *lang, const char *user_id,
                               const char *content, size_t len, eg_message_rec *rec);

#endif
