/* Server-generated ids: ULIDs (48-bit millisecond time + 80 random bits,
 * Crockford base32, 26 chars). Monotonic within the process: an id made
 * later sorts after every id made earlier, even within one millisecond. */
#ifndef EG_SERVER_IDS_H
#define EG_SERVER_IDS_H

#define EG_ULID_LEN 26

/* Writes a new ULID and a NUL into out. Thread safety: any thread. */
void eg_ulid_new(char out[EG_ULID_LEN + 1]);

#endif
