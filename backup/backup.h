/*
 * Backups and WAL archives: the files `engram backup ...` and engramd's
 * archiver (--wal-archive-dir) read and write. Library eg_backup (this
 * directory): uses storage/ and crypto/, never gRPC.
 *
 * A backup file (one consistent copy of a store, from AdminService.Backup):
 *
 *   offset 0     "EGBACKUP" (8 bytes)
 *   offset 8     u32 BE n = length of the header message
 *   offset 12    n bytes: engram.storage.v1.BackupHeader
 *                (proto/engram/storage/v1/backup.proto), then zeros
 *   offset 4096  the data: an LMDB file (the store's compacted copy),
 *                BackupHeader.data_bytes long, SHA-256 = BackupHeader.sha256
 *
 * The header sits in a fixed 4 KiB block so the file can be written in one
 * pass (data first, header last, then renamed into place) and read by
 * anything that knows the layout. Until its header is written, the temp
 * file of a create starts with EG_BACKUP_MAGIC_INCOMPLETE instead, so a
 * create that never finished (killed, crashed) is recognised as such.
 */
#ifndef EG_BACKUP_H
#define EG_BACKUP_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "crypto/crypto.h"
#include "storage/storage.h"

#define EG_BACKUP_MAGIC "EGBACKUP"
#define EG_BACKUP_MAGIC_INCOMPLETE "EGBKPART"
#define EG_BACKUP_FORMAT 1
#define EG_BACKUP_HEADER_BYTES 4096
/* Key ids a header can name (a keyring holds at most this many keys). */
#define EG_BACKUP_KEY_IDS_MAX EG_KEYRING_KEYS_MAX

typedef struct {
  uint32_t format;         /* EG_BACKUP_FORMAT */
  uint64_t lsn, epoch;     /* what the copy holds */
  uint32_t schema_version; /* of the copy */
  int64_t time_us;         /* when the server took the copy (unix us) */
  uint64_t data_bytes;     /* length of the data */
  uint8_t sha256[32];      /* of the data */
  uint32_t key_ids[EG_BACKUP_KEY_IDS_MAX];
  size_t n_key_ids;
} eg_backup_header;

/* Reads and checks the header of the backup file at path (magic, format,
 * header message, and that the file holds data_bytes after the header; the
 * digest is not checked here). EG_ECORRUPT with why filled for a file that
 * is not a backup, of an unknown format, or cut short; EG_EIO when it
 * cannot be read. */
eg_err eg_backup_header_read(const char *path, eg_backup_header *h, char *why, size_t whylen);

/* Copies the data of the backup at path into out_path (a new file, mode
 * 0600, fsync'd), checking its length and SHA-256 against the header as it
 * goes; fills *h. EG_ECORRUPT with why filled on any mismatch (out_path is
 * then removed). */
eg_err eg_backup_extract(const char *path, const char *out_path, eg_backup_header *h, char *why,
                         size_t whylen);

/* The staging dir of a restore inside the data dir: the base is extracted,
 * checked and replayed there, and only a finished store is moved to
 * dir/data.mdb, so an interrupted restore never leaves a data dir that
 * looks whole. */
#define EG_RESTORE_STAGING EG_STORE_RESTORE_DIR

/* A restore under way (eg_backup_restore_begin .. _finish or _abort). */
typedef struct {
  eg_backup_header h;    /* the backup's */
  int lock_fd;           /* dir's lock (eg_store_lock_dir), held throughout */
  int removed_leftover;  /* a staging dir of an interrupted restore was removed */
  unsigned old_mode;     /* dir's mode bits when begin set them to 0700 (0: it did not) */
  char stage[4096 + 32]; /* dir/EG_RESTORE_STAGING: a data dir holding the base */
} eg_restore;

/* Restores the backup at path as the data of the data dir dir, the base a
 * node starts from (at the backup's LSN and epoch), first into the staging
 * dir:
 *   - dir must be empty or absent (it is then created 0700; one of this
 *     user's with wider mode bits is set to 0700, r->old_mode), unless
 *     force; EG_EEXIST otherwise, why naming an entry (the lock file and a
 *     staging dir do not count);
 *   - dir's lock is taken (eg_store_lock_dir), so a dir a running engramd
 *     holds is refused (EG_EPRECOND, why naming its pid; its mode is then
 *     put back);
 *   - a staging dir left by an interrupted restore is removed
 *     (r->removed_leftover);
 *   - the data is extracted into the staging dir (length and SHA-256
 *     checked: EG_ECORRUPT) and checked as eg_backup_check_data does (a
 *     store of the header's LSN, epoch and schema version whose every
 *     record reads: EG_ECORRUPT).
 * Until _finish or _abort, the staged data.mdb and the staging dir are
 * what eg_backup_scrub_set removes on a signal.
 * On EG_OK r is filled and the caller may go on in r->stage (e.g. replay
 * archived WAL into it, eg_pitr_replay), then calls _finish or _abort. On
 * failure nothing is held, no staging dir is left and dir/data.mdb is
 * untouched; why is filled. */
eg_err eg_backup_restore_begin(const char *path, const char *dir, int force, eg_restore *r,
                               char *why, size_t whylen);
/* Marks the staging dir done (EG_STORE_RESTORE_DONE, durable), then puts
 * its data.mdb in place as dir/data.mdb the way a replica's snapshot is (eg_store_install_snapshot: engram.id and lock.mdb
 * are written afresh by the node's first open), removes the staging dir
 * and releases the lock. Call with no store open on r->stage. EG_EIO with
 * why filled if the data cannot be moved (the staging dir is then left,
 * for the next restore to remove). */
eg_err eg_backup_restore_finish(eg_restore *r, const char *dir, char *why, size_t whylen);
/* Removes the staging dir and releases the lock; dir/data.mdb untouched. */
void eg_backup_restore_abort(eg_restore *r);

/* What the file at path is, by its first bytes (and, for a temp file,
 * its lock): -1 if it cannot be read (errno set). */
typedef enum {
  EG_BACKUP_FILE_OTHER = 0,  /* not a backup */
  EG_BACKUP_FILE_BACKUP,     /* EG_BACKUP_MAGIC: a backup file, sound or not */
  EG_BACKUP_FILE_INCOMPLETE, /* the temp file of a create that did not finish */
  EG_BACKUP_FILE_WRITING,    /* the temp file of a create still running */
} eg_backup_file_kind;
int eg_backup_file_kind_of(const char *path);

/* ---- temp data on a signal (backup/scrub.c) --------------------------------
 *
 * A create, verify or restore puts a backup's data (every tenant's sealed
 * records) in a temp place. When SIGINT, SIGTERM or SIGHUP ends the process
 * meanwhile, the handler removes it, then the signal's default action ends
 * the process (its caller sees it died of the signal). One place at a time,
 * process-wide: for a single-threaded CLI. */

/* Installs the handler for SIGINT, SIGTERM and SIGHUP (a signal the caller
 * ignores stays ignored: nohup, a background job's SIGINT), and ignores
 * SIGXFSZ so that a file size limit fails the write (EFBIG) and the normal
 * error path runs. */
void eg_backup_scrub_signals(void);
/* What the handler removes from now on: the file, then the dir (only if it
 * is empty by then); either may be NULL. NULL, NULL: nothing. The library's
 * verify and restore set and clear their own; a process without the
 * handler installed removes nothing. */
void eg_backup_scrub_set(const char *file, const char *dir);

/* ---- verify (backup/verify.c) ---------------------------------------------- */

/* Data DBs a verify result counts (more than the store has). */
#define EG_BACKUP_VERIFY_DBS_MAX 32

typedef struct {
  eg_backup_header h;
  eg_store_file_info info; /* what the data itself says it holds */
  struct {
    char name[32];
    uint64_t records;
  } dbs[EG_BACKUP_VERIFY_DBS_MAX]; /* records per data DB, in visit order */
  size_t n_dbs;
  /* With a keyring: sealed fields (non-empty *_token fields of sessions,
   * messages and memories) that opened, that did not, and that are sealed
   * under a key the keyring lacks; the ids missing (from the fields and
   * the header), and the first failure in words. With or without one, a
   * record of those DBs that does not decode counts as failed. */
  uint64_t sealed_opened, sealed_failed, sealed_missing_key;
  /* With a keyring: sealed fields of format 2 (under a user's data key,
   * crypto/crypto.h), whose layout was checked but which were not opened:
   * their keys are in the key store, not the keyring. */
  uint64_t sealed_data_key;
  uint32_t missing_key_ids[EG_BACKUP_KEY_IDS_MAX];
  size_t n_missing;
  char first_failure[256];
} eg_backup_verify_result;

/* Checks the data of a backup extracted to data_path against out->h (its
 * header, filled by the caller): a store of the header's LSN, epoch and
 * schema version, every record of every data DB read and counted, with kr
 * (may be NULL) every sealed field opened in the context the server sealed
 * it in. LMDB trusts its pages, so the walk runs in a child process: a
 * damaged page that makes it fault or assert is reported as EG_ECORRUPT
 * (why names the signal), never a crash of the caller. Fills out. */
eg_err eg_backup_check_data(const char *data_path, const eg_keyring *kr,
                            eg_backup_verify_result *out, char *why, size_t whylen);

/* Checks the backup at path: its header, the length and SHA-256 of its data
 * (extracted into a temp dir made under tmp_dir, or $TMPDIR, or /tmp, and
 * removed after on every path, and by the eg_backup_scrub_signals handler
 * when a signal ends the process meanwhile; the walk's child dies with the
 * process); the free space there is checked against
 * the data's length first: EG_ENOSPC), then the data as
 * eg_backup_check_data does. Returns EG_ECORRUPT (why says what is wrong:
 * cut short, digest, not a store, damaged pages, ...), EG_EIO / EG_ENOMEM /
 * EG_ENOSPC for trouble of the machine; on EG_OK the file is sound, and out
 * says what it holds (sealed_failed and n_missing are for the caller to
 * judge). */
eg_err eg_backup_verify(const char *path, const char *tmp_dir, const eg_keyring *kr,
                        eg_backup_verify_result *out, char *why, size_t whylen);

/* ---- retention (backup/retention.c) --------------------------------------- */

/* 1 if a header time is not to be believed at now_us: zero or before 1970
 * (no writer makes one), or more than skew_us after now (a node whose
 * clock was wrong, a damaged or forged header). Pure. */
int eg_backup_time_suspect(int64_t time_us, int64_t now_us, int64_t skew_us);

/* What eg_backup_retain decides for one backup. */
typedef enum {
  EG_RETAIN_DELETE = 0,
  EG_RETAIN_KEEP = 1,
  EG_RETAIN_SUSPECT = 2, /* its time is suspect (eg_backup_time_suspect): never
                          * deleted, takes no slot, never the newest */
} eg_retain;

/* Grandfather-father-son: of n backups taken at time_us[i] (unix us),
 * keep[i] = EG_RETAIN_KEEP for the newest backup of each of the keep_n[0]
 * most recent UTC days, keep_n[1] ISO weeks (Monday to Sunday, UTC) and
 * keep_n[2] months that have one, counted among the backups whose time is
 * believable at now_us (skew_us as in eg_backup_time_suspect); the newest
 * of those is always kept. The others get EG_RETAIN_SUSPECT, everything
 * else EG_RETAIN_DELETE. Pure (the clock is an argument, no files).
 * EG_ENOMEM only. */
eg_err eg_backup_retain(const int64_t *time_us, size_t n, const int keep_n[3], int64_t now_us,
                        int64_t skew_us, eg_retain *keep);

/* ---- writing a backup file (backup/file.c) ----------------------------------
 *
 * The file appears whole or not at all: the data goes to a temp file beside
 * the target, PATH.tmp-XXXXXX (mode 0600, starting with
 * EG_BACKUP_MAGIC_INCOMPLETE, flock'd while the writer has it open), at
 * EG_BACKUP_HEADER_BYTES, hashed as it goes; the header is written last,
 * then the file is fsync'd, renamed into place and the directory fsync'd.
 * Thread safety: one writer, one thread. */
typedef struct eg_backup_writer eg_backup_writer;

/* Checks the target and creates the temp file for a backup to be named
 * path, before any data is fetched: path must not be a directory
 * (EG_EINVAL) nor exist unless replace (EG_EEXIST; also checked again,
 * atomically, at commit), and its directory must exist and take a new file
 * (EG_EIO). why filled on failure; *out set only on success. */
eg_err eg_backup_writer_open(const char *path, int replace, eg_backup_writer **out, char *why,
                             size_t whylen);
/* The same for a file of the data alone (no marker, no header: a key
 * store backup, an LMDB file as it is); commit then checks h's data_bytes
 * and sha256 and writes no header. */
eg_err eg_backup_writer_open_raw(const char *path, int replace, eg_backup_writer **out,
                                 char *why, size_t whylen);
/* The temp file's path (for a signal handler that must remove it). */
const char *eg_backup_writer_temp(const eg_backup_writer *w);
/* Appends p[0..n) to the data. EG_EIO with why filled (the writer stays
 * open: abort it). */
eg_err eg_backup_writer_write(eg_backup_writer *w, const void *p, size_t n, char *why,
                              size_t whylen);
/* Bytes of data written so far. */
uint64_t eg_backup_writer_bytes(const eg_backup_writer *w);
/* Finishes the file with header h, whose data_bytes and sha256 must be
 * those of the data written (EG_ECORRUPT otherwise: what the server
 * announced is not what arrived), and puts it in place. Frees w whatever it
 * returns. On failure the temp file is removed and path untouched, except
 * when only the fsync of the directory after the rename failed: the file is
 * then whole at path but may not survive a crash (EG_EIO, why says so). */
eg_err eg_backup_writer_commit(eg_backup_writer *w, const eg_backup_header *h, char *why,
                               size_t whylen);
/* Removes the temp file and frees w. NULL is fine. */
void eg_backup_writer_abort(eg_backup_writer *w);

#endif
