/* server/arena.c: sizes that would wrap, alignment, zeroing, cleanup order,
 * protobuf-c decoding into the arena. */
#include <CUnit/CUnit.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engram/storage/v1/records.pb-c.h"
#include "server/arena.h"
#include "suites.h"

/* n elements of 8 bytes where n * 8 wraps to a small number: a multiply
 * without a check would hand out a tiny block for a huge array. */
static void test_array_overflow(void) {
  eg_arena *a = eg_arena_new();
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  size_t n = SIZE_MAX / 8 + 2; /* n * 8 wraps to 8 */
  CU_ASSERT_PTR_NULL(EG_ARENA_ARRAY(a, uint64_t, n));
  CU_ASSERT_PTR_NULL(EG_ARENA_ARRAY(a, uint64_t, SIZE_MAX));
  /* The arena is still usable, and an empty array is fine. */
  CU_ASSERT_PTR_NOT_NULL(EG_ARENA_ARRAY(a, uint64_t, 0));
  uint64_t *ok = EG_ARENA_ARRAY(a, uint64_t, 1000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ok);
  ok[999] = 7;
  eg_arena_free(a);
}

/* Sizes whose rounding up to the alignment wraps past SIZE_MAX. */
static void test_rounding_near_size_max(void) {
  eg_arena *a = eg_arena_new();
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  for (size_t d = 0; d < 64; d++) CU_ASSERT_PTR_NULL(eg_arena_alloc(a, SIZE_MAX - d));
  CU_ASSERT_PTR_NULL(eg_arena_strndup(a, "x", SIZE_MAX));
  CU_ASSERT_PTR_NULL(eg_arena_alloc(a, EG_ARENA_BLOCK_MAX + 1));
  CU_ASSERT_PTR_NULL(EG_ARENA_ARRAY(a, uint32_t, EG_ARENA_BLOCK_MAX / 4 + 1));
  eg_arena_free(a);
}

static void test_alignment_and_zeroed(void) {
  eg_arena *a = eg_arena_new();
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  /* Odd sizes, and sizes past a chunk, each aligned for any type. */
  static const size_t sizes[] = {1, 3, 7, 15, 16, 17, 33, 100, 8191, 8192, 8193, 70000, 5};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    unsigned char *p = eg_arena_alloc(a, sizes[i]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL((uintptr_t)p % _Alignof(max_align_t), 0);
    size_t nonzero = 0;
    for (size_t j = 0; j < sizes[i]; j++) nonzero += p[j] != 0;
    CU_ASSERT_EQUAL(nonzero, 0);
    memset(p, 0xAB, sizes[i]);
  }
  char *s = eg_arena_strndup(a, "hello world", 5);
  CU_ASSERT_STRING_EQUAL(s, "hello");
  eg_arena_free(a);
}

static char eg_order[8];
static size_t eg_order_n;
static void note(void *p) { eg_order[eg_order_n++] = *(char *)p; }

static void test_defer_order(void) {
  static char x = 'x', y = 'y', z = 'z';
  eg_arena *a = eg_arena_new();
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  eg_order_n = 0;
  CU_ASSERT_EQUAL(eg_arena_defer(a, note, &x), 0);
  CU_ASSERT_PTR_NOT_NULL(eg_arena_alloc(a, 20000)); /* cleanups survive a new chunk */
  CU_ASSERT_EQUAL(eg_arena_defer(a, note, &y), 0);
  CU_ASSERT_EQUAL(eg_arena_defer(a, note, &z), 0);
  CU_ASSERT_EQUAL(eg_order_n, 0);
  eg_arena_free(a);
  CU_ASSERT_EQUAL(eg_order_n, 3);
  CU_ASSERT_NSTRING_EQUAL(eg_order, "zyx", 3); /* last registered first */
  eg_arena_free(NULL);
}

/* A record decoded through eg_arena_pb_allocator is whole (every field,
 * a large one too: its own chunk) and goes with the arena: nothing is
 * freed on its own (ASan would report a leak or a double free), and a
 * record that does not decode fails cleanly, its parts left to the arena. */
static void test_pb_allocator(void) {
  static uint64_t terms[300];
  static uint8_t content[20000];
  for (size_t i = 0; i < 300; i++) terms[i] = i * 7919;
  memset(content, 'c', sizeof content);
  Engram__Storage__V1__MessageRecord rec = ENGRAM__STORAGE__V1__MESSAGE_RECORD__INIT;
  rec.seq = 42;
  rec.content_token = (ProtobufCBinaryData){sizeof content, content};
  rec.client_message_id = "cm-1";
  rec.n_index_terms = 300;
  rec.index_terms = terms;
  rec.index_user_id = "u-1";
  size_t len = engram__storage__v1__message_record__get_packed_size(&rec);
  uint8_t *buf = malloc(len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
  engram__storage__v1__message_record__pack(&rec, buf);

  eg_arena *a = eg_arena_new();
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  ProtobufCAllocator pa;
  Engram__Storage__V1__MessageRecord *got =
      engram__storage__v1__message_record__unpack(eg_arena_pb_allocator(a, &pa), len, buf);
  CU_ASSERT_PTR_NOT_NULL_FATAL(got);
  CU_ASSERT_EQUAL(got->seq, 42);
  CU_ASSERT_EQUAL(got->content_token.len, sizeof content);
  CU_ASSERT_EQUAL(memcmp(got->content_token.data, content, sizeof content), 0);
  CU_ASSERT_STRING_EQUAL(got->client_message_id, "cm-1");
  CU_ASSERT_STRING_EQUAL(got->index_user_id, "u-1");
  CU_ASSERT_EQUAL_FATAL(got->n_index_terms, 300);
  CU_ASSERT_EQUAL(got->index_terms[299], terms[299]);
  /* Cut short: protobuf-c gives up and "frees" what it built. */
  CU_ASSERT_PTR_NULL(engram__storage__v1__message_record__unpack(&pa, len - 10, buf));
  eg_arena_free(a);
  free(buf);
}

void eg_test_register_arena(void) {
  CU_pSuite s = CU_add_suite("arena", NULL, NULL);
  CU_add_test(s, "array overflow", test_array_overflow);
  CU_add_test(s, "rounding near SIZE_MAX", test_rounding_near_size_max);
  CU_add_test(s, "alignment and zeroed", test_alignment_and_zeroed);
  CU_add_test(s, "defer order", test_defer_order);
  CU_add_test(s, "protobuf-c allocator", test_pb_allocator);
}
