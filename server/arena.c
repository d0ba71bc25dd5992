#include "server/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define EG_ARENA_CHUNK 8192
#define EG_ARENA_ALIGN 16

struct eg_chunk {
  struct eg_chunk *next;
  size_t used, cap;
  _Alignas(EG_ARENA_ALIGN) unsigned char data[];
};

struct eg_cleanup {
  struct eg_cleanup *next;
  void (*fn)(void *);
  void *p;
};

struct eg_arena {
  struct eg_chunk *chunks;
  struct eg_cleanup *cleanups;
};

eg_arena *eg_arena_new(void) { return calloc(1, sizeof(eg_arena)); }

void eg_arena_free(eg_arena *a) {
  if (!a) return;
  for (struct eg_cleanup *c = a->cleanups; c;) {
    struct eg_cleanup *next = c->next;
    c->fn(c->p);
    c = next;
  }
  for (struct eg_chunk *c = a->chunks; c;) {
    struct eg_chunk *next = c->next;
    sodium_memzero(c->data, c->used); /* only used bytes were ever written */
    free(c);
    c = next;
  }
  free(a);
}

void *eg_arena_alloc(eg_arena *a, size_t n) {
  /* No call needs a block this large, and refusing it keeps rounding up
   * and the chunk header on top far from wrapping to a small size that
   * would then be handed out as n bytes. */
  if (n > EG_ARENA_BLOCK_MAX) return NULL;
  size_t need = (n + EG_ARENA_ALIGN - 1) & ~(size_t)(EG_ARENA_ALIGN - 1);
  struct eg_chunk *c = a->chunks;
  if (!c || c->cap - c->used < need) {
    size_t cap = need > EG_ARENA_CHUNK ? need : EG_ARENA_CHUNK;
    c = malloc(sizeof *c + cap);
    if (!c) return NULL;
    c->used = 0;
    c->cap = cap;
    c->next = a->chunks;
    a->chunks = c;
  }
  void *p = c->data + c->used;
  c->used += need;
  memset(p, 0, n);
  return p;
}

void *eg_arena_array(eg_arena *a, size_t size, size_t n) {
  if (size && n > SIZE_MAX / size) return NULL;
  return eg_arena_alloc(a, size * n);
}

int eg_arena_grow(eg_arena *a, void **arr, size_t *cap, size_t need, size_t size) {
  if (need <= *cap) return 0;
  size_t cap2 = *cap ? *cap : 64;
  while (cap2 < need) cap2 *= 2;
  void *p = eg_arena_array(a, size, cap2);
  if (!p) return -1;
  if (*cap) memcpy(p, *arr, *cap * size);
  *arr = p;
  *cap = cap2;
  return 0;
}

char *eg_arena_strndup(eg_arena *a, const char *s, size_t n) {
  if (n == SIZE_MAX) return NULL; /* no room for the NUL */
  char *d = eg_arena_alloc(a, n + 1);
  if (d) memcpy(d, s, n);
  return d;
}

int eg_arena_defer(eg_arena *a, void (*fn)(void *), void *p) {
  /* Cleanup nodes live in the arena's own chunks, which outlive them. */
  struct eg_cleanup *c = eg_arena_alloc(a, sizeof *c);
  if (!c) {
    fn(p);
    return -1;
  }
  c->fn = fn;
  c->p = p;
  c->next = a->cleanups;
  a->cleanups = c;
  return 0;
}

static void *eg_arena_pb_alloc(void *a, size_t n) { return eg_arena_alloc(a, n); }

/* The arena frees it all at once. */
static void eg_arena_pb_free(void *a, void *p) {
  (void)a;
  (void)p;
}

ProtobufCAllocator *eg_arena_pb_allocator(eg_arena *a, ProtobufCAllocator *pa) {
  *pa = (ProtobufCAllocator){.alloc = eg_arena_pb_alloc, .free = eg_arena_pb_free,
                             .allocator_data = a};
  return pa;
}
