/* The helpers of fuzz.h. */
#define _GNU_SOURCE
#include "fuzz.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engram/v1/replication.pb-c.h"
#include "server/service.h"

static char fz_dir_path[PATH_MAX];

void fz_check(int ok, const char *file, int line, const char *what) {
  if (ok) return;
  fprintf(stderr, "fuzz: %s:%d: %s\n", file, line, what);
  abort();
}

/* The directory holds plain files only (written here, or an LMDB env). */
static void fz_dir_remove(void) {
  DIR *d = opendir(fz_dir_path);
  if (!d) return;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    char p[PATH_MAX + 256];
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    snprintf(p, sizeof p, "%s/%s", fz_dir_path, e->d_name);
    unlink(p);
  }
  closedir(d);
  rmdir(fz_dir_path);
}

const char *fz_dir(void) {
  if (fz_dir_path[0]) return fz_dir_path;
  const char *tmp = getenv("TMPDIR");
  snprintf(fz_dir_path, sizeof fz_dir_path, "%s/engram-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  FZ_CHECK(mkdtemp(fz_dir_path) != NULL, "mkdtemp");
  atexit(fz_dir_remove);
  return fz_dir_path;
}

const char *fz_write_file(const char *name, const uint8_t *d, size_t n) {
  static char path[PATH_MAX + 256];
  snprintf(path, sizeof path, "%s/%s", fz_dir(), name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  FZ_CHECK(fd >= 0, "open scratch file");
  for (size_t off = 0; off < n;) {
    ssize_t w = write(fd, d + off, n - off);
    FZ_CHECK(w > 0, "write scratch file");
    off += (size_t)w;
  }
  close(fd);
  return path;
}

/* The streaming methods decode in replica/, not from a method's `in`. */
static const ProtobufCMessageDescriptor *const fz_stream_types[] = {
    &engram__v1__stream_request__descriptor, &engram__v1__snapshot_request__descriptor};

#define FZ_TYPES_MAX 64

const ProtobufCMessageDescriptor *const *fz_request_types(size_t *n) {
  static const ProtobufCMessageDescriptor *types[FZ_TYPES_MAX];
  static size_t count;
  if (!count) {
    for (size_t t = 0; eg_service_tables[t]; t++)
      for (const eg_method *m = eg_service_tables[t]; m->path; m++)
        if (m->in) {
          FZ_CHECK(count < FZ_TYPES_MAX, "FZ_TYPES_MAX too small");
          types[count++] = m->in;
        }
    for (size_t i = 0; i < sizeof fz_stream_types / sizeof fz_stream_types[0]; i++) {
      FZ_CHECK(count < FZ_TYPES_MAX, "FZ_TYPES_MAX too small");
      types[count++] = fz_stream_types[i];
    }
  }
  *n = count;
  return types;
}
