/* Which backups a grandfather-father-son policy keeps. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <time.h>

#include "backup/backup.h"

#define EG_US_PER_DAY 86400000000LL

/* The day (UTC, days since the epoch) of a time. */
static int64_t day_of(int64_t us) {
  return us >= 0 ? us / EG_US_PER_DAY : -((-us + EG_US_PER_DAY - 1) / EG_US_PER_DAY);
}

/* The period a time falls in, as a number equal for equal periods. */
static int64_t period_of(int64_t us, int kind) {
  int64_t d = day_of(us);
  if (kind == 0) return d;
  if (kind == 1) {
    /* ISO weeks start on Monday; 1970-01-01 was a Thursday (weekday 3
     * counting Monday as 0): a week is named by its Monday. */
    int64_t wd = ((d + 3) % 7 + 7) % 7;
    return d - wd;
  }
  time_t t = (time_t)(d * 86400);
  struct tm tm;
  gmtime_r(&t, &tm);
  return (int64_t)tm.tm_year * 12 + tm.tm_mon;
}

/* Sort key (times in arg): newest first, then by index (ties stay in input
 * order). */
static int newest_first(const void *a, const void *b, void *arg) {
  const int64_t *t = arg;
  size_t i = *(const size_t *)a, j = *(const size_t *)b;
  if (t[i] != t[j]) return t[i] > t[j] ? -1 : 1;
  return i < j ? -1 : i > j;
}

int eg_backup_time_suspect(int64_t time_us, int64_t now_us, int64_t skew_us) {
  /* (unsigned: the difference of two int64 cannot overflow there) */
  return time_us <= 0 ||
         (time_us > now_us && (uint64_t)time_us - (uint64_t)now_us > (uint64_t)skew_us);
}

eg_err eg_backup_retain(const int64_t *time_us, size_t n, const int keep_n[3], int64_t now_us,
                        int64_t skew_us, eg_retain *keep) {
  size_t *order = malloc((n ? n : 1) * sizeof *order), m = 0;
  if (!order) return EG_ENOMEM;
  /* Only believable times count: a suspect one would be "the newest" for
   * good, or take the slot of a real backup. */
  for (size_t i = 0; i < n; i++) {
    keep[i] = eg_backup_time_suspect(time_us[i], now_us, skew_us) ? EG_RETAIN_SUSPECT
                                                                  : EG_RETAIN_DELETE;
    if (keep[i] == EG_RETAIN_DELETE) order[m++] = i;
  }
  qsort_r(order, m, sizeof *order, newest_first, (void *)time_us);
  if (m) keep[order[0]] = EG_RETAIN_KEEP; /* never the newest */
  for (int kind = 0; kind < 3; kind++) {
    int64_t last = 0;
    int seen = 0;
    /* Newest first: the first backup of each period is its newest. */
    for (size_t i = 0; i < m && seen < keep_n[kind]; i++) {
      int64_t p = period_of(time_us[order[i]], kind);
      if (seen && p == last) continue;
      keep[order[i]] = EG_RETAIN_KEEP;
      last = p;
      seen++;
    }
  }
  free(order);
  return EG_OK;
}
