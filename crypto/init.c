/* Process-wide setup for crypto/: libsodium and no core dumps. */
#include <sodium.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "crypto/crypto.h"

eg_err eg_crypto_init(void) {
  /* sodium_init returns 1 when already initialised: that is fine. */
  if (sodium_init() < 0) return EG_EIO;
  /* A core file would hold the keys in plain text. */
  const struct rlimit none = {0, 0};
  if (setrlimit(RLIMIT_CORE, &none) != 0) return EG_EIO;
  /* RLIMIT_CORE alone is not honoured by every piped core_pattern handler;
   * not being dumpable also stops same-user processes from ptrace-reading
   * the keys out of memory. */
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return EG_EIO;
  return EG_OK;
}
