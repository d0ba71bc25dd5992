/*
 * What the libFuzzer targets in tests/fuzz share: a scratch directory that
 * lives as long as the process, files written into it, the request types
 * the server decodes, and a check that aborts (so libFuzzer saves the input)
 * when a property the code promises does not hold.
 * Thread safety: the targets are single-threaded; so is all of this.
 */
#ifndef EG_FUZZ_H
#define EG_FUZZ_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

/* A fresh directory under $TMPDIR (or /tmp), made on the first call and
 * removed with its files when the process exits. Aborts if it cannot be
 * made. */
const char *fz_dir(void);

/* Writes d[0..n) to fz_dir()/name with mode 0600 (the keyring loader
 * refuses looser modes), replacing what was there. Returns the path, a
 * static buffer valid until the next call. Aborts on an I/O error. */
const char *fz_write_file(const char *name, const uint8_t *d, size_t n);

/* Every request message the server decodes from a client: the input
 * descriptor of each method of the service tables, then the requests the
 * replication streams read. *n gets the count. */
const ProtobufCMessageDescriptor *const *fz_request_types(size_t *n);

/* Aborts with "fuzz: <what>" on stderr unless ok. */
#define FZ_CHECK(ok, what) fz_check((ok) != 0, __FILE__, __LINE__, (what))
void fz_check(int ok, const char *file, int line, const char *what);

#endif
