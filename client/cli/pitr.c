/* The target of a point-in-time restore (`engram backup restore
 * --to-time T`): RFC 3339 or unix seconds. */
#define _GNU_SOURCE
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

/* Reads n digits at *p into *v; 0 if they are not there. */
static int digits(const char **p, int n, int *v) {
  *v = 0;
  for (int i = 0; i < n; i++, (*p)++) {
    if (!isdigit((unsigned char)**p)) return 0;
    *v = *v * 10 + (**p - '0');
  }
  return 1;
}

/* RFC 3339: 2026-01-02T03:04:05[.frac](Z|+hh:mm|-hh:mm). */
static int parse_rfc3339(const char *s, int64_t *us) {
  struct tm tm = {0};
  int Y, M, D, h, m, sec, oh = 0, om = 0;
  int64_t frac = 0;
  const char *p = s;
  if (!digits(&p, 4, &Y) || *p++ != '-' || !digits(&p, 2, &M) || *p++ != '-' ||
      !digits(&p, 2, &D) || (*p != 'T' && *p != 't' && *p != ' ') || !*p++ ||
      !digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &m) || *p++ != ':' ||
      !digits(&p, 2, &sec))
    return -1;
  if (*p == '.') {
    int n = 0;
    for (p++; isdigit((unsigned char)*p); p++, n++)
      if (n < 6) frac = frac * 10 + (*p - '0');
    if (n == 0) return -1;
    for (; n < 6; n++) frac *= 10;
  }
  int sign = 0;
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    sign = *p++ == '-' ? -1 : 1;
    if (!digits(&p, 2, &oh) || *p++ != ':' || !digits(&p, 2, &om)) return -1;
  } else {
    return -1;
  }
  if (*p || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60 || oh > 23 || om > 59)
    return -1;
  /* timegm makes 2026-02-31 into 3 March: a date that does not come back
   * the same is not a date (a typo in a restore's target). */
  struct tm day = {.tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D}, back;
  time_t midnight = timegm(&day);
  if (!gmtime_r(&midnight, &back) || back.tm_year != Y - 1900 || back.tm_mon != M - 1 ||
      back.tm_mday != D)
    return -1;
  tm.tm_year = Y - 1900;
  tm.tm_mon = M - 1;
  tm.tm_mday = D;
  tm.tm_hour = h;
  tm.tm_min = m;
  tm.tm_sec = sec;
  int64_t t = (int64_t)timegm(&tm) - sign * (oh * 3600 + om * 60);
  *us = t * 1000000 + frac;
  return 0;
}

int cli_parse_time_us(const char *s, int64_t *us) {
  char *end;
  if (!*s) return -1;
  if (strspn(s, "0123456789.") == strlen(s)) { /* unix seconds */
    double v = strtod(s, &end);
    if (*end || v <= 0 || v > 1e11) return -1;
    *us = (int64_t)(v * 1e6 + 0.5);
    return 0;
  }
  return parse_rfc3339(s, us);
}
