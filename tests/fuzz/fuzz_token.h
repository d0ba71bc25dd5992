/* The keyring and context fuzz_token opens its inputs under, shared with
 * the corpus generator (gen_corpus.c) that seals the seed tokens. The keys
 * are test values, in no deployment. */
#ifndef EG_FUZZ_TOKEN_H
#define EG_FUZZ_TOKEN_H

#include "crypto/crypto.h"

static const char fz_token_keyring[] =
    "primary 2\n"
    "key 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
    "key 2 ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\n";

static const eg_field_ctx fz_token_ctx = {"acme", "message", "s1/1", "content"};

#endif
