/*
 * Snapshots: the primary streams a compacted copy of its store with its
 * LSN and a SHA-256; a replica writes it beside its data, checks it, and
 * marks it ready; main installs it before opening the store.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/bgthread.h"
#include "common/log.h"
#include "crypto/crypto.h"
#include "engram/v1/replication.pb-c.h"
#include "replica/internal.h"

#define EG_SNAPSHOT_CHUNK (1u << 20)

static void eg_snap_path(char *out, size_t n, const char *dir, const char *name) {
  snprintf(out, n, "%s/%s", dir, name);
}

/* ==== primary (and any node: backups) ====================================== */

/* Streams the copy at fd (size bytes, whose SHA-256 is sha256) in chunks
 * built by build and sent by send; the last message carries the totals. A
 * read error, or a copy that reads back other than its size, ends the
 * stream without them (EG_EIO): totals would vouch for a truncated copy.
 * The digest was taken on the copy's thread (eg_copy_run), off the same
 * unlinked file, which nothing else can change; the receiver checks it
 * against the bytes it got. */
static eg_err eg_copy_send_file(int fd, uint64_t size, const uint8_t *sha256,
                                const eg_store_file_info *info, eg_repl_copy_msg_fn build,
                                void *arg, eg_repl_send_fn send, void *send_arg, char *msg,
                                size_t msglen) {
  uint8_t *buf = malloc(EG_SNAPSHOT_CHUNK);
  uint64_t total = 0;
  ssize_t n = 0;
  if (!buf) return EG_ENOMEM;
  eg_err e = EG_OK;
  while (!e && (n = read(fd, buf, EG_SNAPSHOT_CHUNK)) != 0) {
    if (n < 0) {
      if (errno == EINTR) continue;
      snprintf(msg, msglen, "cannot read the copy: %s", strerror(errno));
      e = EG_EIO;
      break;
    }
    eg_repl_copy_piece p = {.data = buf, .len = (size_t)n, .size = total ? 0 : size};
    total += (uint64_t)n;
    e = send(send_arg, build(arg, &p), msg, msglen);
  }
  free(buf);
  if (e) return e;
  if (total != size) {
    snprintf(msg, msglen, "the copy read back %llu bytes, not its %llu", (unsigned long long)total,
             (unsigned long long)size);
    return EG_EIO;
  }
  eg_repl_copy_piece last = {.last = 1, .info = info, .total = total, .sha256 = sha256};
  return send(send_arg, build(arg, &last), msg, msglen);
}

/* The copies' names: EG_COPY_PREFIX PID-N EG_COPY_SUFFIX in the data dir. */
#define EG_COPY_PREFIX "snapshot-out-"
#define EG_COPY_SUFFIX ".mdb"

/* One copy of the store, made on a thread of its own (eg_copy_run). */
typedef struct {
  eg_repl_copy_fn copy;
  void *copy_arg;
  char path[4096];
  int idle; /* lower the thread's priority (SCHED_IDLE) first */
  /* out: the copy open (unlinked), its size, digest and LSN; or e and msg */
  int fd;
  uint64_t size;
  uint8_t sha256[32];
  eg_store_file_info info;
  eg_err e;
  char msg[256];
} eg_copy_job;

/* Reads the copy at fd whole into its size and SHA-256, and back to its
 * start. */
static eg_err eg_copy_digest(eg_copy_job *j) {
  uint8_t *buf = malloc(EG_SNAPSHOT_CHUNK);
  eg_sha256 h;
  ssize_t n;
  if (!buf) return EG_ENOMEM;
  eg_sha256_init(&h);
  j->size = 0;
  while ((n = read(j->fd, buf, EG_SNAPSHOT_CHUNK)) != 0) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    eg_sha256_update(&h, buf, (size_t)n);
    j->size += (uint64_t)n;
  }
  free(buf);
  if (n < 0 || lseek(j->fd, 0, SEEK_SET) != 0) {
    snprintf(j->msg, sizeof j->msg, "cannot read the copy: %s", strerror(errno));
    return EG_EUNAVAIL;
  }
  eg_sha256_final(&h, j->sha256);
  return EG_OK;
}

/* The costly part of a copy: LMDB's compacting copy and the digest pass.
 * With idle, this thread (and LMDB's copy thread, which inherits it) runs
 * under SCHED_IDLE: it gets a CPU only when no serving thread wants one.
 * It never raises it back (an unprivileged process cannot), so it ends
 * with the copy. The only thing it holds that serving threads wait for is
 * the copy's read txn under map_lock (read side), which a map grow (and
 * the readers queued behind it) waits for at most 2 s before it gives up
 * (EG_EMAPBUSY): starving this thread can fail a grow, never hang a
 * serving thread. The stream thread, which sends
 * and takes the transport's locks, keeps its normal priority. */
static void *eg_copy_run(void *arg) {
  eg_copy_job *j = arg;
  eg_thread_name("copy");
  if (j->idle) {
    struct sched_param idle = {.sched_priority = 0};
    (void)pthread_setschedparam(pthread_self(), SCHED_IDLE, &idle); /* best effort */
  }
  j->fd = -1;
  if ((j->e = j->copy(j->copy_arg, j->path, &j->info))) {
    snprintf(j->msg, sizeof j->msg, "cannot copy the store: %s", eg_err_msg(j->e));
    if (j->e == EG_EIO) j->e = EG_EUNAVAIL;
    return NULL;
  }
  j->fd = open(j->path, O_RDONLY | O_CLOEXEC);
  /* Unlinked at once: the open fd keeps it until the stream ends. */
  unlink(j->path);
  if (j->fd < 0) {
    snprintf(j->msg, sizeof j->msg, "cannot open the copy: %s", strerror(errno));
    j->e = EG_EUNAVAIL;
    return NULL;
  }
  if ((j->e = eg_copy_digest(j))) {
    close(j->fd);
    j->fd = -1;
  }
  return NULL;
}

static eg_err eg_copy_store(void *store, const char *path, eg_store_file_info *info) {
  return eg_store_copy(store, path, info);
}

eg_err eg_repl_serve_copy(eg_repl *r, int idle, eg_repl_copy_msg_fn build, void *arg,
                          eg_repl_send_fn send, eg_repl_check_fn check, void *send_arg, char *msg,
                          size_t msglen) {
  return eg_repl_serve_copy_of(r, idle, eg_copy_store, r->store, build, arg, send, check,
                               send_arg, msg, msglen);
}

eg_err eg_repl_serve_copy_of(eg_repl *r, int idle, eg_repl_copy_fn copy, void *copy_arg,
                             eg_repl_copy_msg_fn build, void *arg, eg_repl_send_fn send,
                             eg_repl_check_fn check, void *send_arg, char *msg, size_t msglen) {
  static atomic_uint seq;
  eg_copy_job *j = calloc(1, sizeof *j);
  pthread_t t;
  if (!j) return EG_ENOMEM;
  j->copy = copy;
  j->copy_arg = copy_arg;
  j->idle = idle;
  snprintf(j->path, sizeof j->path, "%s/" EG_COPY_PREFIX "%d-%u" EG_COPY_SUFFIX,
           eg_store_dir(r->store), (int)getpid(), atomic_fetch_add(&seq, 1));
  int rc = pthread_create(&t, NULL, eg_copy_run, j);
  if (rc != 0) {
    snprintf(msg, msglen, "cannot start a thread for the copy: %s", strerror(rc));
    free(j);
    return EG_EUNAVAIL;
  }
  /* Not interruptible midway (mdb_env_copyfd2 has no cancel): a stopping
   * engramd bounds this wait with its drain (--call-timeout-ms). */
  pthread_join(t, NULL);
  eg_err e = j->e;
  if (e) snprintf(msg, msglen, "%s", j->msg);
  /* The copy alone may have used up the stream's time, or the call may be
   * gone: say so now, before any of it is sent. */
  if (!e && check) e = check(send_arg, msg, msglen);
  if (!e)
    e = eg_copy_send_file(j->fd, j->size, j->sha256, &j->info, build, arg, send, send_arg, msg,
                          msglen);
  if (j->fd >= 0) close(j->fd);
  free(j);
  return e;
}

void eg_repl_remove_stale_copies(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *de;
  char path[4096];
  size_t np = strlen(EG_COPY_PREFIX), ns = strlen(EG_COPY_SUFFIX);
  if (!d) return; /* the store's own open reports a dir it cannot read */
  while ((de = readdir(d))) {
    size_t n = strlen(de->d_name);
    if (n <= np + ns || strncmp(de->d_name, EG_COPY_PREFIX, np) != 0 ||
        strcmp(de->d_name + n - ns, EG_COPY_SUFFIX) != 0)
      continue;
    eg_snap_path(path, sizeof path, dir, de->d_name);
    if (unlink(path) == 0)
      eg_log(EG_LOG_INFO, "removed %s, a copy of the store that an engramd which stopped "
             "while serving a snapshot or backup left behind", path);
    else
      eg_log(EG_LOG_WARN, "cannot remove %s, a stale copy of the store: %s", path,
             strerror(errno));
  }
  closedir(d);
}

/* A SnapshotChunk for piece p (arg: the message to fill). */
static const ProtobufCMessage *eg_snap_msg(void *arg, const eg_repl_copy_piece *p) {
  Engram__V1__SnapshotChunk *c = arg;
  engram__v1__snapshot_chunk__init(c);
  c->data = (ProtobufCBinaryData){p->len, (uint8_t *)p->data};
  if (p->last) {
    c->last = 1;
    c->lsn = p->info->lsn;
    c->epoch = p->info->epoch;
    c->total_bytes = p->total;
    c->sha256 = (ProtobufCBinaryData){32, (uint8_t *)p->sha256};
  }
  return &c->base;
}

eg_err eg_repl_serve_snapshot(eg_repl *r, eg_repl_send_fn send, eg_repl_check_fn check,
                              void *send_arg, char *msg, size_t msglen) {
  Engram__V1__SnapshotChunk c;
  /* A replica's resync: normal priority, it is how a replica catches up. */
  return eg_repl_serve_copy(r, 0, eg_snap_msg, &c, send, check, send_arg, msg, msglen);
}

/* ==== replica ============================================================== */

/* Receives chunks into fd; checks size and digest of the last one, and
 * gives the LSN and epoch it announces. */
static eg_err eg_snap_receive(grpc_call *call, grpc_completion_queue *cq, int fd, uint64_t *lsn,
                              uint64_t *epoch) {
  eg_sha256 h;
  uint64_t total = 0;
  Engram__V1__SnapshotChunk *c;
  eg_sha256_init(&h);
  while ((c = (void *)eg_rpc_recv(call, cq, &engram__v1__snapshot_chunk__descriptor))) {
    eg_err e = EG_OK;
    if (c->last) {
      uint8_t digest[32];
      eg_sha256_final(&h, digest);
      int good = c->total_bytes == total && c->sha256.len == 32 &&
                 memcmp(c->sha256.data, digest, 32) == 0;
      *lsn = c->lsn;
      *epoch = c->epoch;
      protobuf_c_message_free_unpacked(&c->base, NULL);
      return good ? EG_OK : EG_ECORRUPT;
    }
    eg_sha256_update(&h, c->data.data, c->data.len);
    total += c->data.len;
    if (write(fd, c->data.data, c->data.len) != (ssize_t)c->data.len) e = EG_EIO;
    protobuf_c_message_free_unpacked(&c->base, NULL);
    if (e) return e;
  }
  return EG_EUNAVAIL; /* the stream ended before the last chunk */
}

eg_err eg_repl_fetch_snapshot(eg_repl *r) {
  char partial[4096], ready[4096], why[256] = "";
  const char *dir = eg_store_dir(r->store);
  eg_snap_path(partial, sizeof partial, dir, EG_REPL_SNAPSHOT_PARTIAL);
  eg_snap_path(ready, sizeof ready, dir, EG_REPL_SNAPSHOT_READY);
  int fd = open(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return EG_EIO;

  Engram__V1__SnapshotRequest req = ENGRAM__V1__SNAPSHOT_REQUEST__INIT;
  req.replica_id = r->replica_id;
  eg_upstream u;
  uint64_t lsn = 0, epoch = 0;
  eg_err e = EG_EUNAVAIL;
  if (eg_upstream_open(r, EG_REPL_SERVICE "Snapshot", &req.base, 1, &u))
    e = eg_snap_receive(u.call, u.cq, fd, &lsn, &epoch);
  eg_upstream_close(r, &u);
  if (!e && fsync(fd) != 0) e = EG_EIO;
  close(fd);
  /* The digest proves the bytes came as sent; this proves they are the
   * store the primary announced, before anything may install them. */
  eg_store_file_info info;
  if (!e) e = eg_store_file_check(partial, lsn, epoch, &info, why, sizeof why);
  if (!e && rename(partial, ready) != 0) e = EG_EIO;
  if (e) unlink(partial);
  eg_log(e ? EG_LOG_WARN : EG_LOG_INFO, "replica: snapshot %s%s%s",
         e ? eg_err_msg(e) : "received and checked", why[0] ? ": " : "", why);
  return e;
}

eg_err eg_repl_install_pending(const char *dir) {
  char ready[4096];
  struct stat st;
  eg_snap_path(ready, sizeof ready, dir, EG_REPL_SNAPSHOT_READY);
  if (stat(ready, &st) != 0) return EG_OK;
  eg_log(EG_LOG_INFO, "replica: installing the snapshot fetched from the primary");
  return eg_store_install_snapshot(dir, ready);
}

void eg_repl_discard_snapshot(eg_repl *r) {
  char ready[4096];
  eg_snap_path(ready, sizeof ready, eg_store_dir(r->store), EG_REPL_SNAPSHOT_READY);
  unlink(ready);
}
