/*
 * Target: the WAL record decoder and apply (storage/wal.c
 * eg_store_wal_apply), as a replica applies what its primary streams.
 * Input: one WalRecord's bytes, applied in a write txn of a real LMDB env
 * in a scratch directory. The env is opened once per process and every txn
 * is aborted, so the store stays empty (last LSN 0, epoch 1) and small:
 * each input is judged against the same state.
 *
 * Checked: apply answers one of the errors its callers handle; a record
 * that applies is refused when applied again in the same txn (no repeats).
 */
#include <stdio.h>

#include "fuzz.h"
#include "storage/storage.h"

static eg_store *store;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  eg_store_opts o = {.map_size = 64 << 20};
  char err[256] = "";
  eg_err e = eg_store_open(fz_dir(), &o, &store, err, sizeof err);
  if (e) fprintf(stderr, "eg_store_open: %s\n", err);
  FZ_CHECK(e == EG_OK, "eg_store_open");
  FZ_CHECK(eg_store_last_lsn(store) == 0, "a fresh store has LSN 0");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  eg_txn *w = NULL;
  FZ_CHECK(eg_store_write_begin(store, &w) == EG_OK, "write_begin");
  eg_err e = eg_store_wal_apply(w, data, size);
  /* Bad bytes, a gap or an older epoch, a value LMDB refuses, a full map. */
  FZ_CHECK(e == EG_OK || e == EG_ECORRUPT || e == EG_EPRECOND || e == EG_EINVAL ||
               e == EG_EMAPFULL || e == EG_ENOMEM,
           "wal apply returned an unexpected error");
  if (e == EG_OK)
    FZ_CHECK(eg_store_wal_apply(w, data, size) == EG_EPRECOND, "a record applied twice");
  eg_store_write_abort(w);
  return 0;
}
