/* coord: parsing --coordinator etcd://HOST:PORT[,HOST:PORT...]/PREFIX. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord/coord.h"

static eg_err eg_url_bad(char *err, size_t errlen, const char *fmt, const char *part, size_t n) {
  char what[300];
  snprintf(what, sizeof what, "%.*s", (int)(n < 256 ? n : 256), part);
  snprintf(err, errlen, fmt, what);
  return EG_EINVAL;
}

/* One endpoint, the n bytes at s (eg_etcd_endpoint_check). */
static eg_err eg_url_endpoint(const char *s, size_t n, char out[256], char *err, size_t errlen) {
  if (n == 0) return eg_url_bad(err, errlen, "--coordinator: an empty endpoint%s", "", 0);
  if (n >= 256)
    return eg_url_bad(err, errlen, "--coordinator: endpoint %s... is longer than 255 bytes", s, 40);
  const char *why = eg_etcd_endpoint_check(s, n);
  if (why) {
    snprintf(err, errlen, "--coordinator: endpoint %.*s: %s", (int)n, s, why);
    return EG_EINVAL;
  }
  memcpy(out, s, n);
  out[n] = '\0';
  return EG_OK;
}

/* Letters, digits, '.', '-', '_' and '/'. */
static int eg_url_prefix_char(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '.' || ch == '-' || ch == '_' || ch == '/';
}

eg_err eg_coord_url_parse(const char *url, eg_coord_url *out, char *err, size_t errlen) {
  static const char scheme[] = "etcd://";
  eg_coord_url u;
  memset(&u, 0, sizeof u);
  if (strncmp(url, scheme, sizeof scheme - 1) != 0)
    return eg_url_bad(err, errlen, "--coordinator: %s: must start with etcd://", url, strlen(url));
  const char *hosts = url + sizeof scheme - 1;
  const char *slash = strchr(hosts, '/');
  if (!slash)
    return eg_url_bad(err, errlen, "--coordinator: %s: no /PREFIX after the endpoints", url,
                      strlen(url));
  for (const char *p = hosts; p <= slash;) {
    const char *end = memchr(p, ',', (size_t)(slash - p));
    if (!end) end = slash;
    if (u.n_endpoints == EG_ETCD_MAX_ENDPOINTS) {
      snprintf(err, errlen, "--coordinator: more than %d endpoints", EG_ETCD_MAX_ENDPOINTS);
      return EG_EINVAL;
    }
    eg_err e = eg_url_endpoint(p, (size_t)(end - p), u.endpoints[u.n_endpoints], err, errlen);
    if (e) return e;
    u.n_endpoints++;
    p = end + 1;
  }
  /* Trailing slashes go: keys are PREFIX + "/leader", never "PREFIX//...". */
  const char *prefix = slash + 1;
  size_t plen = strlen(prefix);
  while (plen > 0 && prefix[plen - 1] == '/') plen--;
  if (plen == 0)
    return eg_url_bad(err, errlen, "--coordinator: %s: the PREFIX is empty", url, strlen(url));
  if (plen + 1 >= sizeof u.prefix)
    return eg_url_bad(err, errlen, "--coordinator: PREFIX %s... is longer than 254 bytes", prefix,
                      40);
  for (size_t i = 0; i < plen; i++) {
    if (!eg_url_prefix_char(prefix[i]))
      return eg_url_bad(err, errlen,
                        "--coordinator: PREFIX %s: only letters, digits, '.', '_', '-' and '/'",
                        prefix, plen);
    if (prefix[i] == '/' && (i == 0 || prefix[i - 1] == '/'))
      return eg_url_bad(err, errlen, "--coordinator: PREFIX %s: an empty path segment", prefix,
                        plen);
    /* "." and ".." read as paths to operators (etcdctl get --prefix):
     * "a/../b" is not "b" to etcd. */
    size_t seg = i == 0 || prefix[i - 1] == '/' ? strcspn(prefix + i, "/") : 0;
    if (seg > plen - i) seg = plen - i;
    if ((seg == 1 && prefix[i] == '.') || (seg == 2 && prefix[i] == '.' && prefix[i + 1] == '.'))
      return eg_url_bad(err, errlen, "--coordinator: PREFIX %s: a '.' or '..' path segment",
                        prefix, plen);
  }
  u.prefix[0] = '/';
  memcpy(u.prefix + 1, prefix, plen);
  u.prefix[plen + 1] = '\0';
  *out = u;
  return EG_OK;
}
