/*
 * Storage fault shim: linked into engramd-fault only, never into engramd.
 *
 * The executable is linked with -Wl,--wrap=SYMBOL for Engram's own calls
 * to malloc/calloc/realloc and to the LMDB functions below, so each goes
 * through a __wrap_ function here that either fails it or calls the real
 * one. fdatasync, fsync, pwrite and writev are defined here outright: the
 * executable's definitions take precedence over libc's for every caller,
 * liblmdb.so included, which is how a commit's own flush can fail.
 *
 * Points (count of calls since the last arm):
 *   malloc  malloc, calloc, realloc from Engram's objects       -> NULL, ENOMEM
 *   commit  mdb_txn_commit of a top-level write txn              -> the txn is
 *           aborted (as a failed commit leaves it) and err returned
 *   put     mdb_put, mdb_cursor_put                               -> err
 *   del     mdb_del, mdb_cursor_del                               -> err
 *   sync    fdatasync, fsync (LMDB's flush in a commit)           -> -1, errno err
 *   write   pwrite, writev to a regular file (LMDB's page writes) -> -1, errno err
 *           (with path=: also write, which the WAL archiver uses)
 *   reader  mdb_txn_begin(MDB_RDONLY), mdb_txn_renew              -> err
 * A txn whose put or del was failed is poisoned as LMDB poisons it
 * (MDB_TXN_ERROR): later puts, dels and its commit get MDB_BAD_TXN, so code
 * that ignored the first failure cannot commit half a change.
 *
 * Control: the spec "point=commit,nth=7,err=ENOSPC,count=1,gen=3" (count:
 * consecutive failures from the nth call on, 0 = every call from nth on;
 * default 1; nth=0 only counts calls; delay_ms=N: a hit sleeps N ms and then
 * succeeds instead of failing, to make a handler slow on purpose; path=S:
 * sync and write count only calls on a file whose path holds S, e.g.
 * path=.seg.partial for the WAL archive's open segment) is read from $ENGRAM_FAULT at start, and again from the file
 * named by $ENGRAM_FAULT_CTL on each SIGUSR1, which also resets the call
 * count. An empty spec disarms. Each arm is acknowledged on stderr with
 *   engram-fault: armed gen=G seen=K skipped=S
 * (K: calls the previous spec's point counted, S: calls at it that the
 * threads it leaves out made), and every injected failure with
 *   engram-fault: hit point=P n=N err=E
 * so a driver waits for the event rather than sleeping. Calls made by the
 * threads that wake on their own clock (key rotation, reindex, ...:
 * fault_skipped_threads) are neither counted nor failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum fault_point { FP_NONE, FP_MALLOC, FP_COMMIT, FP_PUT, FP_DEL, FP_SYNC, FP_WRITE, FP_READER };

static const char *const fault_point_names[] = {"none", "malloc", "commit", "put",
                                                "del",  "sync",   "write",  "reader"};

static const struct {
  const char *name;
  int code;
} fault_errs[] = {
    {"MAP_FULL", MDB_MAP_FULL},         {"TXN_FULL", MDB_TXN_FULL}, {"READERS_FULL", MDB_READERS_FULL},
    {"EIO", EIO},                       {"ENOSPC", ENOSPC},         {"ENOMEM", ENOMEM},
};

/* The armed spec. Written by the SIGUSR1 handler (point last, after the
 * rest), read by any thread: all atomics. */
static _Atomic int fault_point = FP_NONE;
static _Atomic long fault_nth, fault_count, fault_seen, fault_skipped, fault_delay_ms;
static _Atomic int fault_err;
/* path=: a substring of the file's path ("" = any file). */
#define FAULT_PATH_MAX 128
static char fault_path[FAULT_PATH_MAX];
static _Atomic size_t fault_path_len;

/* Top-level write txns (begin with no parent), to tell a commit that reaches
 * the disk from a nested one; and txns poisoned by a failed put or del.
 * One writer at a time, so a few slots are plenty. Guarded by fault_mu:
 * the writer, a follower and a promote may touch them. */
#define FAULT_SLOTS 8
static pthread_mutex_t fault_mu = PTHREAD_MUTEX_INITIALIZER;
static MDB_txn *fault_top[FAULT_SLOTS], *fault_poisoned[FAULT_SLOTS];

static const char *fault_err_name(int code) {
  for (size_t i = 0; i < sizeof fault_errs / sizeof fault_errs[0]; i++)
    if (fault_errs[i].code == code) return fault_errs[i].name;
  return "?";
}

/* ---- spec parsing: no malloc, no stdio (runs in a signal handler) ---------- */

static int fault_match(const char *s, size_t n, const char *word) {
  return strlen(word) == n && memcmp(s, word, n) == 0;
}

static long fault_num(const char *s, size_t n) {
  long v = 0;
  for (size_t i = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++) v = v * 10 + (s[i] - '0');
  return v;
}

static size_t fault_fmt_num(char *out, long v) {
  char tmp[24];
  size_t n = 0, k = 0;
  if (v < 0) v = 0;
  do tmp[n++] = (char)('0' + v % 10); while ((v /= 10) > 0);
  while (n) out[k++] = tmp[--n];
  return k;
}

static void fault_say(const char *s, size_t n) {
  ssize_t w = write(2, s, n);
  (void)w;
}

/* Applies spec (not NUL-terminated, len bytes) and acknowledges it. */
static void fault_arm(const char *spec, size_t len) {
  int point = FP_NONE, err = 0;
  long nth = 1, count = 1, gen = 0, delay_ms = 0;
  const char *path = NULL;
  size_t i = 0, path_len = 0;
  while (i < len) {
    size_t j = i;
    while (j < len && spec[j] != ',' && spec[j] != '\n') j++;
    const char *eq = memchr(spec + i, '=', j - i);
    if (eq) {
      const char *k = spec + i, *v = eq + 1;
      size_t kn = (size_t)(eq - k), vn = (size_t)(spec + j - v);
      if (fault_match(k, kn, "point")) {
        for (int p = 0; p < (int)(sizeof fault_point_names / sizeof fault_point_names[0]); p++)
          if (fault_match(v, vn, fault_point_names[p])) point = p;
      } else if (fault_match(k, kn, "err")) {
        for (size_t e = 0; e < sizeof fault_errs / sizeof fault_errs[0]; e++)
          if (fault_match(v, vn, fault_errs[e].name)) err = fault_errs[e].code;
      } else if (fault_match(k, kn, "nth")) {
        nth = fault_num(v, vn);
      } else if (fault_match(k, kn, "count")) {
        count = fault_num(v, vn);
      } else if (fault_match(k, kn, "delay_ms")) {
        delay_ms = fault_num(v, vn);
      } else if (fault_match(k, kn, "gen")) {
        gen = fault_num(v, vn);
      } else if (fault_match(k, kn, "path")) {
        path = v;
        path_len = vn < FAULT_PATH_MAX ? vn : FAULT_PATH_MAX;
      }
    }
    i = j + 1;
  }
  atomic_store(&fault_point, FP_NONE);
  long seen = atomic_exchange(&fault_seen, 0), skipped = atomic_exchange(&fault_skipped, 0);
  atomic_store(&fault_nth, nth);
  atomic_store(&fault_count, count);
  atomic_store(&fault_delay_ms, delay_ms);
  atomic_store(&fault_err, err ? err : (point == FP_MALLOC ? ENOMEM : EIO));
  if (path_len) memcpy(fault_path, path, path_len);
  atomic_store(&fault_path_len, path_len);
  atomic_store(&fault_point, point);
  char msg[128] = "engram-fault: armed gen=";
  size_t n = strlen(msg);
  n += fault_fmt_num(msg + n, gen);
  memcpy(msg + n, " seen=", 6);
  n += 6;
  n += fault_fmt_num(msg + n, seen);
  memcpy(msg + n, " skipped=", 9);
  n += 9;
  n += fault_fmt_num(msg + n, skipped);
  msg[n++] = '\n';
  fault_say(msg, n);
}

/* $ENGRAM_FAULT_CTL, read once at start: getenv is not for a handler. */
static const char *fault_ctl_path;

static void fault_on_usr1(int sig) {
  (void)sig;
  int saved = errno;
  const char *path = fault_ctl_path;
  char buf[256];
  ssize_t n = 0;
  int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
  if (fd >= 0) {
    n = read(fd, buf, sizeof buf);
    close(fd);
  }
  fault_arm(buf, n > 0 ? (size_t)n : 0);
  errno = saved;
}

__attribute__((constructor)) static void fault_init(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = fault_on_usr1;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  fault_ctl_path = getenv("ENGRAM_FAULT_CTL");
  sigaction(SIGUSR1, &sa, NULL);
  const char *spec = getenv("ENGRAM_FAULT");
  if (spec && spec[0]) fault_arm(spec, strlen(spec));
}

/* ---- the decision ------------------------------------------------------------ */

/* Threads that wake on their own clock, whatever the workload does: their
 * own calls are neither counted nor failed, so that the nth call of a
 * point is the workload's, as a driver's expected answers assume (an idle
 * key rotation or reindex thread starts a reader about every second).
 * Work they hand to the writer runs there and counts: FaultServer
 * (driver.py) turns the sweeper's off. Left in: the writer, and the WAL
 * archiver (tests fail its writes on purpose; it runs only with
 * --wal-archive-dir). */
static const char *const fault_skipped_threads[] = {"sweeper", "key rotation", "reindex",
                                                    "call-timeout", "conn watchdog", "coordinator"};

/* 1 if this thread's calls count; looked up once per thread. Every
 * engramd thread names itself before anything it does (eg_thread_name,
 * common/bgthread.h), so no thread is looked up under its creator's name. */
static int fault_thread_counts(void) {
  static _Thread_local int counts = -1;
  if (counts < 0) {
    char name[16] = "";
    counts = 1;
    if (pthread_getname_np(pthread_self(), name, sizeof name) == 0)
      for (size_t i = 0; i < sizeof fault_skipped_threads / sizeof fault_skipped_threads[0]; i++)
        if (strcmp(name, fault_skipped_threads[i]) == 0) counts = 0;
  }
  return counts;
}

/* Counts one call at point p; returns the error to inject, or 0. */
static int fault_hit(int p) {
  if (atomic_load_explicit(&fault_point, memory_order_acquire) != p) return 0;
  if (!fault_thread_counts()) {
    atomic_fetch_add(&fault_skipped, 1);
    return 0;
  }
  long k = atomic_fetch_add(&fault_seen, 1) + 1;
  long nth = atomic_load(&fault_nth), count = atomic_load(&fault_count);
  if (nth == 0 || k < nth || (count > 0 && k >= nth + count)) return 0;
  int err = atomic_load(&fault_err);
  long delay_ms = atomic_load(&fault_delay_ms);
  char msg[128];
  int n;
  if (delay_ms > 0) {
    n = snprintf(msg, sizeof msg, "engram-fault: hit point=%s n=%ld delay_ms=%ld\n",
                 fault_point_names[p], k, delay_ms);
    if (n > 0) fault_say(msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    struct timespec ts = {.tv_sec = delay_ms / 1000, .tv_nsec = delay_ms % 1000 * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    return 0;
  }
  n = snprintf(msg, sizeof msg, "engram-fault: hit point=%s n=%ld err=%s\n",
                   fault_point_names[p], k, fault_err_name(err));
  if (n > 0) fault_say(msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
  return err;
}

static int fault_slot_find(MDB_txn **slots, MDB_txn *t) {
  for (int i = 0; i < FAULT_SLOTS; i++)
    if (slots[i] == t) return i;
  return -1;
}

static void fault_slot_set(MDB_txn **slots, MDB_txn *t, int on) {
  pthread_mutex_lock(&fault_mu);
  int i = fault_slot_find(slots, on ? NULL : t);
  if (i >= 0) slots[i] = on ? t : NULL;
  pthread_mutex_unlock(&fault_mu);
}

static int fault_slot_has(MDB_txn **slots, MDB_txn *t) {
  pthread_mutex_lock(&fault_mu);
  int i = fault_slot_find(slots, t);
  pthread_mutex_unlock(&fault_mu);
  return t && i >= 0;
}

/* A new top-level write txn: its predecessor tree (and any nested txn in
 * it, which LMDB freed with its parent) is gone, so its poison is too. */
static void fault_new_tree(MDB_txn *t) {
  pthread_mutex_lock(&fault_mu);
  memset(fault_poisoned, 0, sizeof fault_poisoned);
  pthread_mutex_unlock(&fault_mu);
  fault_slot_set(fault_top, t, 1);
}

/* ---- allocation ------------------------------------------------------------ */

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);

void *__wrap_malloc(size_t n) {
  if (fault_hit(FP_MALLOC)) return errno = ENOMEM, NULL;
  return __real_malloc(n);
}

void *__wrap_calloc(size_t k, size_t n) {
  if (fault_hit(FP_MALLOC)) return errno = ENOMEM, NULL;
  return __real_calloc(k, n);
}

void *__wrap_realloc(void *p, size_t n) {
  if (fault_hit(FP_MALLOC)) return errno = ENOMEM, NULL;
  return __real_realloc(p, n);
}

/* ---- LMDB ---------------------------------------------------------------- */

int __real_mdb_txn_begin(MDB_env *env, MDB_txn *parent, unsigned flags, MDB_txn **txn);
int __real_mdb_txn_renew(MDB_txn *txn);
int __real_mdb_txn_commit(MDB_txn *txn);
void __real_mdb_txn_abort(MDB_txn *txn);
int __real_mdb_put(MDB_txn *txn, MDB_dbi dbi, MDB_val *k, MDB_val *v, unsigned flags);
int __real_mdb_del(MDB_txn *txn, MDB_dbi dbi, MDB_val *k, MDB_val *v);
int __real_mdb_cursor_put(MDB_cursor *c, MDB_val *k, MDB_val *v, unsigned flags);
int __real_mdb_cursor_del(MDB_cursor *c, unsigned flags);

/* The points cover the data store: the key store's env (DATA_DIR/keystore,
 * and its compaction's copy inside it) is left out, so that each row's
 * expected answers stay those of the data store's errors (README). */
#define FAULT_KEY_STORE "/keystore"

static int fault_key_store_env(MDB_env *env) {
  const char *path = NULL;
  return mdb_env_get_path(env, &path) == 0 && path && strstr(path, FAULT_KEY_STORE);
}

int __wrap_mdb_txn_begin(MDB_env *env, MDB_txn *parent, unsigned flags, MDB_txn **txn) {
  int rc;
  if (fault_key_store_env(env)) return __real_mdb_txn_begin(env, parent, flags, txn);
  if ((flags & MDB_RDONLY) && (rc = fault_hit(FP_READER))) return rc;
  rc = __real_mdb_txn_begin(env, parent, flags, txn);
  if (!rc && !parent && !(flags & MDB_RDONLY)) fault_new_tree(*txn);
  return rc;
}

/* A reset reader keeps its slot, so a real renew does not run out of
 * slots; a failed renew stands for "this reader could not start". */
int __wrap_mdb_txn_renew(MDB_txn *txn) {
  int rc = fault_key_store_env(mdb_txn_env(txn)) ? 0 : fault_hit(FP_READER);
  return rc ? rc : __real_mdb_txn_renew(txn);
}

void __wrap_mdb_txn_abort(MDB_txn *txn) {
  fault_slot_set(fault_top, txn, 0);
  fault_slot_set(fault_poisoned, txn, 0);
  __real_mdb_txn_abort(txn);
}

int __wrap_mdb_txn_commit(MDB_txn *txn) {
  int top = fault_slot_has(fault_top, txn), rc = 0;
  if (fault_slot_has(fault_poisoned, txn)) rc = MDB_BAD_TXN;
  else if (top) rc = fault_hit(FP_COMMIT);
  fault_slot_set(fault_top, txn, 0);
  fault_slot_set(fault_poisoned, txn, 0);
  if (!rc) return __real_mdb_txn_commit(txn);
  __real_mdb_txn_abort(txn);
  return rc;
}

/* The error for a put or del in txn: its poison, or an injected one (which
 * poisons it). */
static int fault_write_op(MDB_txn *txn, int point) {
  if (fault_key_store_env(mdb_txn_env(txn))) return 0;
  if (fault_slot_has(fault_poisoned, txn)) return MDB_BAD_TXN;
  int rc = fault_hit(point);
  if (rc) fault_slot_set(fault_poisoned, txn, 1);
  return rc;
}

int __wrap_mdb_put(MDB_txn *txn, MDB_dbi dbi, MDB_val *k, MDB_val *v, unsigned flags) {
  int rc = fault_write_op(txn, FP_PUT);
  return rc ? rc : __real_mdb_put(txn, dbi, k, v, flags);
}

int __wrap_mdb_cursor_put(MDB_cursor *c, MDB_val *k, MDB_val *v, unsigned flags) {
  int rc = fault_write_op(mdb_cursor_txn(c), FP_PUT);
  return rc ? rc : __real_mdb_cursor_put(c, k, v, flags);
}

int __wrap_mdb_del(MDB_txn *txn, MDB_dbi dbi, MDB_val *k, MDB_val *v) {
  int rc = fault_write_op(txn, FP_DEL);
  return rc ? rc : __real_mdb_del(txn, dbi, k, v);
}

int __wrap_mdb_cursor_del(MDB_cursor *c, unsigned flags) {
  int rc = fault_write_op(mdb_cursor_txn(c), FP_DEL);
  return rc ? rc : __real_mdb_cursor_del(c, flags);
}

/* ---- the disk (every caller in the process, liblmdb.so included) --------- */

/* Whether fd's file is one path= names (any file without path=), and not
 * the key store's (FAULT_KEY_STORE). */
static int fault_path_ok(int fd) {
  size_t n = atomic_load(&fault_path_len);
  char link[64], target[4096];
  int k = snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t t = k > 0 ? readlink(link, target, sizeof target - 1) : -1;
  if (t < 0) return 0;
  target[t] = '\0';
  if (strstr(target, FAULT_KEY_STORE "/")) return 0;
  return !n || memmem(target, (size_t)t, fault_path, n) != NULL;
}

static int fault_io_fd(int point, int fd) {
  if (atomic_load_explicit(&fault_point, memory_order_acquire) != point || !fault_path_ok(fd))
    return 0;
  int err = fault_hit(point);
  if (err) errno = err;
  return err;
}

int fdatasync(int fd) {
  if (fault_io_fd(FP_SYNC, fd)) return -1;
  return (int)syscall(SYS_fdatasync, fd);
}

int fsync(int fd) {
  if (fault_io_fd(FP_SYNC, fd)) return -1;
  return (int)syscall(SYS_fsync, fd);
}

/* Only regular files: a socket or pipe write is not the store's. */
static int fault_regular(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
  if (fault_regular(fd) && fault_io_fd(FP_WRITE, fd)) return -1;
  return syscall(SYS_pwrite64, fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
  if (fault_regular(fd) && fault_io_fd(FP_WRITE, fd)) return -1;
  return syscall(SYS_writev, fd, iov, cnt);
}

/* Counted only with path=: without it, write stays out of the point, as
 * LMDB never calls it. */
ssize_t write(int fd, const void *buf, size_t n) {
  if (atomic_load(&fault_path_len) && fault_regular(fd) && fault_io_fd(FP_WRITE, fd)) return -1;
  return syscall(SYS_write, fd, buf, n);
}
