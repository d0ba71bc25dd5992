/* Verifying a backup file: digest and length, the data as a store, record
 * counts, and (with a keyring) every sealed field. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backup/backup.h"
#include "engram/storage/v1/memory_records.pb-c.h"
#include "engram/storage/v1/records.pb-c.h"
#include "storage/storage.h"

#define EG_TOKEN_SUFFIX "_token"

/* What the visit of the data DBs carries. */
typedef struct {
  eg_backup_verify_result *out;
  const eg_keyring *kr;
  eg_err err; /* out of memory while opening a field */
} eg_verify_walk;

static void note_missing(eg_backup_verify_result *out, uint32_t id) {
  for (size_t i = 0; i < out->n_missing; i++)
    if (out->missing_key_ids[i] == id) return;
  if (out->n_missing < EG_BACKUP_KEY_IDS_MAX) out->missing_key_ids[out->n_missing++] = id;
}

static void count_db(eg_backup_verify_result *out, const char *db) {
  size_t i = 0;
  while (i < out->n_dbs && strcmp(out->dbs[i].name, db) != 0) i++;
  if (i == out->n_dbs) {
    if (i == EG_BACKUP_VERIFY_DBS_MAX) return;
    snprintf(out->dbs[i].name, sizeof out->dbs[i].name, "%s", db);
    out->n_dbs++;
  }
  out->dbs[i].records++;
}

/* Opens one sealed field: counted opened, failed, or (its key is not in the
 * keyring) under the missing key ids. */
static void open_field(eg_verify_walk *w, const eg_field_ctx *ctx, const ProtobufCBinaryData *tok) {
  eg_backup_verify_result *out = w->out;
  if (tok->len == 0) return; /* no value */
  /* Format 2: sealed under a user's data key, which only the key store
   * holds (wrapped): the keyring alone cannot open it, so its layout is
   * what is checked here. */
  uint8_t version;
  if (tok->len >= EG_TOKEN_OVERHEAD && eg_token_version(tok->data, tok->len, &version) == EG_OK &&
      version == EG_TOKEN_VERSION_DEK) {
    out->sealed_data_key++;
    return;
  }
  uint32_t id;
  if (eg_token_key_id(tok->data, tok->len, &id) == EG_OK && !eg_keyring_has(w->kr, id)) {
    note_missing(out, id);
    out->sealed_missing_key++;
    return;
  }
  /* An empty value seals to exactly EG_TOKEN_OVERHEAD bytes (the server
   * seals an empty message content): a sound token with no plaintext. One
   * byte more keeps the buffer from being a NULL malloc(0). */
  uint8_t *pt = tok->len >= EG_TOKEN_OVERHEAD ? malloc(tok->len - EG_TOKEN_OVERHEAD + 1) : NULL;
  size_t plen;
  eg_err e = tok->len < EG_TOKEN_OVERHEAD ? EG_ECORRUPT
             : pt ? eg_token_open(w->kr, ctx, tok->data, tok->len, pt, &plen)
                  : EG_ENOMEM;
  free(pt);
  if (e == EG_ENOMEM) w->err = e;
  if (e == EG_OK) {
    out->sealed_opened++;
    return;
  }
  if (!out->sealed_failed++)
    snprintf(out->first_failure, sizeof out->first_failure,
             "tenant %s %s %s: %s does not open (tampered or sealed for another record)",
             ctx->tenant, ctx->kind, ctx->record_id, ctx->field);
}

/* Opens every `*_token` bytes field of m, for the field named without the
 * suffix (the context the server sealed it in). */
static void open_fields(eg_verify_walk *w, const ProtobufCMessage *m, const char *tenant,
                        const char *kind, const char *record_id) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    size_t n = strlen(f->name), sl = sizeof EG_TOKEN_SUFFIX - 1;
    if (f->type != PROTOBUF_C_TYPE_BYTES || f->label == PROTOBUF_C_LABEL_REPEATED || n <= sl ||
        strcmp(f->name + n - sl, EG_TOKEN_SUFFIX) != 0)
      continue;
    char field[64];
    snprintf(field, sizeof field, "%.*s", (int)(n - sl), f->name);
    eg_field_ctx ctx = {.tenant = tenant, .kind = kind, .record_id = record_id, .field = field};
    open_field(w, &ctx, (const ProtobufCBinaryData *)((const char *)m + f->offset));
  }
}

/* The u8len-prefixed id at k[*off] into buf (NUL-terminated); advances
 * *off. 0 if the key is too short. */
static int key_id(const uint8_t *k, size_t klen, size_t *off, char *buf, size_t cap) {
  if (*off >= klen || k[*off] >= cap || *off + 1 + k[*off] > klen) return 0;
  size_t n = k[*off];
  memcpy(buf, k + *off + 1, n);
  buf[n] = '\0';
  *off += 1 + n;
  return 1;
}

/* The DBs whose records hold sealed fields, and the kind each record is
 * sealed as (the services' names). Keys: sessions and memories u8len T |
 * id; messages u8len T | u8len session | seq BE (record id "session/seq"). */
static const struct {
  const char *db, *kind;
  const ProtobufCMessageDescriptor *desc;
} eg_sealed_dbs[] = {
    {"sessions", "session", &engram__storage__v1__session_record__descriptor},
    {"messages", "message", &engram__storage__v1__message_record__descriptor},
    {"memories", "memory", &engram__storage__v1__memory_record__descriptor},
};

/* The record id m is sealed under; 0 if its key does not fit the layout. */
static int record_id(const ProtobufCMessage *m, const uint8_t *k, size_t klen, size_t off,
                     char *id, size_t cap) {
  if (m->descriptor == &engram__storage__v1__session_record__descriptor) {
    snprintf(id, cap, "%s", ((const Engram__Storage__V1__SessionRecord *)m)->session_id);
  } else if (m->descriptor == &engram__storage__v1__memory_record__descriptor) {
    snprintf(id, cap, "%s", ((const Engram__Storage__V1__MemoryRecord *)m)->memory_id);
  } else {
    char sid[256];
    if (!key_id(k, klen, &off, sid, sizeof sid)) return 0;
    snprintf(id, cap, "%s/%lld", sid,
             (long long)((const Engram__Storage__V1__MessageRecord *)m)->seq);
  }
  return 1;
}

static void visit_sealed(eg_verify_walk *w, const char *db, const uint8_t *k, size_t klen,
                         const uint8_t *v, size_t vlen) {
  size_t i = 0, n = sizeof eg_sealed_dbs / sizeof eg_sealed_dbs[0];
  while (i < n && strcmp(eg_sealed_dbs[i].db, db) != 0) i++;
  if (i == n) return;
  char tenant[256], id[256 + 24];
  size_t off = 0;
  int ok = key_id(k, klen, &off, tenant, sizeof tenant);
  ProtobufCMessage *m = ok ? protobuf_c_message_unpack(eg_sealed_dbs[i].desc, NULL, vlen, v) : NULL;
  if (m && record_id(m, k, klen, off, id, sizeof id)) {
    if (w->kr) open_fields(w, m, tenant, eg_sealed_dbs[i].kind, id);
  } else if (!w->out->sealed_failed++) {
    snprintf(w->out->first_failure, sizeof w->out->first_failure,
             "a record of %s does not decode", db);
  }
  if (m) protobuf_c_message_free_unpacked(m, NULL);
}

static void verify_kv(void *arg, const char *db, const void *k, size_t klen, const void *v,
                      size_t vlen) {
  eg_verify_walk *w = arg;
  count_db(w->out, db);
  /* Decoded with or without a keyring: a record that does not decode is
   * damage a restore must not put in place either. */
  visit_sealed(w, db, k, klen, v, vlen);
}

/* What the walk's child hands back through shared memory. */
typedef struct {
  eg_err e;
  char why[512];
  eg_backup_verify_result out;
} eg_walk_shared;

/* The child's part: the file as a store holding the header's LSN, epoch
 * and schema version, then every data DB visited, counting records and
 * (with kr) opening sealed fields. */
static void walk_child(const char *data_path, const eg_keyring *kr, eg_walk_shared *sh) {
  eg_backup_verify_result *out = &sh->out;
  eg_verify_walk w = {.out = out, .kr = kr};
  eg_err e = eg_store_file_check(data_path, out->h.lsn, out->h.epoch, &out->info, sh->why,
                                 sizeof sh->why);
  if (!e && out->info.schema_version != out->h.schema_version) {
    snprintf(sh->why, sizeof sh->why, "the data is at schema version %u, its header says %u",
             out->info.schema_version, out->h.schema_version);
    e = EG_ECORRUPT;
  }
  if (!e && (e = eg_store_file_visit(data_path, &out->info, verify_kv, &w)) != EG_OK)
    snprintf(sh->why, sizeof sh->why, "the data does not read as a store: %s", eg_err_msg(e));
  if (!e && w.err) {
    snprintf(sh->why, sizeof sh->why, "out of memory while opening sealed fields");
    e = w.err;
  }
  sh->e = e;
}

/* Runs walk_child in a child process: LMDB trusts its pages, and a damaged
 * one (behind a digest that matches, e.g. damaged before the digest was
 * taken) can make it fault or fail an assert; that kills the child, not
 * the caller, and is reported as corrupt, with what the child wrote on
 * stderr (LMDB's assert line). */
static eg_err walk_isolated(const char *data_path, const eg_keyring *kr,
                            eg_backup_verify_result *out, char *why, size_t whylen) {
  eg_walk_shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                            -1, 0);
  int pfd[2] = {-1, -1};
  if (sh == MAP_FAILED || pipe2(pfd, O_CLOEXEC) != 0) {
    snprintf(why, whylen, "cannot start the check of the data: %s", strerror(errno));
    if (sh != MAP_FAILED) munmap(sh, sizeof *sh);
    return EG_ENOMEM;
  }
  *sh = (eg_walk_shared){.e = EG_EIO, .out = *out};
  fflush(NULL);
  pid_t parent = getpid(), pid = fork();
  if (pid == 0) {
    /* Die with the caller (a signal, a SIGKILL): an orphan would go on
     * reading every tenant's data that the caller's handler removed. The
     * check of the parent closes the race with a death before the prctl.
     * The child removes nothing itself: the caller owns the temp data. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(1);
    eg_backup_scrub_set(NULL, NULL);
    /* Die of the fault itself: a sanitizer's handler would turn it into a
     * report and an exit status. */
    signal(SIGSEGV, SIG_DFL);
    signal(SIGBUS, SIG_DFL);
    dup2(pfd[1], STDERR_FILENO);
    walk_child(data_path, kr, sh);
    _exit(0);
  }
  close(pfd[1]);
  char err[256] = "";
  size_t got = 0;
  ssize_t n;
  /* Read to EOF (the child's end closes when it exits), keeping the first
   * bytes: the pipe never fills, so the child never blocks on it. */
  char sink[512];
  while (pid > 0 && (n = read(pfd[0], sink, sizeof sink)) != 0) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    size_t take = (size_t)n < sizeof err - 1 - got ? (size_t)n : sizeof err - 1 - got;
    memcpy(err + got, sink, take);
    got += take;
  }
  close(pfd[0]);
  err[got] = '\0';
  err[strcspn(err, "\n")] = '\0';
  int st = 0;
  eg_err e;
  if (pid < 0) {
    snprintf(why, whylen, "cannot start the check of the data: fork: %s", strerror(errno));
    e = EG_ENOMEM;
  } else if (waitpid(pid, &st, 0) != pid) {
    snprintf(why, whylen, "waiting for the check of the data: %s", strerror(errno));
    e = EG_EIO;
  } else if (WIFSIGNALED(st) || WEXITSTATUS(st) != 0) {
    snprintf(why, whylen, "the data is corrupt: reading its pages %s %d (%s)%s%s",
             WIFSIGNALED(st) ? "killed the check with signal" : "ended the check with status",
             WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st),
             WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "failed", *err ? ": " : "", err);
    e = EG_ECORRUPT;
  } else {
    e = sh->e;
    if (e) snprintf(why, whylen, "%s", sh->why);
    else *out = sh->out;
  }
  munmap(sh, sizeof *sh);
  return e;
}

eg_err eg_backup_check_data(const char *data_path, const eg_keyring *kr,
                            eg_backup_verify_result *out, char *why, size_t whylen) {
  eg_err e = walk_isolated(data_path, kr, out, why, whylen);
  if (!e && kr)
    for (size_t i = 0; i < out->h.n_key_ids; i++)
      if (!eg_keyring_has(kr, out->h.key_ids[i])) note_missing(out, out->h.key_ids[i]);
  if (e && e != EG_ENOMEM && e != EG_EIO) e = EG_ECORRUPT;
  return e;
}

eg_err eg_backup_verify(const char *path, const char *tmp_dir, const eg_keyring *kr,
                        eg_backup_verify_result *out, char *why, size_t whylen) {
  char dir[4096], data[4096 + 16];
  const char *env = getenv("TMPDIR");
  const char *tmp = tmp_dir ? tmp_dir : env && *env ? env : "/tmp";
  struct statvfs vfs;
  *out = (eg_backup_verify_result){.n_dbs = 0};
  eg_err e = eg_backup_header_read(path, &out->h, why, whylen);
  if (e) return e;
  /* The whole data is copied there: refuse before copying what cannot
   * fit (a tmpfs /tmp is often smaller than a store). */
  if (statvfs(tmp, &vfs) == 0 &&
      (uint64_t)vfs.f_bavail * vfs.f_frsize < out->h.data_bytes) {
    snprintf(why, whylen, "%s has %llu bytes free, the backup's data needs %llu: give --tmp-dir "
             "a dir with room", tmp, (unsigned long long)vfs.f_bavail * vfs.f_frsize,
             (unsigned long long)out->h.data_bytes);
    return EG_ENOSPC;
  }
  snprintf(dir, sizeof dir, "%s/engram-verify-XXXXXX", tmp);
  if (!mkdtemp(dir)) {
    snprintf(why, whylen, "cannot make a temp dir under %s: %s", tmp, strerror(errno));
    return EG_EIO;
  }
  snprintf(data, sizeof data, "%s/data.mdb", dir);
  eg_backup_scrub_set(data, dir);
  e = eg_backup_extract(path, data, &out->h, why, whylen);
  if (!e) e = eg_backup_check_data(data, kr, out, why, whylen);
  unlink(data);
  rmdir(dir);
  eg_backup_scrub_set(NULL, NULL);
  if (e && e != EG_ENOMEM && e != EG_EIO && e != EG_ENOSPC) e = EG_ECORRUPT;
  return e;
}
