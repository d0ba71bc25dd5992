/*
 * A per-call bump allocator. Everything a handler builds for one response
 * (messages, strings, decrypted text) lives here and goes at once when the
 * call ends, so handlers never free piecemeal. Deferred cleanups release
 * things allocated elsewhere (unpacked records, decoded requests).
 * Thread safety: one thread at a time (the call's owner).
 */
#ifndef EG_SERVER_ARENA_H
#define EG_SERVER_ARENA_H

#include <stddef.h>

typedef struct eg_arena eg_arena;

eg_arena *eg_arena_new(void);
/* Runs the deferred cleanups (last registered first), frees everything. */
void eg_arena_free(eg_arena *a);
/* Zeroed memory, aligned for any type; NULL only when out of memory. */
void *eg_arena_alloc(eg_arena *a, size_t n);
/* A NUL-terminated copy of s[0..n). */
char *eg_arena_strndup(eg_arena *a, const char *s, size_t n);
/* Calls fn(p) when the arena is freed. Returns 0, or -1 when out of memory
 * (then fn(p) has already been called). */
int eg_arena_defer(eg_arena *a, void (*fn)(void *), void *p);

#define EG_ARENA_NEW(a, type) ((type *)eg_arena_alloc((a), sizeof(type)))
#define EG_ARENA_ARRAY(a, type, n) ((type *)eg_arena_alloc((a), sizeof(type) * (n)))

#endif
