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

static int eg_url_host_char(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '.' || ch == '-' || ch == '_';
}

static int eg_url_v6_char(char ch) {
  return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F') ||
         ch == ':' || ch == '.';
}

/* One endpoint, the n bytes at s: HOST:PORT or [V6]:PORT, port 1..65535. */
static eg_err eg_url_endpoint(const char *s, size_t n, char out[256], char *err, size_t errlen) {
  size_t host_end, i = 0;
  if (n == 0) return eg_url_bad(err, errlen, "--coordinator: an empty endpoint%s", "", 0);
  if (n >= 256)
    return eg_url_bad(err, errlen, "--coordinator: endpoint %s... is longer than 255 bytes", s, 40);
  if (s[0] == '[') {
    for (i = 1; i < n && s[i] != ']'; i++)
      if (!eg_url_v6_char(s[i]))
        return eg_url_bad(err, errlen, "--coordinator: endpoint %s: bad IPv6 address", s, n);
    if (i >= n || i == 1)
      return eg_url_bad(err, errlen, "--coordinator: endpoint %s: bad IPv6 address", s, n);
    host_end = i + 1;
  } else {
    for (i = 0; i < n && s[i] != ':'; i++)
      if (!eg_url_host_char(s[i]))
        return eg_url_bad(err, errlen,
                          "--coordinator: endpoint %s: bad host (letters, digits, '.', '-', '_' "
                          "or [IPv6])", s, n);
    if (i == 0) return eg_url_bad(err, errlen, "--coordinator: endpoint %s: no host", s, n);
    host_end = i;
  }
  if (host_end >= n || s[host_end] != ':')
    return eg_url_bad(err, errlen, "--coordinator: endpoint %s: no :PORT", s, n);
  long port = 0;
  size_t digits = 0;
  for (i = host_end + 1; i < n; i++, digits++) {
    if (s[i] < '0' || s[i] > '9' || digits >= 5)
      return eg_url_bad(err, errlen, "--coordinator: endpoint %s: the port must be 1..65535", s, n);
    port = port * 10 + (s[i] - '0');
  }
  if (digits == 0 || port < 1 || port > 65535)
    return eg_url_bad(err, errlen, "--coordinator: endpoint %s: the port must be 1..65535", s, n);
  memcpy(out, s, n);
  out[n] = '\0';
  return EG_OK;
}

static int eg_url_prefix_char(char ch) {
  return eg_url_host_char(ch) || ch == '/';
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
  }
  u.prefix[0] = '/';
  memcpy(u.prefix + 1, prefix, plen);
  u.prefix[plen + 1] = '\0';
  *out = u;
  return EG_OK;
}
