/* eg_index_leaves DATA_DIR [RECENT_MESSAGES [POSTINGS_PER_MESSAGE]]
 *
 * How many message_terms leaf pages writing the postings of B messages in
 * one transaction dirties, per message, for B from 1 to 30,000: the number
 * that says whether batching the index writes (a bigger commit, or a
 * deferred indexer folding many appends at once) would cut the pages an
 * indexed append writes (docs/performance.md, "Message indexing on
 * append"). It reads a store (read-only, beside a running engramd too),
 * orders every posting by its key (storage/message_index.h: tenant | term |
 * user | create time | session | seq), takes leaf = rank / (entries per
 * leaf) from the DB's own stats, and for windows of B messages among the
 * newest RECENT_MESSAGES (default 15,000; one window at least) by create
 * time, counts the distinct leaves their postings fall in. Branch pages,
 * splits and the other DBs are not counted; a message is taken as
 * POSTINGS_PER_MESSAGE (default 24, bench/lg_text.h's 256 B text) postings
 * of one create time. */
#include <errno.h>
#include <lmdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
  uint64_t create_us;
  uint32_t leaf;
} posting;

static int by_create_desc(const void *a, const void *b) {
  const posting *x = a, *y = b;
  return x->create_us < y->create_us ? 1 : x->create_us > y->create_us ? -1 : 0;
}

static int by_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static uint64_t be64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}

/* The create time in a posting key, or 0 when the key is not one. */
static int key_create_us(const MDB_val *k, uint64_t *out) {
  const uint8_t *b = k->mv_data;
  size_t n = k->mv_size, o = 0;
  if (o >= n) return 0;
  o += 1 + b[o] + 8; /* tenant, term */
  if (o >= n) return 0;
  o += 1 + b[o]; /* user */
  if (o + 8 > n) return 0;
  *out = be64(b + o);
  return 1;
}

static int fail(const char *what, int rc) {
  fprintf(stderr, "eg_index_leaves: %s: %s\n", what, mdb_strerror(rc));
  return 1;
}

/* Prints, for each batch size, the leaves the postings of that many
 * messages fall in, per message. */
static int report(MDB_txn *txn, MDB_dbi dbi, double recent, double per_msg) {
  MDB_cursor *c;
  MDB_val k, v;
  MDB_stat st;
  int rc = mdb_stat(txn, dbi, &st), ret = 1;
  if (!rc) rc = mdb_cursor_open(txn, dbi, &c);
  if (rc) return fail("message_terms", rc);
  posting *p = malloc((st.ms_entries + 1) * sizeof *p);
  uint32_t *leaves = malloc((st.ms_entries + 1) * sizeof *leaves);
  if (!st.ms_entries || !st.ms_leaf_pages) {
    fail("message_terms", MDB_NOTFOUND);
    goto out;
  }
  if (!p || !leaves) {
    fail("memory", ENOMEM);
    goto out;
  }
  double per_leaf = (double)st.ms_entries / (double)st.ms_leaf_pages;
  size_t n = 0;
  for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); !rc && n < st.ms_entries;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    if (!key_create_us(&k, &p[n].create_us)) {
      fail("a key not a posting", MDB_CORRUPTED);
      goto out;
    }
    p[n].leaf = (uint32_t)((double)n / per_leaf);
    n++;
  }
  qsort(p, n, sizeof *p, by_create_desc);
  printf("message_terms: %zu postings in %zu leaves (%.1f a leaf), depth %u\n", n,
         (size_t)st.ms_leaf_pages, per_leaf, st.ms_depth);
  static const long batches[] = {1, 30, 300, 1000, 3000, 10000, 30000};
  size_t span = (size_t)(recent * per_msg);
  for (size_t i = 0; i < sizeof batches / sizeof *batches; i++) {
    size_t m = (size_t)((double)batches[i] * per_msg), windows = 0;
    double sum = 0;
    if (m > n) break;
    /* Windows of the newest postings: every one inside the recent span, and
     * at least one. */
    for (size_t start = 0; start + m <= n && (!windows || start + m <= span); start += m) {
      for (size_t j = 0; j < m; j++) leaves[j] = p[start + j].leaf;
      qsort(leaves, m, sizeof *leaves, by_u32);
      size_t distinct = 1;
      for (size_t j = 1; j < m; j++) distinct += leaves[j] != leaves[j - 1];
      sum += (double)distinct / (double)batches[i];
      windows++;
    }
    printf("%6ld messages a txn: %5.2f leaves a message (%zu windows)\n", batches[i],
           sum / (double)windows, windows);
  }
  ret = 0;
out:
  free(leaves);
  free(p);
  mdb_cursor_close(c);
  return ret;
}

int main(int argc, char **argv) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  if (argc < 2 || argc > 4) {
    fputs("usage: eg_index_leaves DATA_DIR [RECENT_MESSAGES [POSTINGS_PER_MESSAGE]]\n", stderr);
    return 2;
  }
  double recent = argc > 2 ? atof(argv[2]) : 15000, per_msg = argc > 3 ? atof(argv[3]) : 24;
  if (recent < 1 || per_msg < 1) return fail("RECENT_MESSAGES and POSTINGS_PER_MESSAGE", EINVAL);
  int rc = mdb_env_create(&env), ret = 1;
  if (rc) return fail(argv[1], rc);
  if ((rc = mdb_env_set_maxdbs(env, 64)) || (rc = mdb_env_open(env, argv[1], MDB_RDONLY, 0)))
    fail(argv[1], rc);
  else if ((rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)))
    fail(argv[1], rc);
  else {
    if ((rc = mdb_dbi_open(txn, "message_terms", 0, &dbi)))
      fail("message_terms", rc);
    else
      ret = report(txn, dbi, recent, per_msg);
    mdb_txn_abort(txn);
  }
  mdb_env_close(env);
  return ret;
}
