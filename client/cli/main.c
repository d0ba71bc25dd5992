/*
 * engram: the command-line client. Global options, then a command from the
 * table below.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define DEFAULT_TARGET "127.0.0.1:50051"

const cli_cmd cli_commands[] = {
    {"session", "create",
     "--user U [--agent A] [--id ID] [--meta k=v]... [--ttl S] [--language L] [--exclude-from-search]",
     "create a session (--exclude-from-search: its messages are never indexed for search)",
     cmd_session_create},
    {"session", "get", "ID", "show a session", cmd_session_get},
    {"session", "list",
     "[--user U] [--states s,..] [--agent A] [--meta K=V].. [--created-from S] [--created-to S] "
     "[--updated-from S] [--updated-to S] [--page-size N] [--page-token T]",
     "list a user's sessions (newest first), or without --user the team's (newest activity first); times in unix seconds",
     cmd_session_list},
    {"session", "update", "ID [--agent A] [--ttl S] [--metadata k=v]... [--clear-metadata] [--reopen]",
     "change a session's agent, idle TTL or metadata (replaced whole); --reopen an ended or expired one",
     cmd_session_update},
    {"session", "end", "ID [--reason R]", "end a session (appends are refused after)", cmd_session_end},
    {"session", "delete", "ID", "delete a session and its messages", cmd_session_delete},
    {"session", "fork", "ID --through N [--id NEW]",
     "a new session holding messages 1..N of ID (and its summary if it covers no more)",
     cmd_session_fork},
    {"message", "append",
     "SESSION_ID --role user|assistant|system|tool --content TEXT [--token-count N] "
     "[--client-id X] [--meta k=v]... [--embedding x,y,..]",
     "append a message", cmd_message_append},
    {"message", "list", "SESSION_ID [--page-size N] [--page-token T] [--newest]",
     "list messages, oldest first (--newest: newest first)", cmd_message_list},
    {"message", "search",
     "[--user U] --query Q [--session S,..] [--agent A] [--roles user,assistant,..] [--from T] "
     "[--to T] [--states active,ended,expired] [--top-k N] [--weights kw,vec,rec] [--half-life S] "
     "[--min-score F] [--language L] [--page-token T] [--embedding x,y,..]",
     "search a user's messages (without --user: the team's) by keyword (BM25) and recency; "
     "times RFC 3339 or unix seconds", cmd_message_search},
    {"context", NULL, "SESSION_ID [--max-messages N] [--max-tokens N]",
     "the summary and the newest messages that fit", cmd_context},
    {"summary", "update", "SESSION_ID --through-seq N --text TEXT",
     "replace the rolling summary", cmd_summary_update},
    {"memory", "add",
     "--user U --type T --text TEXT [--category C] [--importance F] [--confidence F] "
     "[--tags a,b] [--embedding x,y,..] [--agent A] [--id ID] [--source-session S] "
     "[--expire-in SECONDS] [--dedup off|mark|merge] [--quota-policy reject|evict_lowest] "
     "[--conflict-policy keep_both|newer_wins] [--jaccard F] [--cosine F] [--meta K=V ...] "
     "[--namespace a/b] [--language TAG]",
     "store a memory (de-duplicated against the user's memories)", cmd_memory_add},
    {"memory", "get", "ID", "show a memory", cmd_memory_get},
    {"memory", "update",
     "ID [--text T] [--type T] [--category C] [--importance F] [--confidence F] [--tags a,b | "
     "--clear-tags] [--embedding x,y,.. | --clear-embedding] [--agent A] [--expire-in S] "
     "[--meta K=V ... | --clear-meta] [--namespace a/b] [--language TAG] "
     "[--expected-version N] [--dedup off|mark]",
     "change the given fields of a memory (an edit of text, embedding or type is "
     "de-duplicated unless --dedup off)", cmd_memory_update},
    {"memory", "delete", "ID [--purge] [--expected-version N]",
     "mark a memory DELETED (--purge: remove it and its index entries)", cmd_memory_delete},
    {"memory", "list",
     "--user U [--types t,..] [--states s,..] [--tags a,..] [--category C] [--min-importance F] "
     "[--agent A] [--source-session S] [--namespace PREFIX] [--meta K=V ...] "
     "[--order newest_first|importance] [--page-size N] [--page-token T] [--embeddings]",
     "list a user's memories", cmd_memory_list},
    {"memory", "search",
     "--user U [--query Q] [--embedding x,y,..] [--top-k N] [--weights kw,vec,imp,rec] "
     "[--min-score F] [--types ..] [--tags ..] [--category C] [--min-importance F] [--agent A] "
     "[--source-session S] [--namespace PREFIX] [--meta K=V ...] [--language TAG] [--embeddings]",
     "hybrid search of a user's ACTIVE memories", cmd_memory_search},
    {"memory", "dedup", "--user U [--jaccard F] [--cosine F]",
     "re-run de-duplication over a user's ACTIVE memories", cmd_memory_dedup},
    {"memory", "batch-add", "--file F|-",
     "create up to 100 memories in one write: JSON lines of CreateMemoryRequest (proto3 JSON) or "
     "one JSON array; prints each outcome (exit 1 if any failed)", cmd_memory_batch_add},
    {"memory", "batch-delete", "ID... [--purge]",
     "delete up to 1000 memories in one write; prints each outcome (exit 1 if any failed)",
     cmd_memory_batch_delete},
    {"user", "delete", "USER", "erase every session, message and memory of a user", cmd_user_delete},
    {"user", "stats", "USER", "a user's memory counts by state and type", cmd_user_stats},
    {"user", "export", "USER",
     "everything of a user, decrypted, as JSON lines on stdout (one session, message or memory "
     "a line)", cmd_user_export},
    {"health", NULL, "", "check the server (exit 0 if SERVING)", cmd_health},
    {"admin", "status", "", "role, epoch, LSNs and (primary) each replica's lag",
     cmd_admin_status},
    {"admin", "promote", "", "make this replica the primary (epoch + 1)", cmd_admin_promote},
    {"admin", "checksum", "", "digest of all data and its LSN (equal LSNs: equal digests)",
     cmd_admin_checksum},
    {"admin", "retention",
     "get | set [--expired-session-retention-s S] [--raw-message-retention-s S] "
     "[--memory-tombstone-retention-s S]",
     "this tenant's retention (seconds, 0 keeps forever, `default` for the server's)",
     cmd_admin_retention},
    {"admin", "keys",
     "status | rewrap [--max N] | rotate [--tenant T [--user U]] | rotate-blind | "
     "backup --out FILE [--force]",
     "the key store: data keys per master key, re-wrapping, data-key and blind-index key "
     "rotations, its backup (an LMDB file, mode 0600)",
     cmd_admin_keys},
    {"admin", "tenant",
     "delete TENANT --confirm TENANT | limits get [TENANT] | limits set TENANT "
     "[--calls-per-s N] [--writes-per-s N] [--concurrent-calls N] [--storage-bytes N]",
     "erase a whole tenant (data keys destroyed); a tenant's limits (`default` for the server's)",
     cmd_admin_tenant},
    {"backup", "create", "--out FILE [--force]",
     "write a backup of the node's data to FILE (admin token; mode 0600; an existing FILE only "
     "with --force; --timeout bounds the whole backup, default 1 hour)",
     cmd_backup_create},
    {"backup", "verify", "FILE [--keyring K] [--tmp-dir D]",
     "check a backup: digest, the data as a store, records per DB; with --keyring every sealed "
     "field; the data is copied into D (default $TMPDIR or /tmp) (no server)",
     cmd_backup_verify},
    {"backup", "restore",
     "FILE --data-dir DIR [--force] [--wal-archive ARCH [--to-lsn N | --to-time T]]",
     "make DIR the data dir of a node at the backup's LSN and epoch (DIR empty unless --force; "
     "not a running node's; no server); with --wal-archive, then replay the archived log up to "
     "the target (RFC 3339 or unix seconds; none: all of it)",
     cmd_backup_restore},
    {"backup", "list", "DIR [--max-clock-skew-s S]",
     "the backup files in DIR, oldest first; flags times more than S (default 86400) seconds "
     "ahead of this clock, or not after 1970, and temp files of unfinished creates (no server)",
     cmd_backup_list},
    {"backup", "prune",
     "DIR --keep-daily N --keep-weekly N --keep-monthly N [--dry-run] [--max-clock-skew-s S]",
     "delete the backups in DIR that are not the newest of one of the last N days, ISO weeks or "
     "months (UTC) that have one; never the newest, never one with a suspect time (as list "
     "flags), never a temp file (no server)",
     cmd_backup_prune},
    {"keygen", NULL, "[--id N]", "print a new keyring line (no server)", cmd_keygen},
    {"token", "hash", "TOKEN", "print the sha256 hex of a token (no server)", cmd_token_hash},
    {"call", NULL, "SERVICE/METHOD [-d JSON|@FILE|-] [--dry-run] | --list",
     "call any RPC with a request in proto3 JSON (default {}); print each response as a JSON "
     "line; SERVICE short (SessionService) or full (engram.v1.SessionService); --dry-run: "
     "print the request as parsed, call nothing; --list: the methods", cmd_call},
    {"completion", NULL, "bash|zsh", "print the shell completion script (no server)",
     cmd_completion},
};
const size_t cli_ncommands = sizeof cli_commands / sizeof cli_commands[0];

/* "session create" or "health", then " ARGS" if any. */
static void command_words(FILE *out, const cli_cmd *c) {
  fprintf(out, "%s%s%s%s%s", c->group, c->sub ? " " : "", c->sub ? c->sub : "",
          *c->args ? " " : "", c->args);
}

static void command_usage(FILE *out, const cli_cmd *c) {
  fputs("usage: engram ", out);
  command_words(out, c);
  fputc('\n', out);
}

static void usage(FILE *out) {
  fputs("usage: engram [GLOBAL OPTIONS] COMMAND [ARGS]\n\ncommands:\n", out);
  for (size_t i = 0; i < cli_ncommands; i++) {
    fputs("  ", out);
    command_words(out, &cli_commands[i]);
    fprintf(out, "\n      %s\n", cli_commands[i].about);
  }
  fputs("  help\n      this text\n\n"
        "global options (anywhere on the line):\n"
        "  --target HOST:PORT  server (env ENGRAM_TARGET, default " DEFAULT_TARGET ")\n"
        "  --token T           bearer token (env ENGRAM_TOKEN)\n"
        "  --token-file F      bearer token: the first line of F (mode 0600 or stricter)\n"
        "  --tls-ca F          dial over TLS, verifying the server against the PEM CA bundle F\n"
        "                      (env ENGRAM_TLS_CA; any --tls-* option turns TLS on; without\n"
        "                      --tls-ca the system's roots)\n"
        "  --tls-cert F        client certificate, PEM (mutual TLS; env ENGRAM_TLS_CERT)\n"
        "  --tls-key F         its private key, PEM (env ENGRAM_TLS_KEY)\n"
        "  --tls-server-name N name the server's certificate must carry (default the target's\n"
        "                      host; env ENGRAM_TLS_SERVER_NAME)\n"
        "  --json              print each response as proto3 JSON; a write's LSN as \"engram-lsn\"\n"
        "  --timeout MS        deadline of each call (default 10000; of a whole user export 3600000)\n"
        "  --min-lsn N         read-your-writes: wait until the server applied LSN N\n"
        "  --version           print the version\n",
        out);
  fprintf(out, "--content - and --text - read the text from stdin (at most %d bytes)\n",
          CLI_INPUT_MAX);
  fputs("\nexit status: 0 ok, 1 other failure, 2 usage, 3 cannot connect / UNAVAILABLE /\n"
        "DEADLINE_EXCEEDED, 4 NOT_FOUND, 5 invalid input (INVALID_ARGUMENT, OUT_OF_RANGE,\n"
        "FAILED_PRECONDITION), 6 UNAUTHENTICATED / PERMISSION_DENIED, 7 ALREADY_EXISTS / ABORTED\n",
        out);
}

int cli_usage_error(const cli *g, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("engram: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  if (g->cmd)
    command_usage(stderr, g->cmd);
  else
    fputs("run 'engram help' for the commands\n", stderr);
  return CLI_USAGE;
}

/* Finds the command named by argv[0] (and argv[1]); sets *nwords to how
 * many words named it. Returns NULL after a usage error. */
static const cli_cmd *find_command(cli *g, int argc, char **argv, int *nwords) {
  char subs[128] = ""; /* the subcommands of group argv[0], for the error */
  size_t len = 0;
  for (size_t i = 0; i < cli_ncommands; i++) {
    const cli_cmd *c = &cli_commands[i];
    if (strcmp(argv[0], c->group)) continue;
    if (!c->sub || (argc > 1 && !strcmp(argv[1], c->sub))) {
      *nwords = c->sub ? 2 : 1;
      return c;
    }
    len += (size_t)snprintf(subs + len, sizeof subs - len, " %s", c->sub);
  }
  if (!len)
    cli_usage_error(g, "unknown command '%s'", argv[0]);
  else if (argc > 1)
    cli_usage_error(g, "unknown command '%s %s' ('%s' takes:%s)", argv[0], argv[1], argv[0], subs);
  else
    cli_usage_error(g, "'%s' needs one of:%s", argv[0], subs);
  return NULL;
}

const cli_flag *cli_global_flags(cli *g) {
  /* g is the one run's state: the table points into it */
  static cli_flag flags[12];
  if (!flags[0].name) {
    const cli_flag rows[] = {
        {"--target", FLAG_STR, &g->target},
        {"--token", FLAG_STR, &g->token},
        {"--token-file", FLAG_STR, &g->token_file},
        {"--tls-ca", FLAG_STR, &g->tls_ca},
        {"--tls-cert", FLAG_STR, &g->tls_cert},
        {"--tls-key", FLAG_STR, &g->tls_key},
        {"--tls-server-name", FLAG_STR, &g->tls_server_name},
        {"--json", FLAG_BOOL, &g->json},
        {"--timeout", FLAG_INT, &g->timeout_ms, 0, 1, INT32_MAX},
        {"--min-lsn", FLAG_INT, &g->min_lsn, 0, 0, INT64_MAX},
        {"--version", FLAG_BOOL, &g->version},
        {NULL},
    };
    _Static_assert(sizeof rows == sizeof flags, "cli_global_flags: one slot per row");
    memcpy(flags, rows, sizeof rows);
  }
  return flags;
}

/* Parses the global options before the command; *i ends at the command. */
static int parse_globals(cli *g, int argc, char **argv, int *i) {
  while (*i < argc && argv[*i][0] == '-') {
    int rc = cli_flag_take(g, cli_global_flags(g), argc, argv, i, &g->globals_seen);
    if (rc != CLI_OK) return rc;
  }
  return g->version ? CLI_VERSION : CLI_OK;
}

static void version(void) { puts("engram " ENGRAM_VERSION); }

static int run(cli *g, int argc, char **argv) {
  int i = 1;
  int rc = parse_globals(g, argc, argv, &i);
  if (rc == CLI_HELP || (rc == CLI_OK && i < argc && !strcmp(argv[i], "help"))) {
    usage(stdout);
    return CLI_OK;
  }
  if (rc == CLI_VERSION) {
    version();
    return CLI_OK;
  }
  if (rc != CLI_OK) return rc;
  if (i == argc) return cli_usage_error(g, "missing command");
  int nwords;
  g->cmd = find_command(g, argc - i, argv + i, &nwords);
  if (!g->cmd) return CLI_USAGE;
  i += nwords;
  rc = g->cmd->run(g, argc - i, argv + i);
  if (rc == CLI_HELP) {
    command_usage(stdout, g->cmd);
    return CLI_OK;
  }
  if (rc == CLI_VERSION) {
    version();
    return CLI_OK;
  }
  return rc;
}

int main(int argc, char **argv) {
  cli g = {.target = getenv("ENGRAM_TARGET"),
           .token_env = getenv("ENGRAM_TOKEN"),
           .tls_ca = getenv("ENGRAM_TLS_CA"),
           .tls_cert = getenv("ENGRAM_TLS_CERT"),
           .tls_key = getenv("ENGRAM_TLS_KEY"),
           .tls_server_name = getenv("ENGRAM_TLS_SERVER_NAME")};
  if (!g.target || !*g.target) g.target = DEFAULT_TARGET;
  int rc = run(&g, argc, argv);
  eg_client_free(g.client);
  cli_arena_free(&g);
  if (fflush(stdout) != 0 && rc == CLI_OK) {
    perror("engram: stdout");
    rc = CLI_ERR;
  }
  return rc;
}
