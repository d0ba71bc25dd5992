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
 * anything that knows the layout.
 */
#ifndef EG_BACKUP_H
#define EG_BACKUP_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "crypto/crypto.h"

#define EG_BACKUP_MAGIC "EGBACKUP"
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

/* ---- writing a backup file (backup/file.c) ----------------------------------
 *
 * The file appears whole or not at all: the data goes to a temp file beside
 * the target (mode 0600) at EG_BACKUP_HEADER_BYTES, hashed as it goes; the
 * header is written last, then the file is fsync'd, renamed into place and
 * the directory fsync'd. Thread safety: one writer, one thread. */
typedef struct eg_backup_writer eg_backup_writer;

/* Creates the temp file for a backup to be named path (its directory must
 * exist; path itself is replaced at commit if it exists). EG_EIO with why
 * filled if it cannot; *out set only on success. */
eg_err eg_backup_writer_open(const char *path, eg_backup_writer **out, char *why, size_t whylen);
/* Appends p[0..n) to the data. EG_EIO with why filled (the writer stays
 * open: abort it). */
eg_err eg_backup_writer_write(eg_backup_writer *w, const void *p, size_t n, char *why,
                              size_t whylen);
/* Bytes of data written so far. */
uint64_t eg_backup_writer_bytes(const eg_backup_writer *w);
/* Finishes the file with header h, whose data_bytes and sha256 must be
 * those of the data written (EG_ECORRUPT otherwise: what the server
 * announced is not what arrived), and puts it in place. Frees w whatever it
 * returns; on failure the temp file is removed and path untouched. */
eg_err eg_backup_writer_commit(eg_backup_writer *w, const eg_backup_header *h, char *why,
                               size_t whylen);
/* Removes the temp file and frees w. NULL is fine. */
void eg_backup_writer_abort(eg_backup_writer *w);

#endif
