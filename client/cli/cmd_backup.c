/*
 * engram backup create|verify|restore|list|prune: backup files.
 *
 *   create   AdminService.Backup from the node --target names (admin
 *            token), written to --out atomically (mode 0600), a progress
 *            bar on stderr when it is a terminal; a signal that ends it
 *            removes the temp file
 *   verify   digest and length, the data as a store (schema, LSN, epoch,
 *            records per DB, read in a child process), with --keyring
 *            every sealed field; a copy of the data goes to --tmp-dir
 *            (removed when a signal ends it, as create's temp file)
 *   restore  the data of a backup as a node's data dir (the node starts at
 *            the backup's LSN and epoch), through a staging dir in it;
 *            with --wal-archive replayed to a point in time
 *   list     the backup files in a dir, by their headers; temp files of
 *            creates that did not finish and suspect times are reported
 *   prune    deletes the backups of a dir that a grandfather-father-son
 *            policy does not keep (never a suspect or incomplete one)
 * The file's layout and the work are in backup/ (backup/backup.h); this
 * file parses and prints.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backup/backup.h"
#include "backup/walarchive.h"
#include "cli.h"
#include "engram/v1/admin.pb-c.h"

#define BACKUP_PATH "/engram.v1.AdminService/Backup"
/* Whole-stream deadline of `backup create` without --timeout: a copy of a
 * large store takes longer than a unary call's 10 s. */
#define BACKUP_TIMEOUT_MS (3600 * 1000)
/* Backup files `list` and `prune` read in one dir. */
#define BACKUP_DIR_MAX 100000
/* How far past this machine's clock a header time may be and still be
 * believed (--max-clock-skew-s): nodes' clocks differ a little; a time
 * further ahead is a wrong clock or a damaged header. */
#define BACKUP_SKEW_S 86400
#define BACKUP_SKEW_S_MAX (100LL * 366 * 86400)

/* ---- printing a header ------------------------------------------------------ */

static void time_text(int64_t us, char buf[48]) {
  Google__Protobuf__Timestamp t = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
  t.seconds = us / 1000000;
  t.nanos = (int32_t)(us % 1000000) * 1000;
  pb_timestamp_text(&t, buf);
}

static void hex(const uint8_t *p, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", p[i]);
}

/* Adds the header's fields to the JSON object o. */
static void header_json(json_object *o, const eg_backup_header *h) {
  char t[48], sha[65];
  time_text(h->time_us, t);
  hex(h->sha256, sizeof h->sha256, sha);
  json_object_object_add(o, "lsn", json_object_new_uint64(h->lsn));
  json_object_object_add(o, "epoch", json_object_new_uint64(h->epoch));
  json_object_object_add(o, "schema_version", json_object_new_uint64(h->schema_version));
  json_object_object_add(o, "bytes", json_object_new_uint64(h->data_bytes));
  json_object_object_add(o, "sha256", json_object_new_string(sha));
  json_object_object_add(o, "time", json_object_new_string(t));
  json_object *ids = json_object_new_array();
  for (size_t i = 0; i < h->n_key_ids; i++)
    json_object_array_add(ids, json_object_new_uint64(h->key_ids[i]));
  json_object_object_add(o, "key_ids", ids);
}

/* {"ok": ok} to add members to. */
static json_object *ok_json(int ok) {
  json_object *o = json_object_new_object();
  json_object_object_add(o, "ok", json_object_new_boolean(ok));
  return o;
}

static void header_readable(FILE *out, const eg_backup_header *h) {
  char t[48], sha[65];
  time_text(h->time_us, t);
  hex(h->sha256, sizeof h->sha256, sha);
  fprintf(out,
          "lsn: %" PRIu64 "\nepoch: %" PRIu64 "\nschema: %u\nbytes: %" PRIu64
          "\nsha256: %s\ntime: %s\nkey ids:",
          h->lsn, h->epoch, h->schema_version, h->data_bytes, sha, t);
  for (size_t i = 0; i < h->n_key_ids; i++) fprintf(out, "%s%u", i ? "," : " ", h->key_ids[i]);
  fputs(h->n_key_ids ? "\n" : " none\n", out);
}

/* Prints "engram: backup CMD: why" and returns CLI_ERR; with --json also
 * {"ok":false,"error":why} on stdout. */
static int fail(cli *g, const char *cmd, const char *why) {
  fprintf(stderr, "engram: backup %s: %s\n", cmd, why);
  if (g->json) {
    json_object *o = ok_json(0);
    json_object_object_add(o, "error", cli_json_new_string(why));
    cli_json_print(stdout, o);
  }
  return CLI_ERR;
}

/* ---- create ----------------------------------------------------------------- */

/* A progress bar on stderr, drawn only when stderr is a terminal. */
typedef struct {
  int tty;
  uint64_t size; /* of the whole copy (the first chunk says) */
  struct timespec start;
} progress;

static double since(const struct timespec *t0) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

static void progress_draw(const progress *p, uint64_t done) {
  if (!p->tty || !p->size) return;
  const double mib = 1024.0 * 1024.0;
  double secs = since(&p->start), rate = secs > 0 ? (double)done / secs : 0;
  int width = 30, fill = (int)((double)width * (double)done / (double)p->size);
  char bar[32];
  for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
  bar[width] = '\0';
  fprintf(stderr, "\r[%s] %.1f / %.1f MiB  %.1f MiB/s  ETA %.0fs ", bar, (double)done / mib,
          (double)p->size / mib, rate / mib,
          rate > 0 ? (double)(p->size - (done < p->size ? done : p->size)) / rate : 0.0);
}

/* The header the last chunk describes; -1 with why for one a header
 * cannot hold faithfully (a file stored as 1970 would be pruned first; a
 * key id cut off would be missing at restore). */
static int header_from_chunk(const Engram__V1__BackupChunk *c, eg_backup_header *h, char *why,
                             size_t whylen) {
  if (!c->time) {
    snprintf(why, whylen, "the server's last chunk has no time");
    return -1;
  }
  if (c->n_key_ids > EG_BACKUP_KEY_IDS_MAX) {
    snprintf(why, whylen, "the server's last chunk names %zu key ids, more than the %d a backup "
             "header holds", c->n_key_ids, EG_BACKUP_KEY_IDS_MAX);
    return -1;
  }
  if (c->sha256.len != sizeof h->sha256) {
    snprintf(why, whylen, "the server's last chunk has a SHA-256 of %zu bytes", c->sha256.len);
    return -1;
  }
  *h = (eg_backup_header){.format = EG_BACKUP_FORMAT,
                          .lsn = c->lsn,
                          .epoch = c->epoch,
                          .schema_version = c->schema_version,
                          .time_us = c->time->seconds * 1000000 + c->time->nanos / 1000,
                          .data_bytes = c->total_bytes,
                          .n_key_ids = c->n_key_ids};
  memcpy(h->sha256, c->sha256.data, sizeof h->sha256);
  if (h->n_key_ids) memcpy(h->key_ids, c->key_ids, h->n_key_ids * sizeof *h->key_ids);
  return 0;
}

static int backup_stream(cli *g, const char *path, const ProtobufCMessage *req,
                         eg_backup_writer *w, eg_backup_header *h, char *why, size_t whylen) {
  eg_client_opts opts = {.timeout_ms = g->timeout_ms ? g->timeout_ms : BACKUP_TIMEOUT_MS};
  eg_client_status st;
  progress p = {.tty = isatty(STDERR_FILENO)};
  clock_gettime(CLOCK_MONOTONIC, &p.start);
  eg_client_stream *s = eg_client_stream_open(g->client, path, req, &opts, &st);
  ProtobufCMessage *m;
  int last = 0;
  eg_err e = EG_OK;
  while (s && !e && eg_client_stream_next(s, &engram__v1__backup_chunk__descriptor, &m, &st) == 1) {
    Engram__V1__BackupChunk *c = (Engram__V1__BackupChunk *)m;
    if (c->size) p.size = c->size;
    if (c->data.len) e = eg_backup_writer_write(w, c->data.data, c->data.len, why, whylen);
    if (!e && c->last) {
      if (header_from_chunk(c, h, why, whylen) != 0) e = EG_ECORRUPT;
      last = 1;
    }
    progress_draw(&p, eg_backup_writer_bytes(w));
    protobuf_c_message_free_unpacked(m, NULL);
  }
  eg_client_stream_free(s);
  if (p.tty && p.size) fputc('\n', stderr);
  if (e) return CLI_ERR;
  if (st.code != 0)
    snprintf(why, whylen, "%s%s%.400s", eg_client_code_name(st.code), *st.message ? ": " : "",
             st.message);
  else if (!last)
    snprintf(why, whylen, "the stream ended before its last chunk");
  return st.code ? cli_exit_code(st.code) : !last ? CLI_ERR : CLI_OK;
}

int cli_backup_fetch(cli *g, const char *path, const ProtobufCMessage *req,
                     eg_backup_writer *w, eg_backup_header *h, char *why, size_t whylen) {
  eg_backup_scrub_signals();
  eg_backup_scrub_set(eg_backup_writer_temp(w), NULL);
  int rc = backup_stream(g, path, req, w, h, why, whylen);
  if (rc != CLI_OK)
    eg_backup_writer_abort(w);
  else if (eg_backup_writer_commit(w, h, why, whylen) != EG_OK)
    rc = CLI_ERR;
  eg_backup_scrub_set(NULL, NULL);
  return rc;
}

int cmd_backup_create(cli *g, int argc, char **argv) {
  const char *out = NULL;
  int force = 0;
  const cli_flag flags[] = {{"--out", FLAG_STR, &out, 1}, {"--force", FLAG_BOOL, &force}, {NULL}};
  int rc = cli_parse(g, argc, argv, flags, NULL, NULL);
  if (rc != CLI_OK) return rc;
  if (!cli_client(g)) return CLI_USAGE;
  if (!cli_crypto_ready()) return CLI_ERR;
  char why[512] = "", msg[600];
  eg_backup_writer *w;
  eg_backup_header h;
  /* The target is checked (and the temp file made) before the call: a
   * wrong --out fails at once, not after the whole copy streamed. */
  eg_err e = eg_backup_writer_open(out, force, &w, why, sizeof why);
  if (e != EG_OK) {
    snprintf(msg, sizeof msg, "%s%s", why, e == EG_EEXIST ? " (--force replaces it)" : "");
    return fail(g, "create", msg);
  }
  Engram__V1__BackupRequest req = ENGRAM__V1__BACKUP_REQUEST__INIT;
  if ((rc = cli_backup_fetch(g, BACKUP_PATH, &req.base, w, &h, why, sizeof why)) != CLI_OK) {
    fail(g, "create", why);
    return rc;
  }
  if (g->json) {
    json_object *o = ok_json(1);
    json_object_object_add(o, "path", cli_json_new_string(out));
    header_json(o, &h);
    cli_json_print(stdout, o);
  } else {
    printf("path: %s\n", out);
    header_readable(stdout, &h);
  }
  return CLI_OK;
}

/* ---- restore ---------------------------------------------------------------- */

/* Warnings of a restore that succeeded, for stderr and --json. */
#define RESTORE_WARNINGS_MAX 2

int cmd_backup_restore(cli *g, int argc, char **argv) {
  const char *dir = NULL, *file, *archive = NULL, *to_time = NULL;
  int force = 0;
  int64_t to_lsn = 0;
  const cli_flag flags[] = {{"--data-dir", FLAG_STR, &dir, 1},
                            {"--force", FLAG_BOOL, &force},
                            {"--wal-archive", FLAG_STR, &archive},
                            {"--to-lsn", FLAG_INT, &to_lsn, 0, 1, INT64_MAX},
                            {"--to-time", FLAG_STR, &to_time},
                            {NULL}};
  const char *const names[] = {"FILE", NULL};
  int rc = cli_parse(g, argc, argv, flags, names, &file);
  if (rc != CLI_OK) return rc;
  eg_pitr_target target = {.to_lsn = (uint64_t)to_lsn};
  if ((to_lsn || to_time) && !archive)
    return cli_usage_error(g, "--to-lsn and --to-time need --wal-archive");
  if (to_lsn && to_time) return cli_usage_error(g, "give --to-lsn or --to-time, not both");
  if (to_time && cli_parse_time_us(to_time, &target.to_time_us) != 0)
    return cli_usage_error(g, "--to-time %s: want RFC 3339 (2026-01-02T03:04:05Z, a real date) "
                           "or unix seconds", to_time);
  if (!cli_crypto_ready()) return CLI_ERR;
  char why[512] = "", msg[700];
  eg_backup_header h;
  eg_pitr_result res = {0};
  /* The archive is checked against the backup's LSN and epoch first: a
   * restore it cannot serve (a gap, a corrupt segment, a target out of
   * reach, another history) is refused before the data is copied. */
  if (archive && (eg_backup_header_read(file, &h, why, sizeof why) != EG_OK ||
                  eg_pitr_check(archive, h.lsn, h.epoch, &target, &res, why, sizeof why) != EG_OK)) {
    snprintf(msg, sizeof msg, "point-in-time restore from %s refused: %s", archive, why);
    return fail(g, "restore", msg);
  }
  eg_restore r;
  eg_backup_scrub_signals();
  if (eg_backup_restore_begin(file, dir, force, &r, why, sizeof why) != EG_OK)
    return fail(g, "restore", why);
  if (r.old_mode)
    fprintf(stderr, "engram: backup restore: data dir %s had mode %04o; set it to 0700\n", dir,
            r.old_mode);
  if (r.removed_leftover)
    fprintf(stderr, "engram: backup restore: removed %s, left by an interrupted restore\n",
            r.stage);
  /* The base is in the staging dir and dir locked: the replay runs there,
   * and dir gets a data.mdb only once it reached its target. */
  if (archive && eg_pitr_replay(r.stage, archive, r.h.time_us, &target, &res, why,
                                sizeof why) != EG_OK) {
    eg_backup_restore_abort(&r);
    snprintf(msg, sizeof msg, "replaying %s failed: %s (%s was left as it was)", archive, why, dir);
    return fail(g, "restore", msg);
  }
  if (eg_backup_restore_finish(&r, dir, why, sizeof why) != EG_OK) return fail(g, "restore", why);
  h = r.h;
  char warn[RESTORE_WARNINGS_MAX][300];
  int nwarn = 0;
  if (archive && res.link_unchecked)
    snprintf(warn[nwarn++], sizeof warn[0], "the archive starts right after the base (lsn %" PRIu64
             "): that the base is on its history could not be checked", res.base_lsn);
  if (archive && !res.records && !target.to_lsn && !target.to_time_us)
    snprintf(warn[nwarn++], sizeof warn[0], "the archive %s holds no record after the base (lsn %"
             PRIu64 "): nothing was replayed", archive, res.base_lsn);
  for (int i = 0; i < nwarn; i++) fprintf(stderr, "engram: backup restore: warning: %s\n", warn[i]);
  char t[48] = "";
  if (res.time_us) time_text(res.time_us, t);
  if (g->json) {
    json_object *o = ok_json(1);
    json_object_object_add(o, "data_dir", cli_json_new_string(dir));
    header_json(o, &h);
    if (archive) {
      json_object *r = json_object_new_object();
      json_object_object_add(r, "records", json_object_new_uint64(res.records));
      json_object_object_add(r, "lsn", json_object_new_uint64(res.lsn));
      json_object_object_add(r, "epoch", json_object_new_uint64(res.epoch));
      json_object_object_add(r, "time", json_object_new_string(t));
      json_object_object_add(o, "replayed", r);
    }
    json_object *w = json_object_new_array();
    for (int i = 0; i < nwarn; i++) json_object_array_add(w, cli_json_new_string(warn[i]));
    json_object_object_add(o, "warnings", w);
    cli_json_print(stdout, o);
  } else {
    printf("restored %s into %s\n", file, dir);
    header_readable(stdout, &h);
    if (archive)
      printf("replayed %" PRIu64 " archived records from %s: now at lsn %" PRIu64
             ", epoch %" PRIu64 "%s%s\n", res.records, archive, res.lsn, res.epoch,
             t[0] ? ", last record written " : "", t);
  }
  return CLI_OK;
}

/* ---- verify ----------------------------------------------------------------- */

static void verify_json(const eg_backup_verify_result *v, const eg_keyring *kr, const char *why) {
  json_object *o = ok_json(!*why);
  if (*why) json_object_object_add(o, "error", cli_json_new_string(why));
  header_json(o, &v->h);
  json_object *recs = json_object_new_object();
  for (size_t i = 0; i < v->n_dbs; i++)
    json_object_object_add(recs, v->dbs[i].name, json_object_new_uint64(v->dbs[i].records));
  json_object_object_add(o, "records", recs);
  if (kr) {
    json_object_object_add(o, "sealed_opened", json_object_new_uint64(v->sealed_opened));
    json_object_object_add(o, "sealed_failed", json_object_new_uint64(v->sealed_failed));
    json_object_object_add(o, "sealed_missing_key", json_object_new_uint64(v->sealed_missing_key));
    json_object_object_add(o, "sealed_data_key_not_opened",
                           json_object_new_uint64(v->sealed_data_key));
    json_object *ids = json_object_new_array();
    for (size_t i = 0; i < v->n_missing; i++)
      json_object_array_add(ids, json_object_new_uint64(v->missing_key_ids[i]));
    json_object_object_add(o, "missing_key_ids", ids);
  }
  cli_json_print(stdout, o);
}

static void verify_readable(const eg_backup_verify_result *v, const eg_keyring *kr) {
  header_readable(stdout, &v->h);
  for (size_t i = 0; i < v->n_dbs; i++)
    printf("records %s: %" PRIu64 "\n", v->dbs[i].name, v->dbs[i].records);
  if (!kr) return;
  printf("sealed fields opened: %" PRIu64 "\nsealed fields failed: %" PRIu64
         "\nsealed fields under a missing key: %" PRIu64 "\nmissing key ids:",
         v->sealed_opened, v->sealed_failed, v->sealed_missing_key);
  for (size_t i = 0; i < v->n_missing; i++)
    printf("%s%u", i ? "," : " ", v->missing_key_ids[i]);
  puts(v->n_missing ? "" : " none");
  printf("sealed fields under users' data keys: %" PRIu64
         " (layout checked, not opened: their keys are in the key store)\n",
         v->sealed_data_key);
}

int cmd_backup_verify(cli *g, int argc, char **argv) {
  const char *keyring = NULL, *file, *tmp_dir = NULL;
  const cli_flag flags[] = {{"--keyring", FLAG_STR, &keyring}, {"--tmp-dir", FLAG_STR, &tmp_dir},
                            {NULL}};
  const char *const names[] = {"FILE", NULL};
  int rc = cli_parse(g, argc, argv, flags, names, &file);
  if (rc != CLI_OK) return rc;
  if (!cli_crypto_ready()) return CLI_ERR;
  char why[512] = "";
  eg_keyring *kr = NULL;
  if (keyring && eg_keyring_load(keyring, &kr, why, sizeof why) != EG_OK)
    return fail(g, "verify", why);
  eg_backup_verify_result *v = cli_alloc(g, sizeof *v);
  eg_backup_scrub_signals();
  eg_err e = eg_backup_verify(file, tmp_dir, kr, v, why, sizeof why);
  if (e) {
    eg_keyring_free(kr);
    return fail(g, "verify", why);
  }
  if (v->sealed_failed)
    snprintf(why, sizeof why, "%s: %" PRIu64 " sealed field(s) do not open; the first: %s", file,
             v->sealed_failed, v->first_failure);
  else if (v->n_missing)
    snprintf(why, sizeof why, "%s: the keyring %s lacks key id %u, which the data is sealed with",
             file, keyring, v->missing_key_ids[0]);
  if (*why) fprintf(stderr, "engram: backup verify: %s\n", why);
  if (g->json)
    verify_json(v, kr, why);
  else
    verify_readable(v, kr);
  eg_keyring_free(kr);
  return *why ? CLI_ERR : CLI_OK;
}

/* ---- list and prune --------------------------------------------------------- */

typedef struct {
  char *name;
  eg_backup_header h;
  int suspect; /* its time is not believable (eg_backup_time_suspect) */
} listed;

typedef struct {
  char *name;
  int running; /* a create is still writing it */
} incomplete;

typedef struct {
  listed *ok; /* sound headers, oldest first */
  size_t n_ok;
  char **bad; /* "name: why" of backup files whose header does not read */
  size_t n_bad;
  incomplete *part; /* temp files of creates */
  size_t n_part;
} listing;

static int by_time(const void *a, const void *b) {
  const listed *x = a, *y = b;
  if (x->h.time_us != y->h.time_us) return x->h.time_us < y->h.time_us ? -1 : 1;
  return strcmp(x->name, y->name);
}

static int skip_entry(const struct dirent *de) { return de->d_name[0] != '.'; }

static char *copy_str(cli *g, const char *s) {
  char *c = cli_alloc(g, strlen(s) + 1);
  strcpy(c, s);
  return c;
}

/* Now (unix us) and the skew of --max-clock-skew-s, for suspect times. */
typedef struct {
  int64_t now_us, skew_us;
} clock_check;

static clock_check clock_now(int64_t skew_s) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (clock_check){(int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000, skew_s * 1000000};
}

/* Says on stderr why the time of l is not believed. */
static void warn_suspect(const char *cmd, const listed *l, const clock_check *c) {
  char t[48], reason[160];
  time_text(l->h.time_us, t);
  if (l->h.time_us <= 0)
    snprintf(reason, sizeof reason, "not after 1970: no writer makes that");
  else
    snprintf(reason, sizeof reason,
             "more than %" PRId64 " s (--max-clock-skew-s) past this machine's clock: a wrong "
             "clock or a damaged header", c->skew_us / 1000000);
  fprintf(stderr,
          "engram: backup %s: %s: its header time %s is suspect (%s); prune gives it no slot, "
          "never counts it as the newest and never deletes it\n",
          cmd, l->name, t, reason);
}

/* Reads the header of every backup file in dir; files without the backup
 * magic are skipped, temp files of creates are collected apart. Prints on
 * stderr what it cannot read, incomplete temp files and suspect times.
 * CLI_ERR after printing why if dir cannot be read. */
static int list_dir(cli *g, const char *cmd, const char *dir, const clock_check *clk,
                    listing *out) {
  struct dirent **ents;
  char why[512];
  int n = scandir(dir, &ents, skip_entry, alphasort);
  if (n < 0) {
    snprintf(why, sizeof why, "%s: %s", dir, strerror(errno));
    return fail(g, cmd, why);
  }
  if (n > BACKUP_DIR_MAX) {
    for (int i = 0; i < n; i++) free(ents[i]);
    free(ents);
    snprintf(why, sizeof why, "%s holds %d entries, more than the %d read at once", dir, n,
             BACKUP_DIR_MAX);
    return fail(g, cmd, why);
  }
  size_t cap = (size_t)(n ? n : 1);
  *out = (listing){cli_alloc(g, cap * sizeof(listed)), 0, cli_alloc(g, cap * sizeof(char *)), 0,
                   cli_alloc(g, cap * sizeof(incomplete)), 0};
  for (int i = 0; i < n; i++) {
    char path[8192];
    struct stat st;
    const char *name = ents[i]->d_name;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int kind = stat(path, &st) == 0 && S_ISREG(st.st_mode) ? eg_backup_file_kind_of(path)
                                                             : EG_BACKUP_FILE_OTHER;
    listed *l = &out->ok[out->n_ok];
    int unreadable = kind < 0;
    if (kind < 0) {
      snprintf(why, sizeof why, "%s: %s", name, strerror(errno));
    } else if (kind == EG_BACKUP_FILE_INCOMPLETE || kind == EG_BACKUP_FILE_WRITING) {
      /* Never deleted here: only the operator knows no create still runs
       * on another host sharing the dir. */
      out->part[out->n_part++] = (incomplete){copy_str(g, name), kind == EG_BACKUP_FILE_WRITING};
      if (kind == EG_BACKUP_FILE_INCOMPLETE)
        fprintf(stderr,
                "engram: backup %s: %s: the temp file of a backup create that did not finish "
                "(not deleted; remove it with rm)\n",
                cmd, name);
    } else if (kind == EG_BACKUP_FILE_BACKUP &&
               eg_backup_header_read(path, &l->h, why, sizeof why) != EG_OK) {
      unreadable = 1;
    } else if (kind == EG_BACKUP_FILE_BACKUP) {
      l->name = copy_str(g, name);
      l->suspect = eg_backup_time_suspect(l->h.time_us, clk->now_us, clk->skew_us);
      if (l->suspect) warn_suspect(cmd, l, clk);
      out->n_ok++;
    }
    if (unreadable) {
      out->bad[out->n_bad++] = copy_str(g, why);
      fprintf(stderr, "engram: backup %s: unreadable: %s\n", cmd, why);
    }
    free(ents[i]);
  }
  free(ents);
  qsort(out->ok, out->n_ok, sizeof *out->ok, by_time);
  return CLI_OK;
}

/* Adds the members list and prune both print to o: unreadable and
 * incomplete. */
static void problems_json(json_object *o, const listing *l) {
  json_object *bad = json_object_new_array(), *part = json_object_new_array();
  for (size_t i = 0; i < l->n_bad; i++) json_object_array_add(bad, cli_json_new_string(l->bad[i]));
  for (size_t i = 0; i < l->n_part; i++) {
    json_object *p = json_object_new_object();
    json_object_object_add(p, "name", cli_json_new_string(l->part[i].name));
    json_object_object_add(p, "running", json_object_new_boolean(l->part[i].running));
    json_object_array_add(part, p);
  }
  json_object_object_add(o, "unreadable", bad);
  json_object_object_add(o, "incomplete", part);
}

static void incomplete_readable(const listing *l) {
  for (size_t i = 0; i < l->n_part; i++)
    printf("incomplete  %s  (%s)\n", l->part[i].name,
           l->part[i].running ? "a backup create is writing it"
                              : "a backup create that did not finish; remove it with rm");
}

/* --max-clock-skew-s, as list and prune take it. */
#define SKEW_FLAG(dst) {"--max-clock-skew-s", FLAG_INT, (dst), 0, 0, BACKUP_SKEW_S_MAX}

int cmd_backup_list(cli *g, int argc, char **argv) {
  const char *dir;
  int64_t skew_s = BACKUP_SKEW_S;
  const cli_flag flags[] = {SKEW_FLAG(&skew_s), {NULL}};
  const char *const names[] = {"DIR", NULL};
  int rc = cli_parse(g, argc, argv, flags, names, &dir);
  if (rc != CLI_OK) return rc;
  listing l;
  clock_check clk = clock_now(skew_s);
  if ((rc = list_dir(g, "list", dir, &clk, &l)) != CLI_OK) return rc;
  json_object *backups = g->json ? json_object_new_array() : NULL;
  for (size_t i = 0; i < l.n_ok; i++) {
    char t[48];
    if (g->json) {
      json_object *b = json_object_new_object();
      json_object_object_add(b, "name", cli_json_new_string(l.ok[i].name));
      header_json(b, &l.ok[i].h);
      json_object_object_add(b, "suspect", json_object_new_boolean(l.ok[i].suspect));
      json_object_array_add(backups, b);
      continue;
    }
    time_text(l.ok[i].h.time_us, t);
    printf("%s  lsn %" PRIu64 "  epoch %" PRIu64 "  %" PRIu64 " bytes  %s%s\n", t, l.ok[i].h.lsn,
           l.ok[i].h.epoch, l.ok[i].h.data_bytes, l.ok[i].name,
           l.ok[i].suspect ? "  (suspect time)" : "");
  }
  if (g->json) {
    json_object *o = ok_json(1);
    json_object_object_add(o, "backups", backups);
    problems_json(o, &l);
    cli_json_print(stdout, o);
  } else {
    incomplete_readable(&l);
  }
  return CLI_OK;
}

/* Deletes dir/name; 0 or -1 with why. */
static int remove_backup(const char *dir, const char *name, char *why, size_t whylen) {
  char path[8192];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (unlink(path) == 0) return 0;
  snprintf(why, whylen, "%.400s: %s", path, strerror(errno));
  return -1;
}

int cmd_backup_prune(cli *g, int argc, char **argv) {
  const char *dir;
  int64_t keep_n[3] = {0, 0, 0}, skew_s = BACKUP_SKEW_S;
  int dry = 0;
  const cli_flag flags[] = {{"--keep-daily", FLAG_INT, &keep_n[0], 1, 0, INT32_MAX},
                            {"--keep-weekly", FLAG_INT, &keep_n[1], 1, 0, INT32_MAX},
                            {"--keep-monthly", FLAG_INT, &keep_n[2], 1, 0, INT32_MAX},
                            {"--dry-run", FLAG_BOOL, &dry},
                            SKEW_FLAG(&skew_s),
                            {NULL}};
  const char *const names[] = {"DIR", NULL};
  int rc = cli_parse(g, argc, argv, flags, names, &dir);
  if (rc != CLI_OK) return rc;
  listing l;
  clock_check clk = clock_now(skew_s);
  if ((rc = list_dir(g, "prune", dir, &clk, &l)) != CLI_OK) return rc;
  int64_t *times = cli_alloc(g, (l.n_ok ? l.n_ok : 1) * sizeof *times);
  eg_retain *keep = cli_alloc(g, (l.n_ok ? l.n_ok : 1) * sizeof *keep);
  const int policy[3] = {(int)keep_n[0], (int)keep_n[1], (int)keep_n[2]};
  for (size_t i = 0; i < l.n_ok; i++) times[i] = l.ok[i].h.time_us;
  if (eg_backup_retain(times, l.n_ok, policy, clk.now_us, clk.skew_us, keep) != EG_OK)
    return fail(g, "prune", "out of memory");
  char why[512] = "";
  int failed = 0;
  for (size_t i = 0; i < l.n_ok; i++)
    if (keep[i] == EG_RETAIN_DELETE && !dry &&
        remove_backup(dir, l.ok[i].name, why, sizeof why) != 0) {
      fprintf(stderr, "engram: backup prune: %s\n", why);
      keep[i] = EG_RETAIN_KEEP; /* still there: reported as kept */
      failed = 1;
    }
  json_object *o = NULL;
  if (g->json) {
    o = ok_json(!failed);
    json_object_object_add(o, "dry_run", json_object_new_boolean(dry));
  }
  static const struct {
    eg_retain what;
    const char *json, *word;
  } passes[] = {{EG_RETAIN_KEEP, "kept", "kept   "},
                {EG_RETAIN_DELETE, "deleted", NULL},
                {EG_RETAIN_SUSPECT, "suspect", "suspect"}};
  for (size_t pass = 0; pass < sizeof passes / sizeof *passes; pass++) {
    json_object *names = g->json ? json_object_new_array() : NULL;
    for (size_t i = 0; i < l.n_ok; i++) {
      if (keep[i] != passes[pass].what) continue;
      if (g->json) {
        json_object_array_add(names, cli_json_new_string(l.ok[i].name));
      } else {
        char t[48];
        time_text(l.ok[i].h.time_us, t);
        printf("%s %s  %s\n",
               passes[pass].word ? passes[pass].word : dry ? "would delete" : "deleted", t,
               l.ok[i].name);
      }
    }
    if (g->json) json_object_object_add(o, passes[pass].json, names);
  }
  if (g->json) {
    problems_json(o, &l);
    cli_json_print(stdout, o);
  } else {
    incomplete_readable(&l);
  }
  return failed ? CLI_ERR : CLI_OK;
}
