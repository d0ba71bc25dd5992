/* WAL archive segments: the file format of backup/walarchive.h. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/place.h"
#include "backup/walarchive.h"
#include "crypto/crypto.h"

#define EG_SEG_SUFFIX ".seg"
#define EG_SEG_PARTIAL ".seg.partial"
#define EG_SEG_DIGITS 20
/* "<20 digits>-<20 digits>" */
#define EG_SEG_STEM (2 * EG_SEG_DIGITS + 1)
#define EG_PATH_MAX 4096

struct eg_walseg_w {
  int fd;
  char dir[EG_PATH_MAX];
  char name[EG_WALSEG_NAME_MAX]; /* the .partial name */
  uint64_t first_lsn, epoch, count;
  off_t off;        /* bytes written so far */
  off_t synced_off; /* bytes an fsync has made durable */
  int closed;       /* renamed to .seg: only the dir's fsync may be missing */
};

struct eg_walseg_r {
  FILE *f;
  uint64_t first_lsn, epoch, next_lsn;
  off_t size, good_off; /* good_off: just past the last whole frame */
  uint8_t *buf;
  size_t cap;
};

static void eg_put32(uint8_t *p, uint32_t v) {
  for (int i = 3; i >= 0; i--) p[i] = (uint8_t)v, v >>= 8;
}

static void eg_put64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--) p[i] = (uint8_t)v, v >>= 8;
}

static uint32_t eg_get32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t eg_get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}

static void eg_digest(const void *a, size_t na, const void *b, size_t nb, uint8_t out[32]) {
  eg_sha256 h;
  eg_sha256_init(&h);
  eg_sha256_update(&h, a, na);
  if (nb) eg_sha256_update(&h, b, nb);
  eg_sha256_final(&h, out);
}

static void eg_seg_name(char out[EG_WALSEG_NAME_MAX], uint64_t first_lsn, uint64_t epoch,
                        int partial) {
  snprintf(out, EG_WALSEG_NAME_MAX, "%020llu-%020llu%s", (unsigned long long)first_lsn,
           (unsigned long long)epoch, partial ? EG_SEG_PARTIAL : EG_SEG_SUFFIX);
}

/* Parses a segment's name; 0 if it is not one. */
static int eg_seg_parse(const char *name, uint64_t *first_lsn, uint64_t *epoch, int *partial) {
  size_t n = strlen(name);
  if (n < EG_SEG_STEM || strspn(name, "0123456789") != EG_SEG_DIGITS || name[EG_SEG_DIGITS] != '-' ||
      strspn(name + EG_SEG_DIGITS + 1, "0123456789") != EG_SEG_DIGITS)
    return 0;
  if (strcmp(name + EG_SEG_STEM, EG_SEG_SUFFIX) == 0)
    *partial = 0;
  else if (strcmp(name + EG_SEG_STEM, EG_SEG_PARTIAL) == 0)
    *partial = 1;
  else
    return 0;
  *first_lsn = strtoull(name, NULL, 10);
  *epoch = strtoull(name + EG_SEG_DIGITS + 1, NULL, 10);
  return *first_lsn > 0;
}

static int eg_write_all(int fd, const void *p, size_t n) {
  const uint8_t *b = p;
  while (n) {
    ssize_t w = write(fd, b, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    b += w;
    n -= (size_t)w;
  }
  return 0;
}

static int eg_fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

static eg_err eg_io_fail(char *why, size_t whylen, const char *what, const char *dir,
                         const char *name) {
  snprintf(why, whylen, "%s %.300s/%s: %s", what, dir, name, strerror(errno));
  return EG_EIO;
}

/* Renames dir/from to dir/to, never over an existing file (which may be
 * another history's segment), and fsyncs dir. Where the file system has no
 * RENAME_NOREPLACE, eg_rename_noreplace checks then renames: the dir's LOCK
 * keeps any other archiver out meanwhile. EEXIST: EG_EEXIST, why naming both files.
 * *placed (may be NULL) is set once the file has its new name, even if the
 * dir's fsync then fails. */
static eg_err eg_seg_place(const char *dir, const char *from, const char *to, const char *what,
                           int *placed, char *why, size_t whylen) {
  char pf[EG_PATH_MAX + EG_WALSEG_NAME_MAX + 16], pt[EG_PATH_MAX + EG_WALSEG_NAME_MAX + 16];
  snprintf(pf, sizeof pf, "%s/%s", dir, from);
  snprintf(pt, sizeof pt, "%s/%s", dir, to);
  int rc = eg_rename_noreplace(pf, pt);
  if (rc != 0 && errno == EEXIST) {
    snprintf(why, whylen, "%s %.300s/%s: %s already exists (another history's segment of "
             "the same name?); both are left as they are", what, dir, from, to);
    return EG_EEXIST;
  }
  if (rc != 0) return eg_io_fail(why, whylen, what, dir, from);
  if (placed) *placed = 1;
  if (eg_fsync_dir(dir)) return eg_io_fail(why, whylen, "cannot fsync the dir of", dir, to);
  return EG_OK;
}

/* ==== writing ================================================================ */

eg_err eg_walseg_create(const char *dir, uint64_t first_lsn, uint64_t epoch, eg_walseg_w **out,
                        char *why, size_t whylen) {
  eg_walseg_w *w = calloc(1, sizeof *w);
  uint8_t head[EG_WALSEG_HEADER_BYTES] = {0};
  char path[EG_PATH_MAX + EG_WALSEG_NAME_MAX];
  if (!w) {
    snprintf(why, whylen, "out of memory");
    return EG_ENOMEM;
  }
  snprintf(w->dir, sizeof w->dir, "%s", dir);
  eg_seg_name(w->name, first_lsn, epoch, 1);
  w->first_lsn = first_lsn;
  w->epoch = epoch;
  snprintf(path, sizeof path, "%s/%s", dir, w->name);
  memcpy(head, EG_WALSEG_MAGIC, 8);
  eg_put32(head + 8, EG_WALSEG_FORMAT);
  eg_put64(head + 16, epoch);
  eg_put64(head + 24, first_lsn);
  eg_digest(head, 32, NULL, 0, head + 32);
  w->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (w->fd < 0) {
    eg_err e = eg_io_fail(why, whylen, "cannot create", dir, w->name);
    free(w);
    return e;
  }
  w->off = w->synced_off = EG_WALSEG_HEADER_BYTES;
  if (eg_write_all(w->fd, head, sizeof head) || fsync(w->fd) || eg_fsync_dir(dir)) {
    eg_err e = eg_io_fail(why, whylen, "cannot write", dir, w->name);
    close(w->fd);
    unlink(path);
    free(w);
    return e;
  }
  *out = w;
  return EG_OK;
}

eg_err eg_walseg_append(eg_walseg_w *w, uint64_t lsn, const uint8_t *rec, size_t len, char *why,
                        size_t whylen) {
  uint8_t head[12], sum[32];
  if (lsn != w->first_lsn + w->count || len == 0 || len > EG_WALSEG_RECORD_MAX) {
    snprintf(why, whylen, "record %llu (%zu bytes) does not fit segment %s (next lsn %llu)",
             (unsigned long long)lsn, len, w->name, (unsigned long long)(w->first_lsn + w->count));
    return EG_EINVAL;
  }
  eg_put32(head, (uint32_t)len);
  eg_put64(head + 4, lsn);
  eg_sha256 h;
  eg_sha256_init(&h);
  eg_sha256_update(&h, head, sizeof head);
  eg_sha256_update(&h, rec, len);
  eg_sha256_final(&h, sum);
  if (eg_write_all(w->fd, head, sizeof head) || eg_write_all(w->fd, rec, len) ||
      eg_write_all(w->fd, sum, sizeof sum))
    return eg_io_fail(why, whylen, "cannot write", w->dir, w->name);
  w->count++;
  w->off += (off_t)(sizeof head + len + sizeof sum);
  return EG_OK;
}

eg_err eg_walseg_sync(eg_walseg_w *w, char *why, size_t whylen) {
  if (fsync(w->fd)) return eg_io_fail(why, whylen, "cannot fsync", w->dir, w->name);
  w->synced_off = w->off;
  return EG_OK;
}

uint64_t eg_walseg_count(const eg_walseg_w *w) { return w->count; }
uint64_t eg_walseg_epoch(const eg_walseg_w *w) { return w->epoch; }

/* Ends the segment in fd (its records run first_lsn..last), renames dir/name
 * from .partial to .seg (never over an existing one) and makes both
 * durable. *placed (may be NULL) is set once the rename is done. */
static eg_err eg_seg_finish(int fd, const char *dir, const char *name, uint64_t last, int *placed,
                            char *why, size_t whylen) {
  uint8_t end[12 + 32] = {0};
  char to[EG_WALSEG_NAME_MAX];
  eg_put64(end + 4, last);
  eg_digest(end, 12, NULL, 0, end + 12);
  if (eg_write_all(fd, end, sizeof end) || fsync(fd))
    return eg_io_fail(why, whylen, "cannot write", dir, name);
  snprintf(to, sizeof to, "%.*s%s", EG_SEG_STEM, name, EG_SEG_SUFFIX);
  return eg_seg_place(dir, name, to, "cannot close", placed, why, whylen);
}

eg_err eg_walseg_close(eg_walseg_w *w, char *why, size_t whylen) {
  eg_err e = EG_OK;
  if (w->count == 0) {
    char path[EG_PATH_MAX + EG_WALSEG_NAME_MAX];
    snprintf(path, sizeof path, "%s/%s", w->dir, w->name);
    if (unlink(path) || eg_fsync_dir(w->dir)) e = eg_io_fail(why, whylen, "cannot remove", w->dir, w->name);
  } else {
    e = eg_seg_finish(w->fd, w->dir, w->name, w->first_lsn + w->count - 1, &w->closed, why, whylen);
  }
  if (!e) eg_walseg_abandon(w);
  return e;
}

eg_err eg_walseg_rollback(eg_walseg_w *w, char *why, size_t whylen) {
  char aside[EG_WALSEG_NAME_MAX + 16];
  if (w->closed) {
    /* Written, fsync'd and renamed: only the dir's fsync is missing. */
    if (eg_fsync_dir(w->dir)) return eg_io_fail(why, whylen, "cannot fsync", w->dir, "");
    eg_walseg_abandon(w);
    return EG_OK;
  }
  /* After a failed write or fsync the kernel may have dropped the dirty
   * pages (and marked them clean), so what a read returns past the last
   * good fsync is not what the disk holds: cut it off. */
  if (ftruncate(w->fd, w->synced_off) == 0 && fsync(w->fd) == 0) {
    eg_walseg_abandon(w);
    return EG_OK;
  }
  /* Its length cannot be made durable: out of the archive with it. */
  snprintf(aside, sizeof aside, "%s.failed", w->name);
  eg_err e = eg_seg_place(w->dir, w->name, aside, "cannot set aside", NULL, why, whylen);
  if (!e) eg_walseg_abandon(w);
  return e;
}

void eg_walseg_abandon(eg_walseg_w *w) {
  if (!w) return;
  close(w->fd);
  free(w);
}

/* ==== reading ================================================================ */

static int eg_read_all(FILE *f, void *p, size_t n) { return fread(p, 1, n, f) == n ? 0 : -1; }

eg_err eg_walseg_open(const char *dir, const char *name, eg_walseg_r **out, char *why,
                      size_t whylen) {
  char path[EG_PATH_MAX + EG_WALSEG_NAME_MAX];
  uint8_t head[EG_WALSEG_HEADER_BYTES], sum[32];
  struct stat st;
  uint64_t nfirst = 0, nepoch = 0;
  int partial;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  *out = NULL; /* a caller may close what it got back, whatever the result */
  eg_walseg_r *r = calloc(1, sizeof *r);
  if (!r) {
    snprintf(why, whylen, "out of memory");
    return EG_ENOMEM;
  }
  if (!(r->f = fopen(path, "rb")) || fstat(fileno(r->f), &st)) {
    eg_err e = eg_io_fail(why, whylen, "cannot open", dir, name);
    eg_walseg_close_r(r);
    return e;
  }
  r->size = st.st_size;
  eg_seg_parse(name, &nfirst, &nepoch, &partial);
  if (eg_read_all(r->f, head, sizeof head) || memcmp(head, EG_WALSEG_MAGIC, 8) != 0 ||
      (eg_digest(head, 32, NULL, 0, sum), memcmp(sum, head + 32, 32) != 0) ||
      eg_get32(head + 8) != EG_WALSEG_FORMAT || eg_get64(head + 16) != nepoch ||
      eg_get64(head + 24) != nfirst) {
    snprintf(why, whylen, "%.300s/%s: not a WAL segment of format %d, or its header is corrupt "
             "or does not match its name", dir, name, EG_WALSEG_FORMAT);
    eg_walseg_close_r(r);
    return EG_ECORRUPT;
  }
  r->epoch = nepoch;
  r->first_lsn = r->next_lsn = nfirst;
  r->good_off = EG_WALSEG_HEADER_BYTES;
  *out = r;
  return EG_OK;
}

eg_err eg_walseg_next(eg_walseg_r *r, uint64_t *lsn, const uint8_t **rec, size_t *len, char *why,
                      size_t whylen) {
  uint8_t head[12], sum[32], want[32];
  unsigned long long at = (unsigned long long)r->next_lsn;
  if (eg_read_all(r->f, head, sizeof head)) {
    snprintf(why, whylen, "ends without its end mark before lsn %llu (cut short)", at);
    return EG_ECORRUPT;
  }
  uint32_t n = eg_get32(head);
  uint64_t l = eg_get64(head + 4);
  off_t left = r->size - r->good_off - (off_t)sizeof head;
  if (n == 0) { /* the end */
    if (eg_read_all(r->f, sum, sizeof sum) || (eg_digest(head, 12, NULL, 0, want), memcmp(sum, want, 32)) ||
        l + 1 != r->next_lsn || l < r->first_lsn) {
      snprintf(why, whylen, "bad end mark after lsn %llu", at - 1);
      return EG_ECORRUPT;
    }
    return EG_ENOTFOUND;
  }
  /* Checked against the file before allocating: a flipped length never
   * makes the reader allocate what the file cannot hold. */
  if (n > EG_WALSEG_RECORD_MAX || (off_t)n + 32 > left) {
    snprintf(why, whylen, "record at lsn %llu is cut short or its length is corrupt", at);
    return EG_ECORRUPT;
  }
  if (n > r->cap) {
    uint8_t *b = realloc(r->buf, n);
    if (!b) {
      snprintf(why, whylen, "out of memory");
      return EG_ENOMEM;
    }
    r->buf = b;
    r->cap = n;
  }
  if (eg_read_all(r->f, r->buf, n) || eg_read_all(r->f, sum, sizeof sum)) {
    snprintf(why, whylen, "record at lsn %llu is cut short", at);
    return EG_ECORRUPT;
  }
  eg_digest(head, sizeof head, r->buf, n, want);
  if (memcmp(sum, want, 32) != 0) {
    snprintf(why, whylen, "record at lsn %llu fails its checksum", at);
    return EG_ECORRUPT;
  }
  if (l != r->next_lsn) {
    snprintf(why, whylen, "record lsn %llu where lsn %llu belongs", (unsigned long long)l, at);
    return EG_ECORRUPT;
  }
  r->next_lsn++;
  r->good_off += (off_t)(sizeof head + n + sizeof sum);
  *lsn = l;
  *rec = r->buf;
  *len = n;
  return EG_OK;
}

void eg_walseg_close_r(eg_walseg_r *r) {
  if (!r) return;
  if (r->f) fclose(r->f);
  free(r->buf);
  free(r);
}

eg_err eg_walseg_record_sha256(const char *dir, const char *name, uint64_t lsn, uint8_t out[32],
                               char *why, size_t whylen) {
  eg_walseg_r *r;
  uint64_t l;
  const uint8_t *rec;
  size_t len;
  eg_err e = eg_walseg_open(dir, name, &r, why, whylen);
  if (e) return e;
  if (lsn < r->first_lsn) e = EG_ENOTFOUND;
  while (!e && (e = eg_walseg_next(r, &l, &rec, &len, why, whylen)) == EG_OK && l < lsn) {
  }
  if (!e) eg_digest(rec, len, NULL, 0, out);
  eg_walseg_close_r(r);
  return e;
}

/* What follows a .partial's last whole record. */
enum { EG_TAIL_END, EG_TAIL_TORN, EG_TAIL_CORRUPT };

/* Reads a .partial segment to its last whole record: *last (first_lsn - 1
 * when none) and the offset past it. With tail (may be NULL), also what
 * follows: an end mark (a close that did not finish), a torn frame (a
 * crash or a failed write: the bad frame reaches the end of the file), or
 * corruption (a bad frame with more bytes after it than it claims, which
 * neither can leave); bad then says what failed. */
static eg_err eg_seg_scan_partial(const char *dir, const char *name, uint64_t *last, off_t *good,
                                  int *tail, char *bad, size_t badlen, char *why, size_t whylen) {
  eg_walseg_r *r;
  uint64_t lsn;
  const uint8_t *rec;
  size_t len;
  char skip[256];
  uint8_t head[12];
  eg_err e = eg_walseg_open(dir, name, &r, why, whylen);
  if (e) return e;
  while ((e = eg_walseg_next(r, &lsn, &rec, &len, skip, sizeof skip)) == EG_OK) {
  }
  *last = r->next_lsn - 1;
  *good = r->good_off;
  if (tail) {
    /* The frame that stopped the read spans, by its own length, this far:
     * short of the end of the file means frames were written after it. */
    off_t rest = r->size - r->good_off, spans = rest;
    if (e == EG_ECORRUPT && rest >= (off_t)sizeof head &&
        pread(fileno(r->f), head, sizeof head, r->good_off) == (ssize_t)sizeof head) {
      uint32_t n = eg_get32(head);
      spans = (off_t)sizeof head + (off_t)n + 32;
    }
    *tail = e == EG_ENOTFOUND ? EG_TAIL_END : spans < rest ? EG_TAIL_CORRUPT : EG_TAIL_TORN;
    if (*tail == EG_TAIL_CORRUPT)
      snprintf(bad, badlen, "%.200s, with %lld more bytes after it", skip,
               (long long)(rest - spans));
  }
  eg_walseg_close_r(r);
  if (e == EG_ENOMEM) snprintf(why, whylen, "out of memory");
  return e == EG_ENOMEM ? e : EG_OK;
}

/* A closed segment's last LSN, from its end mark. */
static eg_err eg_seg_read_end(const char *dir, const eg_walseg_info *s, uint64_t *last, char *why,
                              size_t whylen) {
  char path[EG_PATH_MAX + EG_WALSEG_NAME_MAX];
  uint8_t end[12 + 32], want[32];
  snprintf(path, sizeof path, "%s/%s", dir, s->name);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return eg_io_fail(why, whylen, "cannot open", dir, s->name);
  struct stat st;
  int ok = fstat(fd, &st) == 0 && st.st_size >= EG_WALSEG_HEADER_BYTES + (off_t)sizeof end &&
           pread(fd, end, sizeof end, st.st_size - (off_t)sizeof end) == (ssize_t)sizeof end;
  close(fd);
  if (ok) eg_digest(end, 12, NULL, 0, want);
  if (!ok || eg_get32(end) != 0 || memcmp(want, end + 12, 32) != 0 || eg_get64(end + 4) < s->first_lsn) {
    snprintf(why, whylen, "%.300s/%s: closed segment without a valid end mark (cut short or corrupt)",
             dir, s->name);
    return EG_ECORRUPT;
  }
  *last = eg_get64(end + 4);
  return EG_OK;
}

static int eg_seg_cmp(const void *a, const void *b) {
  const eg_walseg_info *x = a, *y = b;
  if (x->first_lsn != y->first_lsn) return x->first_lsn < y->first_lsn ? -1 : 1;
  if (x->epoch != y->epoch) return x->epoch < y->epoch ? -1 : 1;
  return x->partial - y->partial;
}

eg_err eg_walseg_list(const char *dir, eg_walseg_info **out, size_t *n, char *why, size_t whylen) {
  DIR *d = opendir(dir);
  eg_walseg_info *v = NULL;
  size_t cnt = 0, cap = 0;
  eg_err e = EG_OK;
  struct dirent *de;
  if (!d) return eg_io_fail(why, whylen, "cannot read", dir, "");
  while ((de = readdir(d))) {
    eg_walseg_info s = {0};
    if (strlen(de->d_name) >= sizeof s.name ||
        !eg_seg_parse(de->d_name, &s.first_lsn, &s.epoch, &s.partial))
      continue;
    memcpy(s.name, de->d_name, strlen(de->d_name) + 1); /* fits: checked above */
    if (cnt == cap) {
      eg_walseg_info *nv = realloc(v, (cap = cap ? 2 * cap : 64) * sizeof *v);
      if (!nv) {
        e = EG_ENOMEM;
        snprintf(why, whylen, "out of memory");
        break;
      }
      v = nv;
    }
    v[cnt++] = s;
  }
  closedir(d);
  for (size_t i = 0; i < cnt && !e; i++) {
    if (!v[i].partial) {
      e = eg_seg_read_end(dir, &v[i], &v[i].last_lsn, why, whylen);
    } else {
      /* One being created this instant (or left by a crash before its
       * header was durable) holds nothing yet. */
      off_t good;
      char path[EG_PATH_MAX + EG_WALSEG_NAME_MAX];
      struct stat st;
      snprintf(path, sizeof path, "%s/%s", dir, v[i].name);
      if (stat(path, &st) == 0 && st.st_size < EG_WALSEG_HEADER_BYTES)
        v[i].last_lsn = v[i].first_lsn - 1;
      else
        e = eg_seg_scan_partial(dir, v[i].name, &v[i].last_lsn, &good, NULL, NULL, 0, why, whylen);
    }
  }
  if (e) {
    free(v);
    return e;
  }
  if (cnt) qsort(v, cnt, sizeof *v, eg_seg_cmp);
  *out = v;
  *n = cnt;
  return EG_OK;
}

size_t eg_walseg_chain(const eg_walseg_info *segs, size_t n, eg_walseg_piece *pieces) {
  size_t np = 0;
  for (size_t i = 0; i < n; i++) {
    const eg_walseg_info *s = &segs[i];
    if (s->last_lsn < s->first_lsn) continue; /* no record */
    /* Stale: a higher epoch already holds an LSN from s's first on. */
    int stale = 0;
    for (size_t j = np; j-- > 0 && pieces[j].to >= s->first_lsn;)
      if (segs[pieces[j].seg].epoch > s->epoch) stale = 1;
    if (stale) continue;
    while (np && pieces[np - 1].from >= s->first_lsn) np--;
    if (np && pieces[np - 1].to >= s->first_lsn) pieces[np - 1].to = s->first_lsn - 1;
    pieces[np++] = (eg_walseg_piece){.seg = i, .from = s->first_lsn, .to = s->last_lsn};
  }
  return np;
}

/* ==== recovery =============================================================== */

eg_err eg_walseg_recover(const char *dir, eg_walseg_recovery *out, char *why, size_t whylen) {
  DIR *d = opendir(dir);
  struct dirent *de;
  eg_err e = EG_OK;
  *out = (eg_walseg_recovery){0};
  if (!d) return eg_io_fail(why, whylen, "cannot read", dir, "");
  while (!e && (de = readdir(d))) {
    uint64_t first, epoch, last;
    int partial, tail = EG_TAIL_TORN;
    off_t good;
    char path[EG_PATH_MAX + EG_WALSEG_NAME_MAX], bad[256];
    if (!eg_seg_parse(de->d_name, &first, &epoch, &partial) || !partial) continue;
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    /* A crash between its create and the header's fsync: an empty file. */
    int headless = stat(path, &st) == 0 && st.st_size < EG_WALSEG_HEADER_BYTES;
    if (headless)
      last = first - 1;
    else if ((e = eg_seg_scan_partial(dir, de->d_name, &last, &good, &tail, bad, sizeof bad, why,
                                      whylen)))
      break;
    if (tail == EG_TAIL_CORRUPT) {
      /* Damage of unknown extent (bit rot, a bad disk), not a crash: the
       * whole file goes out of the archive, kept for a look, and the
       * archiver takes its records from the log again (or reports the
       * gap). */
      char aside[EG_WALSEG_NAME_MAX + 16];
      snprintf(aside, sizeof aside, "%.*s.corrupt", EG_WALSEG_NAME_MAX, de->d_name);
      if ((e = eg_seg_place(dir, de->d_name, aside, "cannot set aside", NULL, why, whylen))) break;
      out->set_aside++;
      snprintf(out->corrupt, sizeof out->corrupt, "%.70s: %.240s", aside, bad);
      continue;
    }
    if (last < first) { /* nothing whole in it */
      if (unlink(path) || eg_fsync_dir(dir)) e = eg_io_fail(why, whylen, "cannot remove", dir, de->d_name);
      continue;
    }
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) || ftruncate(fd, good) || lseek(fd, good, SEEK_SET) != good) {
      e = eg_io_fail(why, whylen, "cannot cut the torn tail of", dir, de->d_name);
    } else {
      if (tail == EG_TAIL_TORN) out->cut += (uint64_t)(st.st_size - good);
      e = eg_seg_finish(fd, dir, de->d_name, last, NULL, why, whylen);
    }
    if (fd >= 0) close(fd);
  }
  closedir(d);
  return e;
}
