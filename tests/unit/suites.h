/* Every CUnit suite, listed once. Each test_<module>.c defines its
 * register function, which adds one CU suite named after the module. */
#ifndef EG_TEST_SUITES_H
#define EG_TEST_SUITES_H

#include "crypto/crypto.h"
#include "storage/storage.h"

#define EG_TEST_SUITE_MAP(X) \
  X(crypto)                  \
  X(data_keys)               \
  X(storage)                 \
  X(validate)                \
  X(config)                  \
  X(memory)                  \
  X(memory_store)            \
  X(store_items)             \
  X(wal)                     \
  X(store_env)               \
  X(arena)                   \
  X(replica)                 \
  X(writer)                  \
  X(parking)                 \
  X(auth)                    \
  X(page_token)             \
  X(lifecycle)               \
  X(walarchive)              \
  X(backup)                  \
  X(etcd)                    \
  X(client_tls)              \
  X(coord)                   \
  X(failover)                \
  X(status_details)          \
  X(metrics)                 \
  X(reflection)              \
  X(checkpoints)             \
  X(message_index)           \
  X(message_terms)           \
  X(tokenizer)               \
  X(blind_key)               \
  X(key_retire)              \
  X(key_adopt)               \
  X(tenant_erase)            \
  X(envelope)                \
  X(limits)                  \
  X(log)

#define EG_TEST_DECLARE(name) void eg_test_register_##name(void);
EG_TEST_SUITE_MAP(EG_TEST_DECLARE)
#undef EG_TEST_DECLARE

/* A fresh empty directory under $TMPDIR (or /tmp) for one test; the
 * caller removes it with eg_test_rmdir. Returns a static buffer. */
const char *eg_test_tmpdir(void);
void eg_test_rmdir(const char *dir);

/* eg_store_open on dir with opts (NULL: the defaults), failing the test
 * (CUnit FATAL) with the error on stderr if the open fails. The caller
 * closes the store. */
eg_store *eg_test_store_open(const char *dir, const eg_store_opts *opts);

/* A reader of s, begun (failing the test FATAL if it cannot be); end and
 * free it with eg_test_reader_done. */
eg_txn *eg_test_reader(eg_store *s);
void eg_test_reader_done(eg_txn *r);

/* Test master keys (keyring lines' base64), in no deployment. */
#define EG_TEST_KEY1 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define EG_TEST_KEY2 "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="

/* The keyring text (keyring file format) holds, loaded through an
 * owner-only file in a fresh directory removed after, failing the test
 * (CUnit FATAL) with the load's message on stderr if it does not load.
 * The caller frees it (eg_keyring_free). */
eg_keyring *eg_test_keyring(const char *text);

#endif
