/*
 * A per-call bump allocator. Everything a handler builds for one response
 * (messages, strings, decrypted text) lives here and goes at once when the
 * call ends, so handlers never free piecemeal. Deferred cleanups release
 * things allocated elsewhere (unpacked records, decoded requests).
 * Every block is wiped (sodium_memzero) before it is freed: arena memory
 * holds decrypted fields, and freed heap memory would otherwise keep them.
 * Thread safety: one thread at a time (the call's owner).
 */
#ifndef EG_SERVER_ARENA_H
#define EG_SERVER_ARENA_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

typedef struct eg_arena eg_arena;

/* The largest block one allocation may ask for (4 GiB): far above what a
 * call needs (requests and replies are a few MiB), far below SIZE_MAX. */
#define EG_ARENA_BLOCK_MAX ((size_t)1 << 32)

eg_arena *eg_arena_new(void);
/* Runs the deferred cleanups (last registered first), wipes and frees
 * everything. a may be NULL. */
void eg_arena_free(eg_arena *a);
/* Zeroed memory, aligned for any type; NULL when out of memory or when n
 * is above EG_ARENA_BLOCK_MAX. */
void *eg_arena_alloc(eg_arena *a, size_t n);
/* Zeroed memory for n elements of size bytes each; NULL when out of memory
 * or when n * size does not fit in a size_t. Use EG_ARENA_ARRAY. */
void *eg_arena_array(eg_arena *a, size_t size, size_t n);
/* Grows the arena array *arr (*cap elements of size bytes, the first
 * *cap kept) to hold at least need, doubling from 64: a new array, the old
 * one left to the arena. Returns 0, or -1 when out of memory (*arr and
 * *cap unchanged). */
int eg_arena_grow(eg_arena *a, void **arr, size_t *cap, size_t need, size_t size);
/* A NUL-terminated copy of s[0..n); NULL when out of memory. */
char *eg_arena_strndup(eg_arena *a, const char *s, size_t n);
/* Calls fn(p) when the arena is freed. Returns 0, or -1 when out of memory
 * (then fn(p) has already been called). */
int eg_arena_defer(eg_arena *a, void (*fn)(void *), void *p);

/* protobuf-c's allocator over a (filled into *pa, which must live as long
 * as it is used): what protobuf_c_message_unpack decodes through it lives
 * and goes with the arena, so it is never freed on its own (its free does
 * nothing; do not call __free_unpacked on it). */
ProtobufCAllocator *eg_arena_pb_allocator(eg_arena *a, ProtobufCAllocator *pa);

#define EG_ARENA_NEW(a, type) ((type *)eg_arena_alloc((a), sizeof(type)))
#define EG_ARENA_ARRAY(a, type, n) ((type *)eg_arena_array((a), sizeof(type), (n)))

#endif
