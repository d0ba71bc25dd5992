/*
 * Power-cut simulator: an LD_PRELOAD library for engramd (tests/powercut/).
 *
 * A power cut keeps what the last completed flush made durable and, of the
 * writes after it, any subset (the device reorders them) or none. This
 * library watches the LMDB data file (opened by a path ending in $PC_FILE,
 * default "/data.mdb"; give the whole path when other LMDB envs run, such
 * as the key store's): every write to it (pwrite, write, writev) first saves the
 * bytes it overwrites in an undo log, unless its fd was opened O_DSYNC or
 * O_SYNC (such a write is durable when it returns: LMDB's synchronous meta
 * page writes); every fdatasync/fsync of it empties the log once the real
 * flush returned. At chosen flushes, just before the real flush runs (the
 * writer thread waits in it; the log's mutex keeps every other write out),
 * it writes two images of the file as a power cut at that moment could
 * leave it:
 *   cut-NNNN-worst.img  every write since the last flush undone;
 *   cut-NNNN-rand.img   each 4 KiB page of those writes kept or undone at
 *                       random (a page a later write kept stays kept).
 * and appends "NNNN T" to $PC_OUT/cuts.txt, T being CLOCK_MONOTONIC in ns
 * when the cut was taken: a write acknowledged before T must be in both
 * images.
 *
 * Control (environment, read at load):
 *   PC_OUT    directory for the images and cuts.txt (unset: the library
 *             only passes calls through)
 *   PC_EVERY  cut at every Nth flush of the file (default 7)
 *   PC_SKIP   flushes before the first cut (default 4: the store's open)
 *   PC_MAX    most cuts (default 20)
 *   PC_SEED   seed of the random variant (default 1)
 *   PC_DROP_DSYNC=1  open the file without O_DSYNC/O_SYNC: a "synchronous"
 *             meta write becomes an ordinary one, waiting for the next
 *             flush. With --meta-sync commit this turns engramd into the
 *             broken scheme (answer right after a commit whose meta page
 *             is not durable) that the test must catch.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define PC_PAGE 4096
#define PC_MAX_FDS 64

typedef struct {
  off_t off;
  size_t len;
  uint8_t *old; /* the bytes before the write (zeros past the old end) */
} pc_undo;

static struct {
  int on;
  const char *suffix;
  char out[4096];
  long every, skip, max;
  unsigned seed;
  int drop_dsync;
  pthread_mutex_t mu;
  int fds[PC_MAX_FDS]; /* tracked fds: the data file's, -1 free */
  char path[4096];     /* the data file's path, for the images */
  int rfd;             /* the data file, read-only: the undo log's source */
  pc_undo *log;
  size_t n, cap;
  long flushes, cuts;
} pc = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_close)(int);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static int (*real_fdatasync)(int);
static int (*real_fsync)(int);

static long pc_env_long(const char *name, long def) {
  const char *v = getenv(name);
  return v && *v ? strtol(v, NULL, 10) : def;
}

/* The real functions, also when a call comes before the constructor ran
 * (another library's constructor writing, say). */
static void pc_resolve(void) {
  if (real_fsync) return;
  real_open = dlsym(RTLD_NEXT, "open");
  real_open64 = dlsym(RTLD_NEXT, "open64");
  real_close = dlsym(RTLD_NEXT, "close");
  real_pwrite = dlsym(RTLD_NEXT, "pwrite");
  real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
  real_write = dlsym(RTLD_NEXT, "write");
  real_writev = dlsym(RTLD_NEXT, "writev");
  real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
  real_fsync = dlsym(RTLD_NEXT, "fsync");
}

__attribute__((constructor)) static void pc_init(void) {
  pc_resolve();
  for (int i = 0; i < PC_MAX_FDS; i++) pc.fds[i] = -1;
  const char *out = getenv("PC_OUT");
  if (!out || !*out) return;
  snprintf(pc.out, sizeof pc.out, "%s", out);
  pc.suffix = getenv("PC_FILE") && *getenv("PC_FILE") ? getenv("PC_FILE") : "/data.mdb";
  pc.every = pc_env_long("PC_EVERY", 7);
  pc.skip = pc_env_long("PC_SKIP", 4);
  pc.max = pc_env_long("PC_MAX", 20);
  pc.seed = (unsigned)pc_env_long("PC_SEED", 1);
  pc.drop_dsync = pc_env_long("PC_DROP_DSYNC", 0) != 0;
  if (pc.every < 1) pc.every = 1;
  pc.on = 1;
}

static void pc_die(const char *what) {
  fprintf(stderr, "powercut: %s: %s\n", what, strerror(errno));
  abort();
}

/* Lock-free so calls on other fds never wait for a flush; a tracked fd
 * changes only in open and close of that fd. */
static int pc_tracked(int fd) {
  for (int i = 0; i < PC_MAX_FDS; i++)
    if (__atomic_load_n(&pc.fds[i], __ATOMIC_ACQUIRE) == fd) return 1;
  return 0;
}

static int pc_is_data(const char *path) {
  size_t n = strlen(path), m = strlen(pc.suffix);
  return n >= m && strcmp(path + n - m, pc.suffix) == 0;
}

static int pc_opened(const char *path, int flags, int fd) {
  if (fd < 0 || !pc.on || !pc_is_data(path)) return fd;
  pthread_mutex_lock(&pc.mu);
  if (!pc.path[0]) {
    if (!realpath(path, pc.path)) snprintf(pc.path, sizeof pc.path, "%s", path);
    /* LMDB's meta fd is write-only: the old bytes are read through this. */
    if ((pc.rfd = real_open(pc.path, O_RDONLY | O_CLOEXEC)) < 0) pc_die(pc.path);
  }
  /* Writes through an O_DSYNC fd are durable at return: not logged. */
  if (!(flags & (O_DSYNC | O_SYNC)))
    for (int i = 0; i < PC_MAX_FDS; i++)
      if (pc.fds[i] == -1) {
        __atomic_store_n(&pc.fds[i], fd, __ATOMIC_RELEASE);
        break;
      }
  pthread_mutex_unlock(&pc.mu);
  return fd;
}

static int pc_flags(const char *path, int flags) {
  if (pc.on && pc.drop_dsync && pc_is_data(path)) flags &= ~(O_DSYNC | O_SYNC);
  return flags;
}

int open(const char *path, int flags, ...) {
  pc_resolve();
  va_list ap;
  va_start(ap, flags);
  mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
  va_end(ap);
  flags = pc_flags(path, flags);
  return pc_opened(path, flags, real_open(path, flags, mode));
}

int open64(const char *path, int flags, ...) {
  pc_resolve();
  va_list ap;
  va_start(ap, flags);
  mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
  va_end(ap);
  flags = pc_flags(path, flags);
  return pc_opened(path, flags, real_open64(path, flags, mode));
}

int close(int fd) {
  pc_resolve();
  if (pc.on) {
    pthread_mutex_lock(&pc.mu);
    for (int i = 0; i < PC_MAX_FDS; i++)
      if (pc.fds[i] == fd) __atomic_store_n(&pc.fds[i], -1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&pc.mu);
  }
  return real_close(fd);
}

/* Saves the len bytes at off before a write to fd overwrites them.
 * Called with pc.mu held. */
static void pc_save(off_t off, size_t len) {
  if (pc.n == pc.cap) {
    pc.cap = pc.cap ? pc.cap * 2 : 256;
    if (!(pc.log = realloc(pc.log, pc.cap * sizeof *pc.log))) pc_die("undo log");
  }
  uint8_t *old = calloc(1, len ? len : 1);
  if (!old) pc_die("undo bytes");
  for (size_t got = 0; got < len;) {
    ssize_t r = pread(pc.rfd, old + got, len - got, off + (off_t)got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break; /* past the end: zeros */
    got += (size_t)r;
  }
  pc.log[pc.n++] = (pc_undo){off, len, old};
}

static void pc_forget(void) {
  for (size_t i = 0; i < pc.n; i++) free(pc.log[i].old);
  pc.n = 0;
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off) {
  pc_resolve();
  if (!pc.on || !pc_tracked(fd)) return real_pwrite(fd, buf, len, off);
  pthread_mutex_lock(&pc.mu);
  pc_save(off, len);
  ssize_t r = real_pwrite(fd, buf, len, off);
  pthread_mutex_unlock(&pc.mu);
  return r;
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off) {
  pc_resolve();
  if (!pc.on || !pc_tracked(fd)) return real_pwrite64(fd, buf, len, off);
  pthread_mutex_lock(&pc.mu);
  pc_save(off, len);
  ssize_t r = real_pwrite64(fd, buf, len, off);
  pthread_mutex_unlock(&pc.mu);
  return r;
}

ssize_t write(int fd, const void *buf, size_t len) {
  pc_resolve();
  if (!pc.on || !pc_tracked(fd)) return real_write(fd, buf, len);
  pthread_mutex_lock(&pc.mu);
  pc_save(lseek(fd, 0, SEEK_CUR), len);
  ssize_t r = real_write(fd, buf, len);
  pthread_mutex_unlock(&pc.mu);
  return r;
}

ssize_t writev(int fd, const struct iovec *iov, int n) {
  pc_resolve();
  if (!pc.on || !pc_tracked(fd)) return real_writev(fd, iov, n);
  pthread_mutex_lock(&pc.mu);
  size_t len = 0;
  for (int i = 0; i < n; i++) len += iov[i].iov_len;
  pc_save(lseek(fd, 0, SEEK_CUR), len);
  ssize_t r = real_writev(fd, iov, n);
  pthread_mutex_unlock(&pc.mu);
  return r;
}

static void pc_write_all(int fd, const void *buf, size_t len, off_t off) {
  for (size_t done = 0; done < len;) {
    ssize_t r = real_pwrite(fd, (const uint8_t *)buf + done, len - done, off + (off_t)done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) pc_die("image write");
    done += (size_t)r;
  }
}

static int pc_page_kept(const uint8_t *kept, off_t page) {
  return kept && (kept[page / 8] >> (page % 8)) & 1;
}

/* Writes the file as it is, then undoes the logged writes newest first:
 * all of them (kept NULL), or the pages not drawn as kept. */
static void pc_image(const char *name, int random) {
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", pc.out, name);
  int in = real_open(pc.path, O_RDONLY);
  int out = real_open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (in < 0 || out < 0) pc_die(path);
  static uint8_t buf[1 << 16];
  off_t off = 0, end = 0;
  for (;;) {
    ssize_t r = pread(in, buf, sizeof buf, off);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) pc_die("image read");
    if (r == 0) break;
    pc_write_all(out, buf, (size_t)r, off);
    off += r;
  }
  real_close(in);
  for (size_t i = 0; i < pc.n; i++)
    if (pc.log[i].off + (off_t)pc.log[i].len > end) end = pc.log[i].off + (off_t)pc.log[i].len;
  uint8_t *kept = NULL;
  if (random && !(kept = calloc(1, (size_t)(end / PC_PAGE) / 8 + 2))) pc_die("page map");
  for (size_t i = pc.n; i-- > 0;) {
    const pc_undo *u = &pc.log[i];
    for (size_t at = 0; at < u->len;) {
      off_t pos = u->off + (off_t)at, page = pos / PC_PAGE;
      size_t n = (size_t)((page + 1) * PC_PAGE - pos);
      if (n > u->len - at) n = u->len - at;
      int keep = pc_page_kept(kept, page) || (random && rand_r(&pc.seed) % 2);
      if (keep && kept) kept[page / 8] |= (uint8_t)(1u << (page % 8));
      if (!keep) pc_write_all(out, u->old + at, n, pos);
      at += n;
    }
  }
  free(kept);
  real_close(out);
}

static void pc_cut(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  long k = ++pc.cuts;
  char name[64];
  snprintf(name, sizeof name, "cut-%04ld-worst.img", k);
  pc_image(name, 0);
  snprintf(name, sizeof name, "cut-%04ld-rand.img", k);
  pc_image(name, 1);
  char path[4200];
  snprintf(path, sizeof path, "%s/cuts.txt", pc.out);
  FILE *f = fopen(path, "a");
  if (!f) pc_die(path);
  fprintf(f, "%04ld %lld %zu\n", k, (long long)now.tv_sec * 1000000000LL + now.tv_nsec, pc.n);
  fclose(f);
}

static int pc_flush(int fd, int (*real)(int)) {
  pc_resolve();
  if (!pc.on || !pc_tracked(fd)) return real(fd);
  pthread_mutex_lock(&pc.mu);
  {
    pc.flushes++;
    if (pc.flushes > pc.skip && (pc.flushes - pc.skip) % pc.every == 0 && pc.cuts < pc.max)
      pc_cut();
  }
  int r = real(fd);
  if (r == 0) pc_forget();
  pthread_mutex_unlock(&pc.mu);
  return r;
}

int fdatasync(int fd) {
  pc_resolve();
  return pc_flush(fd, real_fdatasync);
}

int fsync(int fd) {
  pc_resolve();
  return pc_flush(fd, real_fsync);
}
