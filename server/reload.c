#include "server/reload.h"

#include <stddef.h>

static struct {
  eg_reload_fn fn;
  void *arg;
} eg_hooks[EG_RELOAD_HOOKS_MAX];
static size_t eg_n_hooks;

int eg_reload_register(eg_reload_fn fn, void *arg) {
  if (eg_n_hooks == EG_RELOAD_HOOKS_MAX) return -1;
  eg_hooks[eg_n_hooks].fn = fn;
  eg_hooks[eg_n_hooks].arg = arg;
  eg_n_hooks++;
  return 0;
}

void eg_reload_run(void) {
  for (size_t i = 0; i < eg_n_hooks; i++) eg_hooks[i].fn(eg_hooks[i].arg);
}
