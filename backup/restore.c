/* Restoring a backup file as the data of a node's data dir. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "backup/backup.h"
#include "storage/storage.h"

/* Name of the extracted data before it replaces dir/data.mdb. */
#define EG_RESTORE_TMP "data.mdb.restore"

/* The first entry of dir other than the lock file (which a refused or
 * failed restore leaves behind) into first: 1 if there is one, 0 if none
 * (or dir does not exist), -1 on error. */
static int dir_first_entry(const char *dir, char *first, size_t n) {
  DIR *d = opendir(dir);
  if (!d) return errno == ENOENT ? 0 : -1;
  struct dirent *de;
  int found = 0;
  while (!found && (de = readdir(d))) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
        !strcmp(de->d_name, EG_STORE_LOCK_FILE))
      continue;
    snprintf(first, n, "%s", de->d_name);
    found = 1;
  }
  closedir(d);
  return found;
}

eg_err eg_backup_restore_base(const char *path, const char *dir, int force, eg_backup_header *h,
                              int *lock_fd, char *why, size_t whylen) {
  char first[256], tmp[4096 + 32];
  /* Read before anything in dir changes: a file that is no backup costs
   * nothing. */
  eg_err e = eg_backup_header_read(path, h, why, whylen);
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
  /* Held until the caller is done: no engramd may start on dir meanwhile,
   * and a running one's dir is refused (its message names the pid). */
  int fd = -1;
  e = eg_store_lock_dir(dir, &fd, why, whylen);
  if (e) return e;
  snprintf(tmp, sizeof tmp, "%s/%s", dir, EG_RESTORE_TMP);
  unlink(tmp); /* left by a restore that was interrupted */
  eg_backup_header got;
  eg_store_file_info info;
  e = eg_backup_extract(path, tmp, &got, why, whylen);
  if (!e) e = eg_store_file_check(tmp, got.lsn, got.epoch, &info, why, whylen);
  /* Drops the copy's engram.id and the old lock.mdb as for a replica's
   * snapshot: the node's first open writes them afresh. */
  if (!e && (e = eg_store_install_snapshot(dir, tmp)) != EG_OK)
    snprintf(why, whylen, "cannot put %s in place as %s/data.mdb: %s", tmp, dir, strerror(errno));
  if (e) {
    unlink(tmp);
    eg_store_unlock_dir(fd);
    return e;
  }
  *h = got;
  *lock_fd = fd;
  return EG_OK;
}
