/*
 * crypto: keyring, field tokens (seal/open), token hashes.
 *
 * Knows nothing of LMDB or gRPC. Every function returns eg_err.
 *
 * A field token (this header is its reference; docs/architecture.md section 4):
 *   0x01 | key_id u32 BE | issued_at u64 BE (unix s) | nonce 24 B | ciphertext | tag 16 B
 * AEAD = XChaCha20-Poly1305-IETF with a per-purpose subkey derived from the
 * master key by crypto_kdf; associated data = the 37-byte header || context,
 * where the context binds tenant, record kind, record id and field name
 * (each length-prefixed, so no two contexts encode alike).
 */
#ifndef EG_CRYPTO_H
#define EG_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define EG_TOKEN_VERSION 0x01
#define EG_TOKEN_HEADER_LEN 37 /* 1 + 4 + 8 + 24 */
#define EG_TOKEN_TAG_LEN 16
#define EG_TOKEN_OVERHEAD (EG_TOKEN_HEADER_LEN + EG_TOKEN_TAG_LEN)
#define EG_KEY_LEN 32
/* Longest keyring line `engram keygen` prints, with its newline and NUL. */
#define EG_KEYGEN_LINE_MAX 80

/* What a token is bound to. All four strings are required (may be ""). */
typedef struct {
  const char *tenant;
  const char *kind;      /* "session", "message", ... */
  const char *record_id; /* e.g. session id, or "session_id/seq" */
  const char *field;     /* "content", "metadata", "summary" */
} eg_field_ctx;

typedef struct eg_keyring eg_keyring;

/* Initialises libsodium and turns core dumps off (keys must not land in a
 * core file). Call once before anything else here. Thread safety: call from
 * main before starting threads. */
eg_err eg_crypto_init(void);

/* Parses a keyring file:
 *   primary <id>
 *   key <id> <base64 of 32 bytes>      (up to EG_KEYRING_KEYS_MAX, ids 1..2^32-1, unique)
 * Blank lines and lines starting with '#' are ignored. Only printable
 * ASCII, tab and CR/LF may appear. The file must be readable by its owner
 * alone (no bit of mode 077): the message then says the chmod to run. Keys
 * are kept in sodium_malloc'd memory and never logged. On error returns
 * EG_EINVAL and writes a reason naming the line into err (never the key
 * material).
 * *out is set only on success. */
eg_err eg_keyring_load(const char *path, eg_keyring **out, char *err, size_t errlen);

/* Creates `path` (mode 0600, O_EXCL) holding a fresh random key with id 1
 * as the primary. EG_EEXIST if the file exists, EG_EIO on other failures. */
eg_err eg_keyring_create(const char *path);

/* Zeroes and frees the keys. NULL is fine. */
void eg_keyring_free(eg_keyring *kr);

/* ---- key fingerprint --------------------------------------------------------
 * What a data dir records of the keys its data is sealed with, so a missing
 * or wrong keyring is refused at start instead of reading DATA_LOSS. Per
 * key: its id and a check value, the keyed BLAKE2b (16 bytes) of a fixed
 * label under a crypto_kdf subkey of its own; never the key, and nothing a
 * reader of the data could use to find it. Layout: 0x01 | per key
 * (id u32 BE | check value). */
#define EG_KEYRING_KEYS_MAX 200 /* keys one keyring may hold */
/* The store's named meta value (eg_store_meta_get/put) that records it;
 * a primary also sends it to its replicas at the start of each stream. */
#define EG_META_KEY_FINGERPRINT "key_fingerprint"
#define EG_KEY_CHECK_LEN 16
#define EG_KEYRING_FINGERPRINT_MAX (1 + EG_KEYRING_KEYS_MAX * (4 + EG_KEY_CHECK_LEN))

/* Writes the fingerprint of every key in kr into out (at least
 * EG_KEYRING_FINGERPRINT_MAX bytes); returns its length. */
size_t eg_keyring_fingerprint(const eg_keyring *kr, uint8_t *out);

/* Checks kr against a fingerprint recorded earlier: EG_OK when every key id
 * it names is in kr with the same check value; *has_new is then 1 if kr
 * holds ids it does not name (record eg_keyring_fingerprint(kr) again).
 * EG_EPRECOND naming the first key that is absent or differs, EG_ECORRUPT
 * for a malformed fingerprint, with the reason in err. */
eg_err eg_keyring_fingerprint_check(const eg_keyring *kr, const uint8_t *fp, size_t len,
                                    int *has_new, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The key ids a recorded fingerprint names, in its order, into ids[0..cap)
 * (*n of them). EG_ECORRUPT for a malformed fingerprint; EG_ELIMIT if it
 * names more than cap. */
eg_err eg_keyring_fingerprint_ids(const uint8_t *fp, size_t len, uint32_t *ids, size_t cap,
                                  size_t *n);

/* Removes id's entry from the fingerprint fp[0..len) in place (a key
 * retired: server/key_retire.h); returns the new length (len when fp does
 * not name id, or is malformed). */
size_t eg_keyring_fingerprint_drop(uint8_t *fp, size_t len, uint32_t id);

/* 1 if kr holds the key with this id. Thread safety: safe on a shared
 * keyring. */
int eg_keyring_has(const eg_keyring *kr, uint32_t id);

/* The key id new tokens are sealed with. */
uint32_t eg_keyring_primary_id(const eg_keyring *kr);

/* Writes "key <id> <base64 of 32 fresh random bytes>\n" into line
 * (at least EG_KEYGEN_LINE_MAX bytes). */
eg_err eg_keyring_keygen_line(uint32_t id, char *line, size_t linelen);

/* Length of the token that sealing plen bytes gives. */
static inline size_t eg_token_len(size_t plen) { return plen + EG_TOKEN_OVERHEAD; }

/* Seals pt[0..plen) under the primary key into out, which must hold
 * eg_token_len(plen) bytes. Thread safety: safe on a shared keyring. */
eg_err eg_token_seal(const eg_keyring *kr, const eg_field_ctx *ctx,
                     const uint8_t *pt, size_t plen, uint8_t *out);

/* The id of the key a token of toklen bytes names, into *key_id: EG_OK,
 * or EG_ECORRUPT if it is too short to hold a header or is of another
 * version. Reads the layout only; nothing is checked cryptographically. */
eg_err eg_token_key_id(const uint8_t *tok, size_t toklen, uint32_t *key_id);

/* Opens a token into out (at least toklen - EG_TOKEN_OVERHEAD bytes) and
 * sets *plen. EG_ECORRUPT if the token is malformed, names an unknown key,
 * was tampered with, or was sealed for another context; EG_ENOMEM if it
 * could not be checked for want of memory. On failure out is zeroed.
 * Thread safety: safe on a shared keyring. */
eg_err eg_token_open(const eg_keyring *kr, const eg_field_ctx *ctx,
                     const uint8_t *tok, size_t toklen, uint8_t *out, size_t *plen)
    __attribute__((warn_unused_result));

/* ---- format 2: tokens under a user's data key (server/data_keys.h) --------
 *   0x02 | generation u32 BE | issued_at u64 BE | nonce 24 B | ciphertext | tag 16 B
 * Same length as format 1 (eg_token_len); the AEAD key is the data key of
 * that generation, used for nothing else; associated data as format 1
 * (header || context). Format 1 tokens (a master key's field subkey) stay
 * readable: a store written before envelope keys opens as it is. */
#define EG_TOKEN_VERSION_DEK 0x02
eg_err eg_token_seal_dek(const uint8_t key[EG_KEY_LEN], uint32_t gen, const eg_field_ctx *ctx,
                         const uint8_t *pt, size_t plen, uint8_t *out);
eg_err eg_token_open_dek(const uint8_t key[EG_KEY_LEN], const eg_field_ctx *ctx,
                         const uint8_t *tok, size_t toklen, uint8_t *out, size_t *plen)
    __attribute__((warn_unused_result));
/* The format byte of a token (EG_TOKEN_VERSION or EG_TOKEN_VERSION_DEK):
 * EG_ECORRUPT if it is too short for a header or of an unknown format. */
eg_err eg_token_version(const uint8_t *tok, size_t toklen, uint8_t *version);
/* The data key generation a format 2 token names, into *gen: EG_OK, or
 * EG_ECORRUPT if it is too short for a header or of another format.
 * Reads the layout only (as eg_token_key_id does for format 1). */
eg_err eg_token_generation(const uint8_t *tok, size_t toklen, uint32_t *gen);

/* ---- key wrapping (crypto/wrap.c) --------------------------------------------
 * A data key sealed under a master key's key-wrapping subkey (crypto_kdf,
 * a purpose of its own), bound to (tenant, user, generation):
 *   0x01 | master key id u32 BE | nonce 24 B | ciphertext 32 B | tag 16 B */
#define EG_WRAPPED_KEY_LEN (1 + 4 + 24 + EG_KEY_LEN + 16)
eg_err eg_key_wrap(const eg_keyring *kr, const char *tenant, const char *user, uint32_t gen,
                   const uint8_t key[EG_KEY_LEN], uint8_t out[EG_WRAPPED_KEY_LEN]);
/* EG_ECORRUPT: malformed, its master key not in kr, or tampered. */
eg_err eg_key_unwrap(const eg_keyring *kr, const char *tenant, const char *user, uint32_t gen,
                     const uint8_t in[EG_WRAPPED_KEY_LEN], uint8_t key[EG_KEY_LEN])
    __attribute__((warn_unused_result));
/* The id of the master key a wrapped key is sealed under. */
uint32_t eg_wrapped_key_master_id(const uint8_t in[EG_WRAPPED_KEY_LEN]);

/* Page tokens (server/page_token.c): the layout of a field token, sealed
 * under a subkey of their own (a client holds them; stored fields' key
 * never seals what a client sees). Same contracts as eg_token_seal and
 * eg_token_open. */
eg_err eg_page_seal(const eg_keyring *kr, const eg_field_ctx *ctx, const uint8_t *pt, size_t plen,
                    uint8_t *out);
eg_err eg_page_open(const eg_keyring *kr, const eg_field_ctx *ctx, const uint8_t *tok,
                    size_t toklen, uint8_t *out, size_t *plen) __attribute__((warn_unused_result));

/* Writes the lowercase hex SHA-256 of s (64 chars + NUL) into hex. */
void eg_sha256_hex(const char *s, size_t len, char hex[65]);

/* Incremental SHA-256 (snapshot and checksum digests). The state is
 * opaque; init before update, final once. */
typedef struct {
  _Alignas(16) unsigned char opaque[128];
} eg_sha256;
void eg_sha256_init(eg_sha256 *h);
void eg_sha256_update(eg_sha256 *h, const void *p, size_t n);
void eg_sha256_final(eg_sha256 *h, uint8_t out[32]);

/* Constant-time equality of two equal-length buffers: 1 if equal. */
int eg_crypto_equal(const void *a, const void *b, size_t len);

/* Zeroes n bytes at p in a way the compiler keeps (key material). */
void eg_memzero(void *p, size_t n);

/* Fills buf with n random bytes. */
void eg_random_bytes(void *buf, size_t n);

/* ---- blind index (crypto/blind.c) ------------------------------------------
 * A blind-index token is the keyed BLAKE2b of u8len tenant | word under the
 * blind subkey of one master key, truncated to 64 bits: equal words of one
 * tenant give equal tokens (that is the leakage, docs/security.md), nothing
 * else is learnt without the key. Which master key: the store's blind-index
 * key id (server/blind_key.h), the keyring's lowest id until a blind-index
 * rotation moves it; adding a key or moving `primary` does not. */
typedef struct {
  /* A hash state after key and tenant, copied to an aligned state per use,
   * so the context itself needs no particular alignment. */
  unsigned char opaque[512];
} eg_blind_ctx;

/* Prepares ctx for tenant's tokens under the blind subkey of key key_id.
 * EG_EINVAL when kr holds no key key_id, or for a tenant longer than 255
 * bytes. Thread safety: safe on a shared keyring. */
eg_err eg_blind_begin_id(const eg_keyring *kr, uint32_t key_id, const char *tenant,
                         eg_blind_ctx *ctx);
/* eg_blind_begin_id under eg_keyring_blind_key_id(kr) (EG_EINVAL for an
 * empty keyring): for a store whose blind-index key id was never moved. */
eg_err eg_blind_begin(const eg_keyring *kr, const char *tenant, eg_blind_ctx *ctx);
/* The token of word[0..len). Thread safety: ctx is only read. */
uint64_t eg_blind_word(const eg_blind_ctx *ctx, const void *word, size_t len);
/* Wipes ctx (it is derived from the key). */
void eg_blind_end(eg_blind_ctx *ctx);
/* The keyring's lowest key id: the blind-index key id of a store that
 * never rotated it (0: empty keyring). */
uint32_t eg_keyring_blind_key_id(const eg_keyring *kr);

#endif
