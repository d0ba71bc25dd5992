/*
 * The `engram` CLI: shared state and the helpers its commands share.
 *
 *   main.c         global options, the command table, dispatch, usage
 *   args.c         flag parsing and the arena everything parsed lives in
 *   pb.c           walking protobuf-c messages by their descriptors
 *   json.c         proto3 JSON output (--json)
 *   print.c        readable output
 *   rpc.c          one RPC: call, print the response or the error
 *   cmd_*.c        the commands (cmd_admin.c: AdminService; cmd_backup.c:
 *                  backup files)
 *
 * Exit codes: 0 success, 1 the RPC (or a local operation) failed,
 * 2 usage error.
 */
#ifndef ENGRAM_CLI_H
#define ENGRAM_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "engram.h"
#include "google/protobuf/timestamp.pb-c.h"

enum { CLI_OK = 0, CLI_ERR = 1, CLI_USAGE = 2, CLI_HELP = 3 /* --help seen; never an exit code */ };

typedef struct cli_block cli_block;
typedef struct cli_cmd cli_cmd;

/* The state of one run. */
typedef struct {
  const char *target;
  const char *token;   /* NULL: no authorization sent */
  int json;
  int64_t timeout_ms;  /* 0: the library's default */
  int64_t min_lsn;     /* 0: none */
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

/* Prints "engram: <why>" and the running command's usage line to stderr.
 * Returns CLI_USAGE. */
int cli_usage_error(const cli *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- args.c ---- */

typedef enum {
  FLAG_STR,  /* dst: const char ** */
  FLAG_INT,  /* dst: int64_t *, within [min, max] */
  FLAG_BOOL, /* dst: int *, set to 1; takes no value */
  FLAG_MAP,  /* dst: cli_map *, KEY=VALUE, repeatable */
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

/* Parses argv[0..argc): flags (terminated by a {NULL} row) in any order,
 * and exactly as many positionals as pos_names (NULL-terminated; NULL for
 * none) names, stored in pos[]. "--" ends the flags.
 * Returns CLI_OK, CLI_HELP for --help/-h, or CLI_USAGE after saying why. */
int cli_parse(cli *g, int argc, char **argv, const cli_flag *flags,
              const char *const *pos_names, const char **pos);

/* Parses the flag at argv[*i] (with its value, if it takes one) and
 * advances *i past it. seen (one bit per row of flags) records it.
 * Returns CLI_OK, CLI_HELP or CLI_USAGE as cli_parse. */
int cli_flag_take(cli *g, const cli_flag *flags, int argc, char **argv, int *i, uint32_t *seen);

/* n zeroed bytes that live until cli_arena_free; exits on out of memory. */
void *cli_alloc(cli *g, size_t n);
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

/* Writes m as one proto3 JSON object and a newline. Fields with default
 * values are included; unset message fields are left out. */
void cli_print_json(FILE *out, const ProtobufCMessage *m);
/* Writes str as a JSON string (quoted, escaped). */
void cli_json_string(FILE *out, const char *str);

/* ---- print.c ---- */

/* Writes m as readable "field: value" lines, messages as "#seq role: text". */
void cli_print_readable(FILE *out, const ProtobufCMessage *m);

/* ---- rpc.c ---- */

/* Makes g->client on first use: CLI_OK, or CLI_USAGE (bad --target or
 * --token, said). */
int cli_client(cli *g);

/* Calls method with req and prints the response (JSON or readable, then
 * "lsn: N" in readable mode after a write), or the error to stderr.
 * When keep is not NULL the response is handed over there on success (the
 * caller frees it with protobuf_c_message_free_unpacked).
 * Returns CLI_OK, CLI_ERR (RPC error) or CLI_USAGE (bad --target/--token). */
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
int cmd_message_append(cli *g, int argc, char **argv);
int cmd_message_list(cli *g, int argc, char **argv);
int cmd_context(cli *g, int argc, char **argv);
int cmd_summary_update(cli *g, int argc, char **argv);
int cmd_health(cli *g, int argc, char **argv);
int cmd_admin_status(cli *g, int argc, char **argv);
int cmd_admin_promote(cli *g, int argc, char **argv);
int cmd_admin_checksum(cli *g, int argc, char **argv);
int cmd_keygen(cli *g, int argc, char **argv);
int cmd_token_hash(cli *g, int argc, char **argv);
/* cmd_memory.c: MemoryService and UserService */
int cmd_memory_add(cli *g, int argc, char **argv);
int cmd_memory_get(cli *g, int argc, char **argv);
int cmd_memory_update(cli *g, int argc, char **argv);
int cmd_memory_delete(cli *g, int argc, char **argv);
int cmd_memory_list(cli *g, int argc, char **argv);
int cmd_memory_search(cli *g, int argc, char **argv);
int cmd_memory_dedup(cli *g, int argc, char **argv);
int cmd_user_delete(cli *g, int argc, char **argv);
int cmd_user_stats(cli *g, int argc, char **argv);
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
