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

/* Restores the backup at path as the data of the data dir dir, the base a
 * node starts from (at the backup's LSN and epoch):
 *   - dir must be empty or absent (it is then created 0700), unless force;
 *     EG_EEXIST otherwise, why naming an entry;
 *   - dir's lock (eg_store_lock_dir) is taken, so a dir a running engramd
 *     holds is refused (EG_EPRECOND, why naming its pid);
 *   - the data is extracted to a temp file in dir (length and SHA-256
 *     checked: EG_ECORRUPT), checked as a store holding the header's LSN
 *     and epoch, and put in place as dir/data.mdb the way a replica's
 *     snapshot is (eg_store_install_snapshot: engram.id and lock.mdb are
 *     written afresh by the node's first open).
 * On EG_OK *h is the backup's header and *lock_fd holds dir's lock: the
 * caller may go on with the data in place (e.g. replay archived WAL into
 * it) and then releases the lock (eg_store_unlock_dir). On failure nothing
 * is held and dir/data.mdb is untouched. why is filled on failure. */
eg_err eg_backup_restore_base(const char *path, const char *dir, int force, eg_backup_header *h,
                              int *lock_fd, char *why, size_t whylen);

/* What the file at path is, by its first bytes (and, for a temp file,
 * its lock): -1 if it cannot be read (errno set). */
typedef enum {
  EG_BACKUP_FILE_OTHER = 0,  /* not a backup */
  EG_BACKUP_FILE_BACKUP,     /* EG_BACKUP_MAGIC: a backup file, sound or not */
  EG_BACKUP_FILE_INCOMPLETE, /* the temp file of a create that did not finish */
  EG_BACKUP_FILE_WRITING,    /* the temp file of a create still running */
} eg_backup_file_kind;
int eg_backup_file_kind_of(const char *path);

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
   * the header), and the first failure in words. */
  uint64_t sealed_opened, sealed_failed, sealed_missing_key;
  uint32_t missing_key_ids[EG_BACKUP_KEY_IDS_MAX];
  size_t n_missing;
  char first_failure[256];
} eg_backup_verify_result;

/* Checks the backup at path: its header, the length and SHA-256 of its data
 * (extracted to a temp dir under $TMPDIR or /tmp, removed after), that the
 * data opens read-only as a store of the header's schema version, LSN and
 * epoch, and counts the records of every data DB. With kr (may be NULL) it
 * also opens every sealed field in the context the server sealed it in.
 * Returns EG_ECORRUPT (why says what is wrong: cut short, digest, not a
 * store, ...), EG_EIO / EG_ENOMEM for trouble of the machine; on EG_OK the
 * file is sound, and out says what it holds (sealed_failed and n_missing
 * are for the caller to judge). */
eg_err eg_backup_verify(const char *path, const eg_keyring *kr, eg_backup_verify_result *out,
                        char *why, size_t whylen);

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
