/* Removing a backup's temp data when a signal ends the process. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "backup/backup.h"

/* What the handler removes; read only while armed, written only while not. */
static char scrub_file[4200], scrub_dir[4200];
static volatile sig_atomic_t scrub_armed;

/* The data goes (every tenant's sealed records), then the signal's default
 * action ends the process, so its caller sees it died of the signal.
 * Async-signal-safe calls only. */
static void scrub_on_signal(int sig) {
  if (scrub_armed) {
    if (scrub_file[0]) unlink(scrub_file);
    if (scrub_dir[0]) rmdir(scrub_dir);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

void eg_backup_scrub_signals(void) {
  static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
  struct sigaction sa = {.sa_handler = scrub_on_signal}, old;
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) sigaddset(&sa.sa_mask, sigs[i]);
  for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
    if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler != SIG_IGN)
      sigaction(sigs[i], &sa, NULL);
  signal(SIGXFSZ, SIG_IGN);
}

void eg_backup_scrub_set(const char *file, const char *dir) {
  scrub_armed = 0;
  snprintf(scrub_file, sizeof scrub_file, "%s", file ? file : "");
  snprintf(scrub_dir, sizeof scrub_dir, "%s", dir ? dir : "");
  scrub_armed = file || dir;
}
