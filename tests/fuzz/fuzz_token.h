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

/* The data key format 2 tokens are opened under (a test value). */
static const uint8_t fz_token_data_key[EG_KEY_LEN] = {
    0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
    0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f};

#endif
