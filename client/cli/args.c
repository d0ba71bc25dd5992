/*
 * Flag parsing for the global options and every command, and the arena the
 * parsed values (map entries) live in until exit.
 */
#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

const cli_flag cli_no_flags[] = {{NULL}};

struct cli_block {
  cli_block *next;
  max_align_t data[];
};

void *cli_alloc(cli *g, size_t n) {
  cli_block *b = calloc(1, sizeof *b + n);
  if (!b) {
    fputs("engram: out of memory\n", stderr);
    exit(CLI_ERR);
  }
  b->next = g->arena;
  g->arena = b;
  return b->data;
}

char *cli_strndup(cli *g, const char *s, size_t n) {
  char *c = cli_alloc(g, n + 1);
  memcpy(c, s, n);
  return c;
}

void cli_arena_free(cli *g) {
  while (g->arena) {
    cli_block *b = g->arena;
    g->arena = b->next;
    free(b);
  }
}

static int set_int(const cli *g, const cli_flag *f, const char *text) {
  char *end;
  errno = 0;
  long long v = strtoll(text, &end, 10);
  if (!*text || *end || errno == ERANGE || v < f->min || v > f->max)
    return cli_usage_error(g, "%s: expected an integer in [%lld, %lld], got '%s'", f->name,
                           (long long)f->min, (long long)f->max, text);
  *(int64_t *)f->dst = v;
  return CLI_OK;
}

/* Adds the entry KEY=VALUE of text to the map; argc bounds how many flags
 * (so entries) there can be. */
static int add_map_entry(cli *g, const cli_flag *f, const char *text, int argc) {
  cli_map *map = f->dst;
  const char *eq = strchr(text, '=');
  if (!eq || eq == text)
    return cli_usage_error(g, "%s: expected KEY=VALUE, got '%s'", f->name, text);
  if (!map->items) map->items = cli_alloc(g, (size_t)argc * sizeof *map->items);
  ProtobufCMessage *e = cli_alloc(g, map->entry->sizeof_message);
  protobuf_c_message_init(map->entry, e);
  char *key = cli_alloc(g, (size_t)(eq - text) + 1);
  memcpy(key, text, (size_t)(eq - text));
  pb_set_string(e, "key", key);
  pb_set_string(e, "value", eq + 1);
  map->items[map->n++] = e;
  return CLI_OK;
}

int cli_read_input(cli *g, const char *flag, const char *src, size_t max, char **out,
                   size_t *len) {
  FILE *in = stdin;
  if (strcmp(src, "-") != 0 && !(src[0] == '@' && (in = fopen(src + 1, "rb"))))
    return cli_usage_error(g, "%s %s: %s", flag, src, strerror(errno));
  const char *what = in == stdin ? "stdin" : src + 1;
  /* Read one byte past the bound: a larger input is refused before any call. */
  char *buf = cli_alloc(g, max + 2);
  size_t n = fread(buf, 1, max + 1, in);
  int err = ferror(in);
  if (in != stdin) fclose(in);
  if (err) return cli_usage_error(g, "%s: cannot read %s", flag, what);
  if (n > max)
    return cli_usage_error(g, "%s: %s holds more than %zu bytes (the largest request engramd takes)",
                           flag, what, max);
  if (memchr(buf, '\0', n)) return cli_usage_error(g, "%s: %s holds a NUL byte", flag, what);
  buf[n] = '\0';
  *out = buf;
  *len = n;
  return CLI_OK;
}

/* The row of flags named by arg[0..namelen), or NULL. */
static const cli_flag *find_flag(const cli_flag *flags, const char *arg, size_t namelen) {
  for (; flags->name; flags++)
    if (strlen(flags->name) == namelen && !strncmp(flags->name, arg, namelen)) return flags;
  return NULL;
}

int cli_flag_take(cli *g, const cli_flag *flags, int argc, char **argv, int *i, uint32_t *seen) {
  const char *arg = argv[*i];
  if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) return CLI_HELP;
  const char *eq = strchr(arg, '=');
  size_t namelen = eq ? (size_t)(eq - arg) : strlen(arg);
  const cli_flag *f = find_flag(flags, arg, namelen);
  if (!f) {
    /* a global option, before or after the command words: one record of
     * it for the whole line */
    flags = cli_global_flags(g);
    seen = &g->globals_seen;
    if (!(f = find_flag(flags, arg, namelen)))
      return cli_usage_error(g, "unknown flag '%.*s'", (int)namelen, arg);
  }
  assert(f - flags < 32); /* one bit of *seen each */
  /* a value given twice: which one was meant? (a map's entries add up;
   * a switch set twice is still set) */
  if ((*seen & (1u << (f - flags))) && f->kind != FLAG_MAP && f->kind != FLAG_BOOL)
    return cli_usage_error(g, "%s given twice", f->name);
  *seen |= 1u << (f - flags);
  (*i)++;
  if (f->kind == FLAG_BOOL) {
    if (eq) return cli_usage_error(g, "%s takes no value", f->name);
    *(int *)f->dst = 1;
    return CLI_OK;
  }
  const char *value = eq ? eq + 1 : NULL;
  if (!value) {
    if (*i >= argc) return cli_usage_error(g, "%s needs a value", f->name);
    value = argv[(*i)++];
  }
  switch (f->kind) {
  case FLAG_STR:
    *(const char **)f->dst = value;
    return CLI_OK;
  case FLAG_TEXT: {
    if (strcmp(value, "-") != 0) {
      *(const char **)f->dst = value;
      return CLI_OK;
    }
    size_t len;
    return cli_read_input(g, f->name, "-", CLI_INPUT_MAX, (char **)f->dst, &len);
  }
  case FLAG_INT:
    return set_int(g, f, value);
  default:
    return add_map_entry(g, f, value, argc);
  }
}

int cli_parse(cli *g, int argc, char **argv, const cli_flag *flags,
              const char *const *pos_names, const char **pos) {
  uint32_t seen = 0;
  size_t npos = 0, want = 0;
  while (pos_names && pos_names[want]) want++;
  int flags_done = 0;
  for (int i = 0; i < argc;) {
    const char *a = argv[i];
    if (!flags_done && !strcmp(a, "--")) {
      flags_done = 1;
      i++;
    } else if (!flags_done && a[0] == '-' && a[1]) {
      int rc = cli_flag_take(g, flags, argc, argv, &i, &seen);
      if (rc != CLI_OK) return rc;
    } else if (npos == want) {
      return cli_usage_error(g, "unexpected argument '%s'", a);
    } else {
      pos[npos++] = a;
      i++;
    }
  }
  /* --version anywhere on the line wins over what the command lacks */
  if (g->version) return CLI_VERSION;
  if (npos < want) return cli_usage_error(g, "missing %s", pos_names[npos]);
  for (int k = 0; flags[k].name; k++)
    if (flags[k].required && !(seen & (1u << k)))
      return cli_usage_error(g, "missing %s", flags[k].name);
  return CLI_OK;
}
