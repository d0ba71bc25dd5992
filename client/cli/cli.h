/*
 * The `engram` CLI: shared state and the helpers its commands share.
 *
 *   main.c         global options, the command table, dispatch, usage
 *   args.c         flag parsing and the arena everything parsed lives in
 *   pb.c           walking protobuf-c messages by their descriptors
 *   json.c         proto3 JSON output (--json), with json-c
 *   jsonin.c       proto3 JSON input (engram call -d), with json-c
 *   print.c        readable output
 *   rpc.c          one RPC: call, print the response or the error; exit codes
 *   complete.c     bash and zsh completion, from the command table
 *   cmd_*.c        the commands (cmd_admin.c: AdminService; cmd_backup.c:
 *                  backup files; cmd_call.c: any RPC from JSON)
 *
 * Exit codes (cli_exit_code maps a failed call's status): 0 success,
 * 1 other failure, 2 usage, 3 cannot connect / UNAVAILABLE /
 * DEADLINE_EXCEEDED, 4 NOT_FOUND, 5 invalid input (INVALID_ARGUMENT,
 * OUT_OF_RANGE, FAILED_PRECONDITION), 6 UNAUTHENTICATED /
 * PERMISSION_DENIED, 7 ALREADY_EXISTS / ABORTED.
 */
#ifndef ENGRAM_CLI_H
#define ENGRAM_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

#include "backup/backup.h"
#include "engram.h"
#include "google/protobuf/field_mask.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"

enum {
  CLI_OK = 0,
  CLI_ERR = 1,
  CLI_USAGE = 2,
  CLI_UNAVAILABLE = 3,
  CLI_NOT_FOUND = 4,
  CLI_INVALID = 5,
  CLI_DENIED = 6,
  CLI_CONFLICT = 7,
  /* never exit codes: */
  CLI_HELP = 100,    /* --help seen */
  CLI_VERSION = 101, /* --version seen */
};

/* The largest value read from stdin or a file (--content -, --text -):
 * engramd keeps gRPC's default 4 MiB limit on a request it receives, so a
 * larger value could never be sent. */
#define CLI_INPUT_MAX (4 * 1024 * 1024)
/* The largest JSON of `engram call -d`: base64 and escapes make JSON up
 * to about twice the request it encodes (whose packed size is then held
 * to CLI_INPUT_MAX). */
#define CLI_JSON_INPUT_MAX (2 * CLI_INPUT_MAX)
/* The most JSON objects and arrays in the JSON of `engram call -d`,
 * counted before json-c parses it: json-c spends about 1 KB on each (2 KB
 * more when --dry-run prints them), so 8 MiB of "{}," would take GBs. An
 * AppendMessages of engramd's most messages (10000), each with its
 * metadata map, needs 20002. */
#define CLI_JSON_CONTAINERS_MAX 50000
/* The most JSON values (numbers, strings, bools, nulls, objects, arrays;
 * not keys) in the JSON of `engram call -d`, counted in the same pass:
 * json-c and the request spend about 90 to 150 bytes on an array element
 * (380 on an object member), so 8 MiB of "0," took 0.3 to 0.5 GB before
 * the packed request (CLI_INPUT_MAX) was weighed. The bound is one value
 * per 4 bytes of the largest request engramd takes: the long lists a
 * request may carry pack to 4 bytes a value or more (an embedding's
 * float; a map entry's tag, length, key tag, key length and key), and
 * what packs smaller (fields left at their defaults, empty tags, enum
 * filters) comes a few per message or in lists engramd caps far lower
 * (64 tags, 64 filter values), so a request it would take has fewer. */
#define CLI_JSON_VALUES_MAX (CLI_INPUT_MAX / 4)
/* The largest --token-file (a token is one short line). */
#define CLI_TOKEN_FILE_MAX 4096
/* The key under which --json output carries a write's engram-lsn. */
#define CLI_JSON_LSN_KEY "engram-lsn"

typedef struct cli_block cli_block;
typedef struct cli_cmd cli_cmd;

/* The state of one run. */
typedef struct {
  const char *target;
  const char *token;      /* --token; NULL if not given */
  const char *token_env;  /* $ENGRAM_TOKEN; used when neither --token nor --token-file is */
  const char *token_file; /* --token-file */
  /* --tls-ca, --tls-cert, --tls-key, --tls-server-name (defaults from
   * $ENGRAM_TLS_CA ...); any set: the client dials over TLS */
  const char *tls_ca, *tls_cert, *tls_key, *tls_server_name;
  int json;
  int version;            /* --version */
  int64_t timeout_ms;  /* 0: the library's default */
  int64_t min_lsn;     /* 0: none */
  uint32_t globals_seen; /* global options given, before or after the command: a bit per row */
  const cli_cmd *cmd;  /* the command running, for its usage line */
  eg_client *client;   /* made by the first RPC */
  cli_block *arena;    /* all cli_alloc memory; freed at exit */
} cli;

/* A command: `engram GROUP [SUB] ARGS`. run gets the words after the
 * command's own and returns an exit code (or CLI_HELP). */
struct cli_cmd {
  const char *group;
  const char *sub; /* NULL for one-word commands */
  const char *args;
  const char *about;
  int (*run)(cli *g, int argc, char **argv);
};

/* ---- main.c ---- */

/* The command table, for completion. */
extern const cli_cmd cli_commands[];
extern const size_t cli_ncommands;

/* Prints "engram: <why>" and the running command's usage line to stderr.
 * Returns CLI_USAGE. */
int cli_usage_error(const cli *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- args.c ---- */

typedef enum {
  FLAG_STR,  /* dst: const char ** */
  FLAG_INT,  /* dst: int64_t *, within [min, max] */
  FLAG_BOOL, /* dst: int *, set to 1; takes no value */
  FLAG_MAP,  /* dst: cli_map *, KEY=VALUE, repeatable */
  FLAG_TEXT, /* dst: const char **; "-" reads stdin (at most CLI_INPUT_MAX bytes) */
} cli_flag_kind;

typedef struct {
  const char *name; /* "--user" */
  cli_flag_kind kind;
  void *dst;
  int required;
  int64_t min, max;
} cli_flag;

/* Map entries of one map field (e.g. Session.metadata), built from
 * repeated KEY=VALUE flags. Set entry before parsing. */
typedef struct {
  const ProtobufCMessageDescriptor *entry;
  size_t n;
  ProtobufCMessage **items;
} cli_map;

#define CLI_I32 INT32_MIN, INT32_MAX

/* Parses a comma-separated list of enum values of d (short or full names)
 * into *out (arena), *n of them; an unknown value is a usage error naming
 * flag. */
int cli_parse_enums(cli *g, const char *flag, const ProtobufCEnumDescriptor *d, const char *s,
                    int **out, size_t *n);

/* The flags of a command that takes none. */
extern const cli_flag cli_no_flags[];

/* The global options (--target, --json, ...), accepted before or after
 * the command words: cli_flag_take falls back to them. */
const cli_flag *cli_global_flags(cli *g);

/* Reads all of stdin (src "-") or the file after '@' (src "@FILE") into
 * the arena, NUL-terminated, at most max bytes; more, a NUL byte or a read
 * error is a usage error naming flag and the bound. */
int cli_read_input(cli *g, const char *flag, const char *src, size_t max, char **out,
                   size_t *len);

/* Parses argv[0..argc): flags (terminated by a {NULL} row) in any order,
 * and exactly as many positionals as pos_names (NULL-terminated; NULL for
 * none) names, stored in pos[]. "--" ends the flags.
 * Returns CLI_OK, CLI_HELP for --help/-h, or CLI_USAGE after saying why. */
int cli_parse(cli *g, int argc, char **argv, const cli_flag *flags,
              const char *const *pos_names, const char **pos);

/* Parses the flag at argv[*i] (with its value, if it takes one) and
 * advances *i past it. seen (one bit per row of flags) records it, or
 * g->globals_seen a global option not in flags; a value flag seen
 * already is a usage error ("-d given twice", "--timeout given twice").
 * Returns CLI_OK, CLI_HELP or CLI_USAGE as cli_parse. */
int cli_flag_take(cli *g, const cli_flag *flags, int argc, char **argv, int *i, uint32_t *seen);

/* n zeroed bytes that live until cli_arena_free; exits on out of memory. */
void *cli_alloc(cli *g, size_t n);
/* The n bytes at s and a NUL, in the arena. */
char *cli_strndup(cli *g, const char *s, size_t n);
void cli_arena_free(cli *g);

/* ---- pb.c ---- */

/* How many values field f holds in m: the count of a repeated field, else
 * 1 if the field is present (proto3 scalars always are; a message only if
 * set; a oneof member only if chosen), else 0. */
size_t pb_count(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f);
/* The storage of the i-th value of f in m (for a message field, the slot
 * that holds the pointer). */
const void *pb_value(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, size_t i);
/* Sets the singular string field `name` of m to value (borrowed: it must
 * outlive m). The field must exist. */
void pb_set_string(ProtobufCMessage *m, const char *name, const char *value);
/* Bytes one value of f takes in a repeated field's array. */
size_t pb_value_size(const ProtobufCFieldDescriptor *f);
/* The proto3 JSON name of a field: session_id -> sessionId. */
void pb_json_name(const char *name, char *buf, size_t len);
/* 1 if f is a map<,> field (repeated XEntry{key=1, value=2}). */
int pb_is_map(const ProtobufCFieldDescriptor *f);
/* 1 if f holds a google.protobuf.Timestamp. */
int pb_is_timestamp(const ProtobufCFieldDescriptor *f);
/* RFC 3339 text of t ("2024-05-01T12:00:00.250Z"), with 0, 3, 6 or 9
 * fraction digits. */
void pb_timestamp_text(const Google__Protobuf__Timestamp *t, char buf[48]);
/* Text of a number or bool value (types other than string, bytes, enum,
 * message): "12", "-3.5", "true", "NaN", "Infinity". */
void pb_scalar_text(const ProtobufCFieldDescriptor *f, const void *v, char *buf, size_t len);
/* The value's name ("ROLE_USER"), or NULL for a number outside the enum. */
const char *pb_enum_name(const ProtobufCEnumDescriptor *d, int value);
/* The short lowercase name ("user" for ROLE_USER in enum Role), or the
 * number for a value outside the enum. */
void pb_enum_short(const ProtobufCEnumDescriptor *d, int value, char *buf, size_t len);
/* Parses a value name, full ("ROLE_USER") or short ("user"), any case.
 * Returns 0 and sets *value, or -1. */
int pb_enum_parse(const ProtobufCEnumDescriptor *d, const char *text, int *value);

/* ---- json.c ---- */

/* m as a proto3 JSON object (the caller puts it). Fields with default
 * values are included; unset message fields are left out. */
json_object *cli_json_message(const ProtobufCMessage *m);
/* Writes m as one proto3 JSON object and a newline; a write's lsn (not 0)
 * is added as "engram-lsn": "N" (CLI_JSON_LSN_KEY). */
void cli_print_json(FILE *out, const ProtobufCMessage *m, uint64_t lsn);
/* Writes j on one line and puts it. */
void cli_json_print(FILE *out, json_object *j);
/* A JSON string of str, invalid UTF-8 mended to U+FFFD. */
json_object *cli_json_new_string(const char *str);

/* ---- jsonin.c ---- */

/* Parses text (len bytes, NUL-terminated) as the proto3 JSON of one desc
 * into *out (arena memory). -1 with why ("session.ttl_seconds: expected an
 * integer ...", "foo: unknown field of engram.v1.X") on bad input: also
 * empty input, more than CLI_JSON_CONTAINERS_MAX objects and arrays or
 * CLI_JSON_VALUES_MAX values (both counted before json-c parses), a key
 * twice in one object or a lone UTF-16 surrogate escape (\ud800), which
 * json-c would take (the last key winning, U+FFFD for the surrogate). */
int cli_json_to_message(cli *g, const char *text, size_t len,
                        const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out, char *why,
                        size_t whylen);

/* ---- print.c ---- */

/* Writes m as readable "field: value" lines, messages as "#seq role: text". */
void cli_print_readable(FILE *out, const ProtobufCMessage *m);

/* ---- rpc.c ---- */

/* The run's client, made on first use from --target and --token (or
 * --token-file, or $ENGRAM_TOKEN), over TLS when a --tls-* option is set;
 * NULL after a usage error saying why. */
eg_client *cli_client(cli *g);
/* The exit code of a call that ended with grpc_code. */
int cli_exit_code(int grpc_code);
/* Prints a failed call's status ("engram: NOT_FOUND: ...") to stderr, then
 * what its grpc-status-details-bin says (reason, field violations, retry
 * delay) and its request id, a line each. */
void cli_print_status(const eg_client_status *st);

/* Calls method with req and prints the response (JSON or readable, then
 * "lsn: N" in readable mode after a write), or the error to stderr.
 * When keep is not NULL the response is handed over there on success (the
 * caller frees it with protobuf_c_message_free_unpacked).
 * Returns CLI_OK, cli_exit_code of the failed call, or CLI_USAGE (bad
 * --target/--token). */
int cli_rpc(cli *g, const eg_client_method *method, const ProtobufCMessage *req,
            ProtobufCMessage **keep);
/* cli_rpc without printing the response: *resp is the caller's to free
 * (protobuf_c_message_free_unpacked) on CLI_OK. Errors are printed. */
int cli_rpc_quiet(cli *g, const eg_client_method *method, const ProtobufCMessage *req,
                  ProtobufCMessage **resp);

/* ---- commands ---- */

/* cmd_misc.c: initialises crypto for a local command: 1, or 0 after
 * printing why. */
int cli_crypto_ready(void);

int cmd_admin_retention(cli *g, int argc, char **argv);
int cmd_session_create(cli *g, int argc, char **argv);
int cmd_session_get(cli *g, int argc, char **argv);
int cmd_session_list(cli *g, int argc, char **argv);
int cmd_session_end(cli *g, int argc, char **argv);
int cmd_session_update(cli *g, int argc, char **argv);
int cmd_session_delete(cli *g, int argc, char **argv);
int cmd_session_fork(cli *g, int argc, char **argv);
int cmd_message_append(cli *g, int argc, char **argv);
int cmd_message_list(cli *g, int argc, char **argv);
int cmd_message_search(cli *g, int argc, char **argv);
int cmd_context(cli *g, int argc, char **argv);
int cmd_summary_update(cli *g, int argc, char **argv);
int cmd_health(cli *g, int argc, char **argv);
int cmd_admin_status(cli *g, int argc, char **argv);
int cmd_admin_promote(cli *g, int argc, char **argv);
int cmd_admin_checksum(cli *g, int argc, char **argv);
/* cmd_admin.c: `admin keys SUB` and `admin tenant SUB` pick one of these
 * (argv starts after SUB). cmd_keys.c: status, rewrap, backup;
 * cmd_key_rotation.c: rotate; cmd_tenant.c: delete;
 * cmd_limits.c: limits get|set. */
int cmd_admin_keys(cli *g, int argc, char **argv);
int cmd_admin_tenant(cli *g, int argc, char **argv);
/* cmd_backup.c: streams a BackupChunk stream (method path, request req)
 * into w, a progress bar on stderr when it is a terminal, then commits w
 * (or aborts it on any failure: w is gone either way; a signal meanwhile
 * removes its temp file). On CLI_OK *h describes it (from the last
 * chunk). A failed stream returns its status's exit code, a local failure
 * CLI_ERR, with why filled. */
int cli_backup_fetch(cli *g, const char *path, const ProtobufCMessage *req,
                     eg_backup_writer *w, eg_backup_header *h, char *why, size_t whylen);
int cmd_keys_status(cli *g, int argc, char **argv);
int cmd_keys_rewrap(cli *g, int argc, char **argv);
int cmd_keys_backup(cli *g, int argc, char **argv);
int cmd_keys_rotate(cli *g, int argc, char **argv);
int cmd_keys_rotate_blind(cli *g, int argc, char **argv);
int cmd_tenant_delete(cli *g, int argc, char **argv);
int cmd_tenant_limits(cli *g, int argc, char **argv);
int cmd_keygen(cli *g, int argc, char **argv);
int cmd_token_hash(cli *g, int argc, char **argv);
int cmd_call(cli *g, int argc, char **argv);
int cmd_completion(cli *g, int argc, char **argv);
/* cmd_memory.c: MemoryService and UserService */
int cmd_memory_add(cli *g, int argc, char **argv);
int cmd_memory_get(cli *g, int argc, char **argv);
int cmd_memory_update(cli *g, int argc, char **argv);
int cmd_memory_delete(cli *g, int argc, char **argv);
int cmd_memory_list(cli *g, int argc, char **argv);
int cmd_memory_search(cli *g, int argc, char **argv);
int cmd_memory_dedup(cli *g, int argc, char **argv);
int cmd_memory_batch_add(cli *g, int argc, char **argv);
int cmd_memory_batch_delete(cli *g, int argc, char **argv);
int cmd_user_delete(cli *g, int argc, char **argv);
int cmd_user_stats(cli *g, int argc, char **argv);
int cmd_user_export(cli *g, int argc, char **argv);
/* cmd_memory.c's value parsing, shared with cmd_message.c (each a usage
 * error naming flag): s split at commas into *out (arena; an empty item is
 * an error), a float, a comma-separated list of floats. */
int split_list(cli *g, const char *flag, const char *s, char ***out, size_t *n);
int parse_float(cli *g, const char *flag, const char *s, float *out);
int parse_floats(cli *g, const char *flag, const char *s, float **out, size_t *n);
/* cmd_backup.c: backup files (AdminService.Backup, then local work) */
int cmd_backup_create(cli *g, int argc, char **argv);
int cmd_backup_verify(cli *g, int argc, char **argv);
int cmd_backup_restore(cli *g, int argc, char **argv);
int cmd_backup_list(cli *g, int argc, char **argv);
int cmd_backup_prune(cli *g, int argc, char **argv);

/* ---- pitr.c (point-in-time restore) ---- */

/* --to-time's value: RFC 3339 ("2026-01-02T03:04:05.5Z", "...+02:00") or
 * unix seconds ("1767323045.5"). Returns 0 and *us, or -1. */
int cli_parse_time_us(const char *s, int64_t *us);

#endif
