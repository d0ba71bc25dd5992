#include "server/ids.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "common/clock.h"
#include "crypto/crypto.h"

static const char eg_crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static pthread_mutex_t eg_ulid_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t eg_ulid_last_ms;     /* guarded by eg_ulid_mu */
static uint8_t eg_ulid_last_rand[10]; /* guarded by eg_ulid_mu */

/* Adds one to the 80-bit big-endian number: ids made in the same
 * millisecond stay ordered. */
static void eg_ulid_increment(uint8_t r[10]) {
  for (int i = 9; i >= 0 && ++r[i] == 0; i--) {
  }
}

void eg_ulid_new(char out[EG_ULID_LEN + 1]) {
  uint8_t b[16];
  uint64_t ms = (uint64_t)(eg_now_us() / 1000);

  pthread_mutex_lock(&eg_ulid_mu);
  if (ms <= eg_ulid_last_ms) {
    ms = eg_ulid_last_ms; /* clock stood still or stepped back */
    eg_ulid_increment(eg_ulid_last_rand);
  } else {
    eg_ulid_last_ms = ms;
    eg_random_bytes(eg_ulid_last_rand, sizeof eg_ulid_last_rand);
  }
  memcpy(b + 6, eg_ulid_last_rand, 10);
  pthread_mutex_unlock(&eg_ulid_mu);

  for (int i = 0; i < 6; i++) b[i] = (uint8_t)(ms >> (40 - 8 * i));
  /* 128 bits as 26 base32 digits: the first digit carries the top 3 bits. */
  int bit = -2;
  for (int i = 0; i < EG_ULID_LEN; i++, bit += 5) {
    unsigned v = 0;
    for (int k = 0; k < 5; k++) {
      int pos = bit + k;
      v <<= 1;
      if (pos >= 0) v |= (b[pos / 8] >> (7 - pos % 8)) & 1;
    }
    out[i] = eg_crockford[v];
  }
  out[EG_ULID_LEN] = '\0';
}
