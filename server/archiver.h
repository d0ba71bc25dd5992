/*
 * The WAL archiver (--wal-archive-dir): a thread that copies every
 * committed WAL record, in LSN order, into segment files
 * (backup/walarchive.h), woken by commits. It copies a batch out of a
 * read txn and writes it after the txn ends (a slow archive disk holds no
 * snapshot). It continues from the archive's tip across restarts and
 * crashes (a torn tail is cut), starts a new segment at every epoch
 * change, and says loudly when the log no longer holds a record it needs
 * (the archive then has a gap, which a restore refuses to cross). After a
 * failed write or fsync it trusts only what an fsync made durable. It
 * refuses, for good and without changing it, a dir whose tip is not this
 * node's history (a restored node on its old archive dir). Until a record
 * is written and fsync'd it holds log retention (eg_archiver_hold), up to
 * --wal-retain-cap.
 */
#ifndef EG_SERVER_ARCHIVER_H
#define EG_SERVER_ARCHIVER_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "server/config.h"
#include "storage/storage.h"

typedef struct eg_archiver eg_archiver;

/* With cfg->wal_archive_dir set: creates the dir (0700) if missing, locks
 * its LOCK file for the archiver's life, and starts the thread, whose
 * first turn finds where the archive stands (cutting a torn tail); every
 * record is held until then. *out is NULL when archiving is off. Call
 * before the writer takes writes, so no record is trimmed before it is
 * archived. EG_EPRECOND (err naming the holder's pid) if another process
 * archives into the dir; EG_EIO if the dir cannot be made or locked,
 * EG_EUNAVAIL if the thread cannot start; an archive that cannot be read
 * yet is retried by the thread (retention held meanwhile). */
eg_err eg_archiver_start(const eg_config *cfg, eg_store *store, eg_archiver **out, char *err,
                         size_t errlen);
/* Archives what is committed, closes the open segment, joins the thread,
 * frees. Waits at most EG_ARCHIVE_STOP_MS (archiver.c, 10 s) for that:
 * past it (a stuck archive disk) it says so and returns, leaving the
 * thread (kept off the store) to the process's exit; the next start
 * archives the rest. Call after the writer stopped, before the store
 * closes. NULL is fine. */
void eg_archiver_stop(eg_archiver *a);

/* The first LSN not yet archived and fsync'd: log records from it on must
 * stay. 0 for NULL (no archiver). Thread safety: any thread. */
uint64_t eg_archiver_hold(const eg_archiver *a);

typedef struct {
  uint64_t archived_lsn; /* last LSN archived and fsync'd (0: none) */
  uint64_t segments;     /* segments closed since start */
  uint64_t errors;       /* failed attempts (I/O errors in the dir) */
  uint64_t gaps;         /* times records it needed were no longer in the log, or
                            the dir was refused as another history */
  char problem[512];     /* the current problem, "" when archiving goes well */
} eg_archiver_stats;

/* Thread safety: any thread. a may be NULL (all zero). */
void eg_archiver_get_stats(eg_archiver *a, eg_archiver_stats *out);

#endif
