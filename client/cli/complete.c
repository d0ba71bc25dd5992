/*
 * engram completion bash|zsh: the completion script, generated from the
 * command table (main.c), so every command and flag it lists is there.
 * The build writes both into build/completion/ and `make install` installs
 * them. Both complete the command words, then the command's flags and the
 * global options; the words after a global option that takes a value are
 * skipped when finding the command.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The global options (cli_global_flags of the run). */
static const cli_flag *globals;

typedef struct {
  const char *name;
  /* the shell's code that offers the words $words_ (bash) / w (zsh) */
  const char *offer;
  const char *head, *tail;
  const char *word;        /* the i-th word typed, i from 1 */
  const char *first, *end; /* the loop's bounds */
} shell;

static const shell bash = {
    "bash",
    "COMPREPLY=($(compgen -W \"%s\" -- \"$cur\"))",
    "# bash completion for engram (made by `engram completion bash`)\n"
    "_engram() {\n"
    "  local cur=${COMP_WORDS[COMP_CWORD]} cmd=\"\" w prev=\"\" i\n",
    "}\n"
    "complete -F _engram engram\n",
    "${COMP_WORDS[i]}",
    "1",
    "COMP_CWORD",
};

static const shell zsh = {
    "zsh",
    "compadd -- %s",
    "#compdef engram\n"
    "# zsh completion for engram (made by `engram completion zsh`)\n"
    "local cmd=\"\" w prev=\"\" i\n",
    "",
    "${words[i]}",
    "2",
    "CURRENT",
};

/* Writes each word of args that names a flag ("--user" of "--user U
 * [--agent A]", "-d" of "-d JSON") and is not in seen yet, adding it
 * there (" --a --b "). */
static void flags_of(FILE *out, const char *args, char *seen, size_t size) {
  for (size_t i = 0; args[i]; i++) {
    if (args[i] != '-' || (i && !strchr(" [|", args[i - 1]))) continue;
    size_t n = strspn(args + i, "-abcdefghijklmnopqrstuvwxyz0123456789");
    if (n < 2) continue;
    char word[64];
    snprintf(word, sizeof word, " %.*s ", (int)n, args + i);
    if (strstr(seen, word) || strlen(seen) + n + 2 >= size) continue;
    strcat(seen, word + 1);
    fprintf(out, "%.*s ", (int)n, args + i);
    i += n - 1;
  }
}

static void offer(FILE *out, const shell *sh, const char *label, void (*words)(FILE *, const void *),
                  const void *arg) {
  fprintf(out, "    \"%s\") ", label);
  char *buf = NULL;
  size_t len = 0;
  FILE *w = open_memstream(&buf, &len);
  words(w, arg);
  fclose(w);
  /* no trailing blank inside the quotes */
  while (len && buf[len - 1] == ' ') buf[--len] = '\0';
  fprintf(out, sh->offer, buf ? buf : "");
  fputs(" ;;\n", out);
  free(buf);
}

static void globals_words(FILE *out) {
  for (const cli_flag *f = globals; f->name; f++) fprintf(out, "%s ", f->name);
}

static void groups_words(FILE *out, const void *unused) {
  for (size_t i = 0; i < cli_ncommands; i++) {
    size_t k = 0;
    while (k < i && strcmp(cli_commands[k].group, cli_commands[i].group)) k++;
    if (k == i) fprintf(out, "%s ", cli_commands[i].group);
  }
  fputs("help ", out);
  globals_words(out);
}

static void subs_words(FILE *out, const void *group) {
  for (size_t i = 0; i < cli_ncommands; i++)
    if (!strcmp(cli_commands[i].group, group)) fprintf(out, "%s ", cli_commands[i].sub);
}

static void cmd_words(FILE *out, const void *cmd) {
  char seen[2048] = " ";
  flags_of(out, ((const cli_cmd *)cmd)->args, seen, sizeof seen);
  for (const cli_flag *f = globals; f->name; f++) flags_of(out, f->name, seen, sizeof seen);
}

static void script(FILE *out, const shell *sh) {
  fputs(sh->head, out);
  /* The global options that take a value: their value is no command word. */
  fputs("  local valued=\" ", out);
  for (const cli_flag *f = globals; f->name; f++)
    if (f->kind != FLAG_BOOL) fprintf(out, "%s ", f->name);
  fputs("\"\n  local groups=\" ", out);
  for (size_t i = 0; i < cli_ncommands; i++)
    if (cli_commands[i].sub && (i == 0 || strcmp(cli_commands[i - 1].group, cli_commands[i].group)))
      fprintf(out, "%s ", cli_commands[i].group);
  fprintf(out,
          "\"\n"
          "  for ((i = %s; i < %s; i++)); do\n"
          "    w=%s\n"
          "    if [[ $prev == --* && $valued == *\" $prev \"* ]]; then prev=\"\"; continue; fi\n"
          "    prev=$w\n"
          "    [[ $w == -* ]] && continue\n"
          "    if [[ -z $cmd ]]; then cmd=$w\n"
          "    elif [[ $cmd != *\" \"* && $groups == *\" $cmd \"* ]]; then cmd=\"$cmd $w\"\n"
          "    else break\n"
          "    fi\n"
          "  done\n"
          "  case \"$cmd\" in\n",
          sh->first, sh->end, sh->word);
  offer(out, sh, "", groups_words, NULL);
  for (size_t i = 0; i < cli_ncommands; i++) {
    const cli_cmd *c = &cli_commands[i];
    if (c->sub && (i == 0 || strcmp(cli_commands[i - 1].group, c->group)))
      offer(out, sh, c->group, subs_words, c->group);
    char label[128];
    snprintf(label, sizeof label, "%s%s%s", c->group, c->sub ? " " : "", c->sub ? c->sub : "");
    offer(out, sh, label, cmd_words, c);
  }
  fputs("  esac\n", out);
  fputs(sh->tail, out);
}

int cmd_completion(cli *g, int argc, char **argv) {
  const char *const names[] = {"SHELL", NULL};
  const char *name;
  int rc = cli_parse(g, argc, argv, cli_no_flags, names, &name);
  if (rc != CLI_OK) return rc;
  const shell *sh = !strcmp(name, "bash") ? &bash : !strcmp(name, "zsh") ? &zsh : NULL;
  if (!sh) return cli_usage_error(g, "SHELL: expected bash or zsh, got '%s'", name);
  globals = cli_global_flags(g);
  script(stdout, sh);
  return CLI_OK;
}
