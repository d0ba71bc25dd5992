/* Helpers of the eg_backup library's files (not part of its API). */
#ifndef EG_BACKUP_PLACE_H
#define EG_BACKUP_PLACE_H

/* rename(from, to) that never replaces an existing to (EEXIST then, both
 * left as they are): RENAME_NOREPLACE, or where the file system or kernel
 * lacks it (EINVAL: NFS, vfat, some FUSE; ENOSYS: an old kernel or a
 * seccomp filter), eg_rename_checked. 0, or -1 with errno set. */
int eg_rename_noreplace(const char *from, const char *to);
/* The fallback of eg_rename_noreplace: an lstat of to, then a rename. No
 * link(): a crash between a link and its unlink would leave the file under
 * both names, and file systems without RENAME_NOREPLACE often have no hard
 * links either (vfat: EPERM, after the whole file was written). Exclusive
 * only against writers the caller keeps out (the WAL archive's LOCK; for a
 * backup file, the target was also checked before the data came). */
int eg_rename_checked(const char *from, const char *to);

#endif
