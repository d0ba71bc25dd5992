/* The backup file (layout in backup/backup.h): its header, the checked
 * copy of its data out of it, and the writer that makes one atomically. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/backup.h"
#include "backup/place.h"
#include "engram/storage/v1/backup.pb-c.h"

#define EG_BACKUP_MAGIC_LEN 8
#define EG_BACKUP_PREFIX_LEN (EG_BACKUP_MAGIC_LEN + 4) /* magic, u32 BE length */
#define EG_BACKUP_COPY_CHUNK (1u << 20)

_Static_assert(sizeof EG_BACKUP_MAGIC - 1 == EG_BACKUP_MAGIC_LEN, "magic is 8 bytes");
_Static_assert(sizeof EG_BACKUP_MAGIC_INCOMPLETE - 1 == EG_BACKUP_MAGIC_LEN, "magic is 8 bytes");

/* ---- header --------------------------------------------------------------- */

/* Reads exactly n bytes at off: 1, or 0 at a short read or error (errno
 * 0 for a short one). */
static int read_at(int fd, void *buf, size_t n, off_t off) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = pread(fd, (char *)buf + got, n - got, off + (off_t)got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      if (r == 0) errno = 0;
      return 0;
    }
    got += (size_t)r;
  }
  return 1;
}

static int write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return 0;
    p += w;
    n -= (size_t)w;
  }
  return 1;
}

/* Fills h from the header message m; EG_ECORRUPT with why for values no
 * writer makes. */
static eg_err header_from_pb(const Engram__Storage__V1__BackupHeader *m, eg_backup_header *h,
                             char *why, size_t whylen) {
  if (m->format != EG_BACKUP_FORMAT) {
    snprintf(why, whylen, "backup format %u, this build reads format %d", m->format,
             EG_BACKUP_FORMAT);
    return EG_ECORRUPT;
  }
  if (m->sha256.len != sizeof h->sha256 || m->n_key_ids > EG_BACKUP_KEY_IDS_MAX) {
    snprintf(why, whylen, "the header is malformed (digest of %zu bytes, %zu key ids)",
             m->sha256.len, m->n_key_ids);
    return EG_ECORRUPT;
  }
  *h = (eg_backup_header){.format = m->format,
                          .lsn = m->lsn,
                          .epoch = m->epoch,
                          .schema_version = m->schema_version,
                          .time_us = m->time_us,
                          .data_bytes = m->data_bytes,
                          .n_key_ids = m->n_key_ids};
  memcpy(h->sha256, m->sha256.data, sizeof h->sha256);
  /* (key_ids is NULL when there are none: no memcpy from NULL) */
  if (m->n_key_ids) memcpy(h->key_ids, m->key_ids, m->n_key_ids * sizeof *h->key_ids);
  return EG_OK;
}

/* eg_backup_header_read on an open file. */
static eg_err header_read_fd(int fd, const char *path, eg_backup_header *h, char *why,
                             size_t whylen) {
  uint8_t block[EG_BACKUP_HEADER_BYTES];
  struct stat st;
  if (fstat(fd, &st) != 0) {
    snprintf(why, whylen, "%s: %s", path, strerror(errno));
    return EG_EIO;
  }
  int got = read_at(fd, block, EG_BACKUP_PREFIX_LEN, 0);
  if (!got && errno) {
    snprintf(why, whylen, "%s: %s", path, strerror(errno));
    return EG_EIO;
  }
  if (got && memcmp(block, EG_BACKUP_MAGIC_INCOMPLETE, EG_BACKUP_MAGIC_LEN) == 0) {
    snprintf(why, whylen, "%s is the temp file of a backup create that did not finish", path);
    return EG_ECORRUPT;
  }
  if (!got || memcmp(block, EG_BACKUP_MAGIC, EG_BACKUP_MAGIC_LEN) != 0) {
    snprintf(why, whylen, "%s is not a backup file (no %s header)", path, EG_BACKUP_MAGIC);
    return EG_ECORRUPT;
  }
  uint32_t n = (uint32_t)block[8] << 24 | (uint32_t)block[9] << 16 | (uint32_t)block[10] << 8 |
               block[11];
  if (n > EG_BACKUP_HEADER_BYTES - EG_BACKUP_PREFIX_LEN ||
      (uint64_t)st.st_size < EG_BACKUP_HEADER_BYTES) {
    snprintf(why, whylen, "%s: the header block is %s", path,
             n > EG_BACKUP_HEADER_BYTES - EG_BACKUP_PREFIX_LEN ? "malformed" : "cut short");
    return EG_ECORRUPT;
  }
  if (!read_at(fd, block, n, EG_BACKUP_PREFIX_LEN)) {
    snprintf(why, whylen, "%s: %s", path, strerror(errno));
    return EG_EIO;
  }
  Engram__Storage__V1__BackupHeader *m =
      engram__storage__v1__backup_header__unpack(NULL, n, block);
  if (!m) {
    snprintf(why, whylen, "%s: the header does not decode", path);
    return EG_ECORRUPT;
  }
  char inner[192] = "";
  eg_err e = header_from_pb(m, h, inner, sizeof inner);
  engram__storage__v1__backup_header__free_unpacked(m, NULL);
  if (e) {
    snprintf(why, whylen, "%s: %s", path, inner);
    return e;
  }
  uint64_t have = (uint64_t)st.st_size - EG_BACKUP_HEADER_BYTES;
  if (have != h->data_bytes) {
    snprintf(why, whylen, "%s is %s: it holds %llu data bytes, its header says %llu", path,
             have < h->data_bytes ? "truncated" : "longer than its header says",
             (unsigned long long)have, (unsigned long long)h->data_bytes);
    return EG_ECORRUPT;
  }
  return EG_OK;
}

eg_err eg_backup_header_read(const char *path, eg_backup_header *h, char *why, size_t whylen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(why, whylen, "%s: %s", path, strerror(errno));
    return EG_EIO;
  }
  eg_err e = header_read_fd(fd, path, h, why, whylen);
  close(fd);
  return e;
}

int eg_backup_file_kind_of(const char *path) {
  char magic[EG_BACKUP_MAGIC_LEN];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  int kind = EG_BACKUP_FILE_OTHER;
  int ok = read_at(fd, magic, sizeof magic, 0);
  int err = errno;
  if (ok && memcmp(magic, EG_BACKUP_MAGIC, EG_BACKUP_MAGIC_LEN) == 0) {
    kind = EG_BACKUP_FILE_BACKUP;
  } else if (ok && memcmp(magic, EG_BACKUP_MAGIC_INCOMPLETE, EG_BACKUP_MAGIC_LEN) == 0) {
    /* A running writer holds the file's lock; the lock dies with it. */
    kind = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK ? EG_BACKUP_FILE_WRITING
                                                                      : EG_BACKUP_FILE_INCOMPLETE;
  }
  close(fd);
  if (!ok && err) {
    errno = err;
    return -1;
  }
  return kind;
}

/* ---- extract -------------------------------------------------------------- */

/* Copies n bytes from in (at its offset) to out, hashing them into digest. */
static eg_err copy_hashed(int in, int out, uint64_t n, uint8_t digest[32], char *why,
                          size_t whylen) {
  uint8_t *buf = malloc(EG_BACKUP_COPY_CHUNK);
  eg_sha256 hs;
  eg_err e = EG_OK;
  if (!buf) return EG_ENOMEM;
  eg_sha256_init(&hs);
  while (n > 0 && !e) {
    size_t want = n < EG_BACKUP_COPY_CHUNK ? (size_t)n : EG_BACKUP_COPY_CHUNK;
    ssize_t r = read(in, buf, want);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      snprintf(why, whylen, "reading the backup: %s", r ? strerror(errno) : "unexpected end");
      e = r ? EG_EIO : EG_ECORRUPT;
    } else if (!write_all(out, buf, (size_t)r)) {
      snprintf(why, whylen, "writing the data: %s", strerror(errno));
      e = EG_EIO;
    } else {
      eg_sha256_update(&hs, buf, (size_t)r);
      n -= (uint64_t)r;
    }
  }
  free(buf);
  eg_sha256_final(&hs, digest);
  return e;
}

eg_err eg_backup_extract(const char *path, const char *out_path, eg_backup_header *h, char *why,
                         size_t whylen) {
  int in = open(path, O_RDONLY | O_CLOEXEC);
  if (in < 0) {
    snprintf(why, whylen, "%s: %s", path, strerror(errno));
    return EG_EIO;
  }
  eg_err e = header_read_fd(in, path, h, why, whylen);
  if (e) {
    close(in);
    return e;
  }
  int out = open(out_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (out < 0) {
    snprintf(why, whylen, "%s: %s", out_path, strerror(errno));
    close(in);
    return EG_EIO;
  }
  uint8_t digest[32];
  if (lseek(in, EG_BACKUP_HEADER_BYTES, SEEK_SET) < 0) {
    snprintf(why, whylen, "%s: %s", path, strerror(errno));
    e = EG_EIO;
  }
  if (!e) e = copy_hashed(in, out, h->data_bytes, digest, why, whylen);
  if (!e && memcmp(digest, h->sha256, sizeof digest) != 0) {
    snprintf(why, whylen, "%s is corrupt: the SHA-256 of its data differs from its header's",
             path);
    e = EG_ECORRUPT;
  }
  if (!e && fsync(out) != 0) {
    snprintf(why, whylen, "%s: fsync: %s", out_path, strerror(errno));
    e = EG_EIO;
  }
  close(out);
  close(in);
  if (e) unlink(out_path);
  return e;
}

/* ---- writer --------------------------------------------------------------- */

struct eg_backup_writer {
  int fd;
  int replace; /* path may be replaced at commit */
  int raw;     /* the data alone, no header (eg_backup_writer_open_raw) */
  uint64_t bytes;
  eg_sha256 hash;
  char path[4096];
  char tmp[4096 + 16];
};

/* Whether a backup may be written to path (see eg_backup_writer_open). */
static eg_err target_check(const char *path, int replace, char *why, size_t whylen) {
  struct stat st;
  if (lstat(path, &st) != 0) {
    if (errno == ENOENT) return EG_OK; /* the directory is checked by creating the temp */
    snprintf(why, whylen, "%s: %s", path, strerror(errno));
    return EG_EIO;
  }
  if (S_ISDIR(st.st_mode)) {
    snprintf(why, whylen, "%s is a directory, not the name of the file to write", path);
    return EG_EINVAL;
  }
  if (!replace) {
    snprintf(why, whylen, "%s already exists", path);
    return EG_EEXIST;
  }
  return EG_OK;
}

static eg_err writer_open(const char *path, int replace, int raw, eg_backup_writer **out,
                          char *why, size_t whylen) {
  eg_err e = target_check(path, replace, why, whylen);
  if (e) return e;
  eg_backup_writer *w = calloc(1, sizeof *w);
  if (!w) return EG_ENOMEM;
  if (snprintf(w->path, sizeof w->path, "%s", path) >= (int)sizeof w->path) {
    snprintf(why, whylen, "the path is too long");
    free(w);
    return EG_EINVAL;
  }
  w->replace = replace;
  w->raw = raw;
  snprintf(w->tmp, sizeof w->tmp, "%s.tmp-XXXXXX", path);
  /* mkstemp makes it 0600: the data holds every tenant's records. The
   * marker and the lock tell list and prune what the file is while it
   * has no header (a create killed before its end leaves it behind). */
  w->fd = mkostemp(w->tmp, O_CLOEXEC);
  if (w->fd < 0 ||
      (!raw && (!write_all(w->fd, EG_BACKUP_MAGIC_INCOMPLETE, EG_BACKUP_MAGIC_LEN) ||
                flock(w->fd, LOCK_EX | LOCK_NB) != 0 ||
                lseek(w->fd, EG_BACKUP_HEADER_BYTES, SEEK_SET) < 0))) {
    snprintf(why, whylen, "cannot create %s: %s", w->tmp, strerror(errno));
    if (w->fd >= 0) {
      close(w->fd);
      unlink(w->tmp);
    }
    free(w);
    return EG_EIO;
  }
  eg_sha256_init(&w->hash);
  *out = w;
  return EG_OK;
}

eg_err eg_backup_writer_open(const char *path, int replace, eg_backup_writer **out, char *why,
                             size_t whylen) {
  return writer_open(path, replace, 0, out, why, whylen);
}

eg_err eg_backup_writer_open_raw(const char *path, int replace, eg_backup_writer **out,
                                 char *why, size_t whylen) {
  return writer_open(path, replace, 1, out, why, whylen);
}

eg_err eg_backup_writer_write(eg_backup_writer *w, const void *p, size_t n, char *why,
                              size_t whylen) {
  if (!write_all(w->fd, p, n)) {
    snprintf(why, whylen, "writing %s: %s", w->tmp, strerror(errno));
    return EG_EIO;
  }
  eg_sha256_update(&w->hash, p, n);
  w->bytes += n;
  return EG_OK;
}

uint64_t eg_backup_writer_bytes(const eg_backup_writer *w) { return w->bytes; }

const char *eg_backup_writer_temp(const eg_backup_writer *w) { return w->tmp; }

void eg_backup_writer_abort(eg_backup_writer *w) {
  if (!w) return;
  close(w->fd);
  unlink(w->tmp);
  free(w);
}

/* Writes the header block of h at offset 0 of fd. */
static int header_write(int fd, const eg_backup_header *h) {
  uint8_t block[EG_BACKUP_HEADER_BYTES] = {0};
  Engram__Storage__V1__BackupHeader m = ENGRAM__STORAGE__V1__BACKUP_HEADER__INIT;
  m.format = EG_BACKUP_FORMAT;
  m.lsn = h->lsn;
  m.epoch = h->epoch;
  m.schema_version = h->schema_version;
  m.time_us = h->time_us;
  m.data_bytes = h->data_bytes;
  m.sha256 = (ProtobufCBinaryData){sizeof h->sha256, (uint8_t *)h->sha256};
  m.n_key_ids = h->n_key_ids;
  m.key_ids = (uint32_t *)h->key_ids;
  size_t n = engram__storage__v1__backup_header__get_packed_size(&m);
  /* At most EG_BACKUP_KEY_IDS_MAX ids of 5 bytes and a few fixed fields. */
  if (n > EG_BACKUP_HEADER_BYTES - EG_BACKUP_PREFIX_LEN) return 0;
  memcpy(block, EG_BACKUP_MAGIC, EG_BACKUP_MAGIC_LEN);
  for (int i = 0; i < 4; i++) block[8 + i] = (uint8_t)(n >> (24 - 8 * i));
  engram__storage__v1__backup_header__pack(&m, block + EG_BACKUP_PREFIX_LEN);
  return lseek(fd, 0, SEEK_SET) == 0 && write_all(fd, block, sizeof block);
}

/* Renames the finished temp file to path; without replace an existing path
 * is kept (EEXIST; eg_rename_noreplace). 1 or 0 with errno. */
static int put_in_place(const eg_backup_writer *w) {
  if (w->replace) return rename(w->tmp, w->path) == 0;
  return eg_rename_noreplace(w->tmp, w->path) == 0;
}

/* fsyncs the directory holding path, so a renamed file's name survives a
 * crash. */
static int fsync_dir_of(const char *path) {
  char copy[4096];
  snprintf(copy, sizeof copy, "%s", path);
  int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return 0;
  int ok = fsync(dfd) == 0, err = errno;
  close(dfd);
  errno = err;
  return ok;
}

eg_err eg_backup_writer_commit(eg_backup_writer *w, const eg_backup_header *h, char *why,
                               size_t whylen) {
  uint8_t digest[32];
  eg_sha256_final(&w->hash, digest);
  eg_err e = EG_OK;
  if (h->data_bytes != w->bytes || memcmp(digest, h->sha256, sizeof digest) != 0) {
    snprintf(why, whylen,
             "the copy received (%llu bytes) does not match the size and SHA-256 the server "
             "sent (%llu bytes)",
             (unsigned long long)w->bytes, (unsigned long long)h->data_bytes);
    e = EG_ECORRUPT;
  } else if (h->n_key_ids > EG_BACKUP_KEY_IDS_MAX || (!w->raw && !header_write(w->fd, h)) ||
             fsync(w->fd) != 0) {
    snprintf(why, whylen, "writing %s: %s", w->tmp,
             h->n_key_ids > EG_BACKUP_KEY_IDS_MAX ? "too many key ids" : strerror(errno));
    e = EG_EIO;
  } else if (!put_in_place(w)) {
    int err = errno;
    snprintf(why, whylen, "putting %s in place: %s", w->path,
             err == EEXIST ? "it appeared while the backup was taken; it was not replaced"
                           : strerror(err));
    e = err == EEXIST ? EG_EEXIST : EG_EIO;
  } else if (!fsync_dir_of(w->path)) {
    snprintf(why, whylen,
             "%s is in place, but the fsync of its directory failed (%s): the file may not "
             "survive a crash of this machine",
             w->path, strerror(errno));
    close(w->fd);
    free(w);
    return EG_EIO; /* the temp file is the backup now: nothing to remove */
  }
  close(w->fd);
  if (e) unlink(w->tmp);
  free(w);
  return e;
}
