/* Restoring a backup file as the data of a node's data dir, through a
 * staging dir inside it (EG_RESTORE_STAGING). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/backup.h"
#include "storage/storage.h"

/* The first entry of dir other than the lock file (which a refused or
 * failed restore leaves behind) and the staging dir (which an interrupted
 * one leaves, and the restore removes) into first: 1 if there is one, 0 if
 * none (or dir does not exist), -1 on error. */
static int dir_first_entry(const char *dir, char *first, size_t n) {
  DIR *d = opendir(dir);
  if (!d) return errno == ENOENT ? 0 : -1;
  struct dirent *de;
  int found = 0;
  while (!found && (de = readdir(d))) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
        !strcmp(de->d_name, EG_STORE_LOCK_FILE) || !strcmp(de->d_name, EG_RESTORE_STAGING))
      continue;
    snprintf(first, n, "%s", de->d_name);
    found = 1;
  }
  closedir(d);
  return found;
}

/* Removes the staging dir stage (flat: a store's files) or whatever else
 * holds its name. 1 if there was one, 0 if not, -1 on error (errno). */
static int remove_stage(const char *stage) {
  struct stat st;
  if (lstat(stage, &st) != 0) return errno == ENOENT ? 0 : -1;
  if (!S_ISDIR(st.st_mode)) return unlink(stage) == 0 ? 1 : -1;
  DIR *d = opendir(stage);
  if (!d) return -1;
  struct dirent *de;
  while ((de = readdir(d)))
    if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) unlinkat(dirfd(d), de->d_name, 0);
  closedir(d);
  return rmdir(stage) == 0 ? 1 : -1;
}

/* Sets dir (this user's, if it exists) to mode 0700 before the lock does
 * it with a line of engramd's on stderr; *old gets the mode bits it had
 * (0: none changed). A dir of another user is left to eg_store_lock_dir,
 * which refuses it. */
static void tighten_dir(const char *dir, unsigned *old) {
  struct stat st;
  *old = 0;
  if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 077) &&
      st.st_uid == geteuid() && chmod(dir, 0700) == 0)
    *old = (unsigned)(st.st_mode & 07777);
}

eg_err eg_backup_restore_begin(const char *path, const char *dir, int force, eg_restore *r,
                               char *why, size_t whylen) {
  char first[256], data[sizeof r->stage + 16];
  *r = (eg_restore){.lock_fd = -1};
  /* Read before anything in dir changes: a file that is no backup costs
   * nothing. */
  eg_err e = eg_backup_header_read(path, &r->h, why, whylen);
  if (e) return e;
  int full = dir_first_entry(dir, first, sizeof first);
  if (full < 0) {
    snprintf(why, whylen, "%s: %s", dir, strerror(errno));
    return EG_EIO;
  }
  if (full && !force) {
    snprintf(why, whylen, "%s is not empty (it holds %s): --force replaces its data", dir, first);
    return EG_EEXIST;
  }
  tighten_dir(dir, &r->old_mode);
  /* Held until the caller is done: no engramd may start on dir meanwhile,
   * and a running one's dir is refused (its message names the pid). A
   * refused restore changes nothing, the dir's mode included. */
  if ((e = eg_store_lock_dir(dir, &r->lock_fd, why, whylen)) != EG_OK) {
    if (r->old_mode) chmod(dir, r->old_mode);
    r->old_mode = 0;
    return e;
  }
  snprintf(r->stage, sizeof r->stage, "%s/%s", dir, EG_RESTORE_STAGING);
  int left = remove_stage(r->stage);
  r->removed_leftover = left == 1;
  if (left < 0 || mkdir(r->stage, 0700) != 0) {
    snprintf(why, whylen, "cannot make the staging dir %s: %s", r->stage, strerror(errno));
    eg_store_unlock_dir(r->lock_fd);
    return EG_EIO;
  }
  snprintf(data, sizeof data, "%s/data.mdb", r->stage);
  /* Until _finish or _abort: a signal that ends the caller takes the
   * copy with it (a stage whose store the replay opened keeps its small
   * files, and the next restore removes it). */
  eg_backup_scrub_set(data, r->stage);
  eg_backup_verify_result *v = malloc(sizeof *v);
  if (!v) {
    snprintf(why, whylen, "out of memory");
    e = EG_ENOMEM;
  } else {
    *v = (eg_backup_verify_result){.n_dbs = 0};
    e = eg_backup_extract(path, data, &v->h, why, whylen);
    /* The same full walk verify runs: damaged pages behind a matching
     * digest would otherwise reach a node, which dies on them. */
    if (!e) e = eg_backup_check_data(data, NULL, v, why, whylen);
    if (!e && v->sealed_failed) { /* without a keyring: records that do not decode */
      snprintf(why, whylen, "the data is corrupt: %s", v->first_failure);
      e = EG_ECORRUPT;
    }
    if (!e) r->h = v->h;
    free(v);
  }
  if (e) eg_backup_restore_abort(r);
  return e;
}

/* Makes stage/EG_STORE_RESTORE_DONE durable: 0 or -1 (errno). */
static int mark_done(const char *stage) {
  char path[4096 + 64];
  snprintf(path, sizeof path, "%s/%s", stage, EG_STORE_RESTORE_DONE);
  int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  int ok = fd >= 0 && fsync(fd) == 0, err = errno;
  if (fd >= 0) close(fd);
  int dfd = ok ? open(stage, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
  if (ok) ok = dfd >= 0 && fsync(dfd) == 0, err = errno;
  if (dfd >= 0) close(dfd);
  errno = err;
  return ok ? 0 : -1;
}

eg_err eg_backup_restore_finish(eg_restore *r, const char *dir, char *why, size_t whylen) {
  char data[sizeof r->stage + 16];
  snprintf(data, sizeof data, "%s/data.mdb", r->stage);
  /* From here the staged data is the restore's result: a signal leaves it
   * for the marker to describe. */
  eg_backup_scrub_set(NULL, NULL);
  /* The marker goes first: a crash after the move and before the staging
   * dir's removal then leaves a stage engramd knows as finished (marker,
   * no data.mdb) rather than one it would call unfinished, whose advice
   * ("remove it to use the data dir as it was") would be false. Drops
   * dir's engram.id and the old lock.mdb as for a replica's snapshot: the
   * node's first open writes them afresh. */
  eg_err e = mark_done(r->stage) != 0 ? EG_EIO : eg_store_install_snapshot(dir, data);
  if (e)
    snprintf(why, whylen, "cannot put %s in place as %s/data.mdb: %s", data, dir, strerror(errno));
  else
    remove_stage(r->stage); /* what is left is the marker and the staging store's small files */
  eg_store_unlock_dir(r->lock_fd);
  r->lock_fd = -1;
  return e;
}

void eg_backup_restore_abort(eg_restore *r) {
  eg_backup_scrub_set(NULL, NULL);
  remove_stage(r->stage);
  eg_store_unlock_dir(r->lock_fd);
  r->lock_fd = -1;
}
