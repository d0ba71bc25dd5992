/*
 * The WAL archive: engramd's archiver (--wal-archive-dir) copies every
 * committed WAL record, in LSN order, into segment files in one directory;
 * point-in-time restore replays them onto a base. Library eg_backup.
 *
 * A segment file (all integers big-endian):
 *
 *   header, 64 bytes:
 *     0   "EGWALSEG"       magic
 *     8   u32 format       EG_WALSEG_FORMAT
 *     12  u32 0            reserved
 *     16  u64 epoch        every record in the segment has this epoch
 *     24  u64 first_lsn    LSN of its first record
 *     32  SHA-256 of bytes 0..31
 *   records, each:
 *     u32 len (1..EG_WALSEG_RECORD_MAX), u64 lsn, len bytes: the WalRecord
 *     exactly as the `wal` DB stores it, then SHA-256 of the three before
 *   end, once the segment is closed:
 *     u32 0, u64 last_lsn, SHA-256 of those 12 bytes
 *
 * LSNs run first_lsn, first_lsn + 1, ... without a gap. A segment being
 * written is named "<first lsn, 20 digits>-<epoch, 20 digits>.seg.partial";
 * closed (end written, fsync'd) it is renamed to "...seg", never over an
 * existing file. Names sort by first LSN, then epoch. Two segments may
 * cover the same LSNs (a node whose history diverged and was resynced):
 * from a segment's first LSN on, the one of the higher (or, being the
 * later copy, equal) epoch is the history (as PostgreSQL's timelines), and
 * a lower-epoch segment starting inside a higher epoch's span is stale.
 * The archiver never writes a second history of the same epoch into one
 * dir (it refuses a dir whose tip its log does not hold byte for byte).
 *
 * Files set aside keep their name plus a suffix that no segment name has:
 * ".corrupt" (a .partial damaged in its middle), ".failed" (a .partial
 * whose length could not be made durable after a failed write or fsync).
 * The archive dir also holds LOCK (the running archiver's, flock'd).
 *
 * Files are written mode 0600 and fsync'd; a create or rename also
 * fsyncs the directory.
 */
#ifndef EG_BACKUP_WALARCHIVE_H
#define EG_BACKUP_WALARCHIVE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

#define EG_WALSEG_MAGIC "EGWALSEG"
#define EG_WALSEG_FORMAT 1
#define EG_WALSEG_HEADER_BYTES 64
/* Frame bytes around a record: len, lsn, digest. */
#define EG_WALSEG_FRAME_BYTES (4 + 8 + 32)
/* The largest record a segment takes: far above any write txn engramd
 * commits, and it bounds what a reader allocates for one frame. */
#define EG_WALSEG_RECORD_MAX (1u << 30)
#define EG_WALSEG_NAME_MAX 64

/* ---- writing (engramd's archiver) --------------------------------------- */

typedef struct eg_walseg_w eg_walseg_w;

/* Creates DIR/<first_lsn>-<epoch>.seg.partial (mode 0600, exclusive) with
 * its header, fsyncs it and DIR. EG_EIO (why filled) on any failure; a
 * file left half made is removed. */
eg_err eg_walseg_create(const char *dir, uint64_t first_lsn, uint64_t epoch, eg_walseg_w **out,
                        char *why, size_t whylen);
/* Appends record lsn (which must be the segment's next LSN: EG_EINVAL
 * otherwise). Not durable before eg_walseg_sync. EG_EIO on a failed write:
 * the segment is then unusable (eg_walseg_rollback it). */
eg_err eg_walseg_append(eg_walseg_w *w, uint64_t lsn, const uint8_t *rec, size_t len, char *why,
                        size_t whylen);
/* fsyncs what was appended. EG_EIO: eg_walseg_rollback the segment; what
 * was appended since the last good sync may be lost whatever a read says. */
eg_err eg_walseg_sync(eg_walseg_w *w, char *why, size_t whylen);
/* Records in the segment, and its first LSN and epoch. */
uint64_t eg_walseg_count(const eg_walseg_w *w);
uint64_t eg_walseg_epoch(const eg_walseg_w *w);
/* Writes the end, fsyncs, renames to .seg (EG_EEXIST, why naming both
 * files, if a .seg of that name exists: it is left as it is), fsyncs DIR,
 * frees w. A segment without records is removed instead. On failure w is
 * kept: eg_walseg_rollback it. */
eg_err eg_walseg_close(eg_walseg_w *w, char *why, size_t whylen);
/* After a failed append, sync or close: nothing written since the last
 * good eg_walseg_sync is trusted (a failed fsync may have dropped the
 * pages a read would still return), so the .partial is cut back to its
 * length then and fsync'd; if that fails too, it is renamed to
 * "<name>.failed", out of the archive. (A close that renamed it and then
 * failed to fsync DIR: DIR's fsync is retried.) Frees w on EG_OK; on
 * EG_EIO w is kept, to be rolled back again. */
eg_err eg_walseg_rollback(eg_walseg_w *w, char *why, size_t whylen);
/* Frees w, leaving its file as it is (as a crash would). NULL ok. */
void eg_walseg_abandon(eg_walseg_w *w);

typedef struct {
  uint64_t cut;        /* bytes of torn frames cut off */
  uint64_t set_aside;  /* .partial files renamed to "<name>.corrupt" */
  char corrupt[320];   /* the last of them and why ("" if none) */
} eg_walseg_recovery;

/* Finishes every .partial segment in dir: cuts a torn tail (a frame
 * reaching the end of the file: a crash or a failed write mid-append)
 * back to its last whole record, then closes it as eg_walseg_close does
 * (or removes it when no record is left). A .partial with a bad frame
 * followed by more bytes than that frame claims is corruption, not a torn
 * tail: it is renamed to "<name>.corrupt" and left out. */
eg_err eg_walseg_recover(const char *dir, eg_walseg_recovery *out, char *why, size_t whylen);

/* ---- reading ------------------------------------------------------------- */

typedef struct {
  char name[EG_WALSEG_NAME_MAX];
  uint64_t first_lsn, last_lsn, epoch;
  int partial; /* still .partial: last_lsn is its last whole record */
} eg_walseg_info;

/* The segments of dir, sorted by (first_lsn, epoch); files whose names are
 * not segments' are left out. A closed segment's last_lsn comes from its
 * end (checked); its records are not read. A .partial is read to its last
 * whole record (first_lsn - 1: none yet). *out is malloc'd (free it);
 * EG_ECORRUPT (why names the file) for a segment whose header or end is
 * bad; EG_EIO if dir cannot be read. */
eg_err eg_walseg_list(const char *dir, eg_walseg_info **out, size_t *n, char *why, size_t whylen);

/* A stretch of the archive's history: records from..to of segs[seg]. */
typedef struct {
  size_t seg;
  uint64_t from, to;
} eg_walseg_piece;

/* The archive's history from a list as eg_walseg_list returns: each
 * segment, cut where a later one of a higher or equal epoch takes over,
 * stale ones (a lower epoch starting inside a higher one) left out.
 * Writes at most n pieces, in LSN order; returns how many. Where a piece's
 * from is past the previous one's to + 1, the archive has a gap. The last
 * piece's to and its segment's epoch are the archive's tip. Pure. */
size_t eg_walseg_chain(const eg_walseg_info *segs, size_t n, eg_walseg_piece *pieces);

typedef struct eg_walseg_r eg_walseg_r;

/* Opens dir/name and checks its header (EG_ECORRUPT, why filled). *out is
 * NULL on failure. */
eg_err eg_walseg_open(const char *dir, const char *name, eg_walseg_r **out, char *why,
                      size_t whylen);
/* The next record: EG_OK with *lsn, *rec and *len (rec valid until the
 * next call); EG_ENOTFOUND after the end (checked against the last LSN);
 * EG_ECORRUPT (why names the LSN) for a bad frame, a broken LSN sequence,
 * or a file that stops without its end. */
eg_err eg_walseg_next(eg_walseg_r *r, uint64_t *lsn, const uint8_t **rec, size_t *len, char *why,
                      size_t whylen);
void eg_walseg_close_r(eg_walseg_r *r);
/* The SHA-256 of record lsn's bytes in dir/name: EG_ENOTFOUND if the
 * segment does not hold it; else as eg_walseg_open and eg_walseg_next. */
eg_err eg_walseg_record_sha256(const char *dir, const char *name, uint64_t lsn, uint8_t out[32],
                               char *why, size_t whylen);

/* ---- point-in-time restore ---------------------------------------------- */

typedef struct {
  uint64_t to_lsn;   /* stop after this LSN (0: no LSN target) */
  int64_t to_time_us; /* stop before the first record written after it (0: none) */
} eg_pitr_target;

typedef struct {
  uint64_t base_lsn;  /* where the data dir stood */
  uint64_t lsn, epoch; /* where it stands now */
  int64_t time_us;     /* time of the last record replayed (0: none) */
  uint64_t records;    /* replayed */
  int link_unchecked;  /* the archive starts right after the base: whether the
                        * base is on its history could not be checked */
} eg_pitr_result;

/* Records per write txn of the replay: bounds one txn's memory and the
 * map it dirties. */
#define EG_PITR_BATCH 512

/* The check pass of eg_pitr_replay alone, for a base at base_lsn and
 * base_epoch (a backup's header): reads and checks every record the
 * replay would need, writes nothing; *res says where the replay would end.
 * Same refusals as eg_pitr_replay, except those that need the base's own
 * record (its bytes; its time when the archive lacks it). Lets a restore
 * refuse before it touches the data dir. */
eg_err eg_pitr_check(const char *archive_dir, uint64_t base_lsn, uint64_t base_epoch,
                     const eg_pitr_target *target, eg_pitr_result *res, char *why, size_t whylen);

/* Replays the archive in archive_dir onto the store in data_dir (a
 * restored base at LSN L, or a new empty dir: L = 0): records L + 1 on,
 * up to the target (neither set: all archived), in write txns of at most
 * EG_PITR_BATCH records. First, nothing written yet:
 *   - the base must lie on the archive's history: the archive holds LSN L
 *     in the base's epoch with the same record bytes as the base's log
 *     (SHA-256 compared), or starts at L + 1 in an epoch not older than
 *     the base's (res->link_unchecked: the link cannot be shown);
 *   - a time target must not be before the base's time: that of its own
 *     record at L, or base_time_us (a backup header's time) when its log
 *     no longer has that record;
 *   - every record the replay needs is read and checked (frame digests,
 *     LSN continuity, epoch order, the target within the archive).
 * Refused with EG_EPRECOND and why naming the LSN or times: a base off the
 * archive's history, a gap, a target before the base or past the
 * archive's end; EG_ECORRUPT: a corrupt segment. A replayed erasure
 * record also drops the older log records, as engramd does. */
eg_err eg_pitr_replay(const char *data_dir, const char *archive_dir, int64_t base_time_us,
                      const eg_pitr_target *target, eg_pitr_result *res, char *why,
                      size_t whylen);

#endif
