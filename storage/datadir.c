/* The data dir: its mode, the lock that keeps a second engramd out, and
 * the checks that keep a damaged or replaced data.mdb from being served. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/log.h"
#include "storage/internal.h"

#define EG_DATA_FILE "data.mdb"
/* The store id beside the data, written at first open: its presence says
 * a store lived here, so an empty or foreign data.mdb is refused. */
#define EG_STORE_ID_FILE "engram.id"
#define EG_STORE_ID_META "store_id"
/* LMDB's own lock file: created when an env is opened, and left behind. */
#define EG_LMDB_LOCK_FILE "lock.mdb"
/* Where engramd keeps the keyring when --keyring names none. */
#define EG_KEYRING_FILE "keyring"
/* 16 random bytes in hex. */
#define EG_STORE_ID_LEN 32

static void eg_path(char *out, size_t n, const char *dir, const char *file) {
  snprintf(out, n, "%s/%s", dir, file);
}

/* ---- mode ------------------------------------------------------------------ */

eg_err eg_store__make_dir(const char *dir, char *err, size_t errlen) {
  struct stat st;
  if (mkdir(dir, 0700) == 0) return EG_OK;
  if (errno != EEXIST || stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    snprintf(err, errlen, "data dir %s: %s", dir, errno == EEXIST ? "not a directory"
                                                                  : strerror(errno));
    return EG_EIO;
  }
  if (!(st.st_mode & 077)) return EG_OK;
  /* It holds the keyring and the data: no one else may read it. */
  if (st.st_uid != geteuid()) {
    snprintf(err, errlen, "data dir %s has mode %04o and belongs to uid %d, not this user "
             "(uid %d): its owner must run chmod 0700 %s", dir, (unsigned)(st.st_mode & 07777),
             (int)st.st_uid, (int)geteuid(), dir);
    return EG_EPERM;
  }
  if (chmod(dir, 0700) != 0) {
    snprintf(err, errlen, "data dir %s: chmod 0700: %s", dir, strerror(errno));
    return EG_EIO;
  }
  eg_log(EG_LOG_WARN, "data dir %s had mode %04o; set it to 0700", dir,
         (unsigned)(st.st_mode & 07777));
  return EG_OK;
}

/* ---- lock ------------------------------------------------------------------- */

eg_err eg_store_lock_dir(const char *dir, int *fd_out, char *err, size_t errlen) {
  char path[4096], holder[32] = "";
  eg_err e = eg_store__make_dir(dir, err, errlen);
  if (e) return e;
  eg_path(path, sizeof path, dir, EG_STORE_LOCK_FILE);
  /* O_CLOEXEC: an exec of engramd (installing a snapshot) drops the lock
   * with the fd, and the new image takes it again. */
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return EG_EIO;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int busy = errno == EWOULDBLOCK;
    ssize_t n = busy ? pread(fd, holder, sizeof holder - 1, 0) : -1;
    holder[n > 0 ? n : 0] = '\0';
    holder[strcspn(holder, "\n")] = '\0';
    if (busy)
      snprintf(err, errlen, "data dir %s is in use by another engramd (pid %s, holding %s)", dir,
               holder[0] ? holder : "unknown", path);
    else
      snprintf(err, errlen, "%s: flock: %s", path, strerror(errno));
    close(fd);
    return busy ? EG_EPRECOND : EG_EIO;
  }
  int len = snprintf(holder, sizeof holder, "%d\n", (int)getpid());
  if (ftruncate(fd, 0) != 0 || pwrite(fd, holder, (size_t)len, 0) != len) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    close(fd);
    return EG_EIO;
  }
  *fd_out = fd;
  return EG_OK;
}

void eg_store_unlock_dir(int fd) {
  /* The file stays: unlinking it would let a waiting opener lock an inode
   * no later process will see. */
  if (fd >= 0) close(fd);
}

/* ---- data file ------------------------------------------------------------- */

/* Reads the marker: EG_ENOTFOUND if absent, EG_ECORRUPT if it does not
 * hold an id. */
static eg_err eg_read_store_id(const char *dir, char id[EG_STORE_ID_LEN + 1], char *err,
                               size_t errlen) {
  char path[4096], buf[EG_STORE_ID_LEN + 2];
  eg_path(path, sizeof path, dir, EG_STORE_ID_FILE);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) return EG_ENOTFOUND;
  ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf);
  if (fd >= 0) close(fd);
  if (n != EG_STORE_ID_LEN + 1 || buf[EG_STORE_ID_LEN] != '\n' ||
      strspn(buf, "0123456789abcdef") != EG_STORE_ID_LEN) {
    snprintf(err, errlen, "%s: %s", path, n < 0 ? strerror(errno) : "not a store id");
    return EG_ECORRUPT;
  }
  memcpy(id, buf, EG_STORE_ID_LEN);
  id[EG_STORE_ID_LEN] = '\0';
  return EG_OK;
}

/* 1 if path names a file whose directory is dir (the same inode, however
 * either was spelled: "./data", a symlink, "data/../data"). */
static int eg_in_dir(const char *path, const struct stat *dir) {
  char real[PATH_MAX];
  struct stat st;
  if (!realpath(path, real)) return 0;
  *strrchr(real, '/') = '\0'; /* realpath is absolute: there is a '/' */
  if (stat(real[0] ? real : "/", &st) != 0) return 0;
  return st.st_dev == dir->st_dev && st.st_ino == dir->st_ino;
}

eg_err eg_store__check_data_file(const char *dir, const char *keyring, char *err, size_t errlen) {
  char path[4096], kpath[4096], lpath[4096], id[EG_STORE_ID_LEN + 1], why[8400];
  struct stat st, dst;
  eg_path(path, sizeof path, dir, EG_STORE_RESTORE_DIR);
  if (lstat(path, &st) == 0) {
    char done[4200], staged[4200];
    snprintf(done, sizeof done, "%s/%s", path, EG_STORE_RESTORE_DONE);
    snprintf(staged, sizeof staged, "%s/%s", path, EG_DATA_FILE);
    if (access(done, F_OK) == 0 && access(staged, F_OK) != 0) {
      snprintf(err, errlen, "%s exists, but the `engram backup restore` into %s finished: %s/%s "
               "is the restored data and only the staging dir was not removed. Remove %s to "
               "start on the restored data", path, dir, dir, EG_DATA_FILE, path);
      return EG_ECORRUPT;
    }
    snprintf(err, errlen, "%s exists: an `engram backup restore` into %s did not finish. Run the "
             "restore again (it removes the staging dir first), or remove %s to use the data dir "
             "as it was", path, dir, path);
    return EG_ECORRUPT;
  }
  eg_path(path, sizeof path, dir, EG_DATA_FILE);
  int missing = stat(path, &st) != 0;
  if (!missing && st.st_size > 0) return EG_OK;
  eg_err e = eg_read_store_id(dir, id, err, errlen);
  if (e && e != EG_ENOTFOUND) return e;
  eg_path(kpath, sizeof kpath, dir, EG_KEYRING_FILE);
  eg_path(lpath, sizeof lpath, dir, EG_LMDB_LOCK_FILE);
  /* A keyring beside LMDB's lock file: an env was opened here with that
   * keyring (a store from before engram.id). A keyring alone may have been
   * copied in for a first start (a replica's). */
  int opened = access(lpath, F_OK) == 0;
  if (!e)
    snprintf(why, sizeof why, "%s/%s says store %s lived here", dir, EG_STORE_ID_FILE, id);
  else if (opened && access(kpath, F_OK) == 0)
    snprintf(why, sizeof why, "%s and %s exist: a store lived here", kpath, lpath);
  else if (opened && keyring && stat(dir, &dst) == 0 && eg_in_dir(keyring, &dst))
    snprintf(why, sizeof why, "the keyring %s is in the data dir beside %s: a store lived here",
             keyring, lpath);
  else
    return EG_OK; /* a new store */
  snprintf(err, errlen, "%s is %s, but %s. Restore data.mdb from a backup or a replica (a "
           "replica's copy may carry its own store id: then remove %s to adopt it). To start an "
           "empty store here on purpose, remove %s and move the keyring out of the data dir "
           "(pass it with --keyring to keep its keys)", path, missing ? "missing" : "empty", why,
           EG_STORE_ID_FILE, EG_STORE_ID_FILE);
  return EG_ECORRUPT;
}

eg_err eg_store__check_data_size(eg_store *s, char *err, size_t errlen) {
  char path[4096];
  MDB_envinfo info;
  MDB_stat ms;
  struct stat st;
  eg_path(path, sizeof path, s->dir, EG_DATA_FILE);
  int rc = mdb_env_info(s->env, &info);
  if (!rc) rc = mdb_env_stat(s->env, &ms);
  if (!rc && stat(path, &st) != 0) rc = errno;
  if (rc) {
    snprintf(err, errlen, "%s: %s", path, mdb_strerror(rc));
    return eg_store__err(rc);
  }
  /* Pages 0..me_last_pgno are in use; mapped pages past the end of the
   * file fault with SIGBUS when read. */
  unsigned long long need = ((unsigned long long)info.me_last_pgno + 1) * ms.ms_psize;
  if ((unsigned long long)st.st_size >= need) return EG_OK;
  snprintf(err, errlen, "%s is %lld bytes but its meta page says it holds %llu (%zu pages of "
           "%u bytes): the file is truncated or corrupt; restore it from a backup or a replica",
           path, (long long)st.st_size, need, info.me_last_pgno + 1, ms.ms_psize);
  return EG_ECORRUPT;
}

/* ---- store id ---------------------------------------------------------------- */

static eg_err eg_new_store_id(char id[EG_STORE_ID_LEN + 1]) {
  unsigned char raw[EG_STORE_ID_LEN / 2];
  if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) return EG_EIO;
  for (size_t i = 0; i < sizeof raw; i++) snprintf(id + 2 * i, 3, "%02x", raw[i]);
  return EG_OK;
}

eg_err eg_store__check_store_id(eg_store *s, MDB_txn *txn, char *marker, size_t cap, char *err,
                                size_t errlen) {
  char file_id[EG_STORE_ID_LEN + 1] = "", meta_id[EG_STORE_ID_LEN + 1] = "";
  size_t n = 0;
  marker[0] = '\0';
  eg_err fe = eg_read_store_id(s->dir, file_id, err, errlen);
  if (fe && fe != EG_ENOTFOUND) return fe;
  eg_err me = eg_store__named_get(txn, s->meta, EG_STORE_ID_META, meta_id, EG_STORE_ID_LEN, &n);
  if (me == EG_OK && n != EG_STORE_ID_LEN) me = EG_ELIMIT;
  if (me == EG_ELIMIT) {
    snprintf(err, errlen, "%s/%s: the store id in its meta is malformed", s->dir, EG_DATA_FILE);
    return EG_ECORRUPT;
  }
  if (me && me != EG_ENOTFOUND) return me;
  if (!fe && !me) {
    if (strcmp(file_id, meta_id) == 0) return EG_OK;
    snprintf(err, errlen, "%s/%s holds store %s but %s/%s says store %s lived here: the data "
             "file was replaced; put the right data.mdb back (or remove %s to adopt this one)",
             s->dir, EG_DATA_FILE, meta_id, s->dir, EG_STORE_ID_FILE, file_id, EG_STORE_ID_FILE);
    return EG_ECORRUPT;
  }
  if (!fe) {
    snprintf(err, errlen, "%s/%s has no store id but %s/%s says store %s lived here: the data "
             "file was replaced; put the right data.mdb back (or remove %s to adopt this one)",
             s->dir, EG_DATA_FILE, s->dir, EG_STORE_ID_FILE, file_id, EG_STORE_ID_FILE);
    return EG_ECORRUPT;
  }
  if (cap < EG_STORE_ID_LEN + 1) return EG_EINVAL;
  if (!me) { /* meta only: write the marker back */
    memcpy(marker, meta_id, EG_STORE_ID_LEN + 1);
    return EG_OK;
  }
  eg_err e = eg_new_store_id(marker);
  if (!e) e = eg_store__named_put(txn, s->meta, EG_STORE_ID_META, marker, EG_STORE_ID_LEN);
  if (e) marker[0] = '\0';
  return e;
}

eg_err eg_store__write_store_id(const char *dir, const char *id, char *err, size_t errlen) {
  char path[4096], tmp[4100], line[EG_STORE_ID_LEN + 2];
  eg_path(path, sizeof path, dir, EG_STORE_ID_FILE);
  snprintf(tmp, sizeof tmp, "%s.new", path);
  int len = snprintf(line, sizeof line, "%s\n", id);
  /* Written aside and renamed: a crash never leaves half an id. */
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int ok = fd >= 0 && write(fd, line, (size_t)len) == len && fsync(fd) == 0;
  if (fd >= 0 && close(fd) != 0) ok = 0;
  if (ok) ok = rename(tmp, path) == 0;
  if (!ok) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    unlink(tmp);
    return errno == ENOSPC || errno == EDQUOT ? EG_ENOSPC : EG_EIO;
  }
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  return EG_OK;
}

eg_err eg_store__drop_store_id(const char *dir) {
  char path[4096];
  eg_path(path, sizeof path, dir, EG_STORE_ID_FILE);
  if (unlink(path) != 0 && errno != ENOENT) return EG_EIO;
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  return EG_OK;
}

/* ---- full disk ---------------------------------------------------------------- */

/* Below this much free space an EIO from a commit is taken for a full
 * disk: LMDB reports a short write (the file system filled in the middle
 * of it) as EIO, not ENOSPC, and the partly written pages stay in the
 * file, so the space is still gone when we look. */
#define EG_DISK_FULL_SLACK ((unsigned long long)1 << 20)

eg_err eg_store__commit_err(const eg_store *s, int rc) {
  struct statvfs fs;
  if (rc != EIO || statvfs(s->dir, &fs) != 0) return eg_store__err(rc);
  unsigned long long avail = (unsigned long long)fs.f_bavail * fs.f_frsize;
  return avail < EG_DISK_FULL_SLACK ? EG_ENOSPC : EG_EIO;
}
