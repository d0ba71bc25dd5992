/* server reflection's index over the descriptor set engramd embeds: every
 * service the method tables serve is in it, every kind of symbol finds its
 * file, a file's answer carries its imports, and a set that is garbled,
 * truncated or lacks an import or a service is refused. */
#include <CUnit/CUnit.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "server/reflection.h"
#include "server/service.h"
#include "suites.h"

static const uint8_t *set_bytes(size_t *len) {
  *len = (size_t)(eg_descriptor_set_end - eg_descriptor_set);
  return eg_descriptor_set;
}

static void test_every_served_service_is_in_the_set(void) {
  const char *names[EG_SERVICES_MAX];
  char buf[EG_SERVICES_MAX][EG_SERVICE_NAME_MAX + 1];
  size_t n = eg_served_services(buf, names), len;
  const uint8_t *set = set_bytes(&len);
  CU_ASSERT(n >= 8);
  /* Each once, and each the service of some method's path. */
  for (size_t i = 0; i < n; i++) {
    for (size_t j = 0; j < i; j++) CU_ASSERT_STRING_NOT_EQUAL(names[i], names[j]);
    int found = 0;
    for (size_t t = 0; eg_service_tables[t]; t++)
      for (const eg_method *m = eg_service_tables[t]; m->path; m++)
        found |= strncmp(m->path + 1, names[i], strlen(names[i])) == 0 &&
                 m->path[1 + strlen(names[i])] == '/';
    CU_ASSERT_TRUE(found);
  }
  /* Every method's service is listed. */
  for (size_t t = 0; eg_service_tables[t]; t++)
    for (const eg_method *m = eg_service_tables[t]; m->path; m++) {
      size_t k = 0;
      while (k < n && !(strncmp(m->path + 1, names[k], strlen(names[k])) == 0 &&
                        m->path[1 + strlen(names[k])] == '/'))
        k++;
      CU_ASSERT(k < n);
    }
  eg_reflection *r = NULL;
  char err[256] = "";
  CU_ASSERT_EQUAL_FATAL(eg_reflection_new(set, len, names, n, &r, err, sizeof err), EG_OK);
  const char *const *got;
  CU_ASSERT_EQUAL(eg_reflection_services(r, &got), n);
  CU_ASSERT(eg_reflection_symbol(r, "grpc.reflection.v1alpha.ServerReflection") >= 0);
  eg_reflection_free(r);
}

static void test_symbols_and_files(void) {
  size_t len;
  const uint8_t *set = set_bytes(&len);
  eg_reflection *r = NULL;
  char err[256] = "";
  CU_ASSERT_EQUAL_FATAL(eg_reflection_new(set, len, NULL, 0, &r, err, sizeof err), EG_OK);
  int session = eg_reflection_file(r, "engram/v1/session.proto");
  CU_ASSERT_FATAL(session >= 0);
  const char *in_session[] = {"engram.v1.SessionService", "engram.v1.SessionService.GetSession",
                              "engram.v1.Session", "engram.v1.Session.user_id",
                              "engram.v1.ListSessionsRequest.MetadataEquals",
                              "engram.v1.SessionState"};
  for (size_t i = 0; i < sizeof in_session / sizeof in_session[0]; i++)
    CU_ASSERT_EQUAL(eg_reflection_symbol(r, in_session[i]), session);
  CU_ASSERT_EQUAL(eg_reflection_symbol(r, "grpc.health.v1.HealthCheckResponse.SERVING"),
                  eg_reflection_file(r, "grpc_health/v1/health.proto"));
  CU_ASSERT_EQUAL(eg_reflection_symbol(r, "engram.v1.Nope"), -1);
  CU_ASSERT_EQUAL(eg_reflection_symbol(r, ".engram.v1.Session"), -1);
  CU_ASSERT_EQUAL(eg_reflection_symbol(r, "engram"), -1);
  /* Internal protos are not published. */
  CU_ASSERT_EQUAL(eg_reflection_file(r, "engram/storage/v1/wal.proto"), -1);
  CU_ASSERT_EQUAL(eg_reflection_file(r, "etcd/etcdserverpb/rpc.proto"), -1);
  CU_ASSERT(eg_reflection_is_message(r, "engram.v1.Session"));
  CU_ASSERT(!eg_reflection_is_message(r, "engram.v1.SessionService"));
  CU_ASSERT_EQUAL(eg_reflection_extension_numbers(r, "engram.v1.Session", NULL, 0), 0);
  CU_ASSERT_EQUAL(eg_reflection_extension(r, "engram.v1.Session", 100), -1);

  /* session.proto first, then each of its imports (transitively) once. */
  ProtobufCBinaryData *files = calloc(eg_reflection_n_files(r), sizeof *files);
  CU_ASSERT_PTR_NOT_NULL_FATAL(files);
  size_t n = eg_reflection_closure(r, session, files);
  CU_ASSERT_FATAL(n >= 2);
  Google__Protobuf__FileDescriptorProto *first =
      google__protobuf__file_descriptor_proto__unpack(NULL, files[0].len, files[0].data);
  CU_ASSERT_PTR_NOT_NULL_FATAL(first);
  CU_ASSERT_STRING_EQUAL(first->name, "engram/v1/session.proto");
  for (size_t d = 0; d < first->n_dependency; d++) {
    int found = 0;
    for (size_t i = 1; i < n; i++) {
      Google__Protobuf__FileDescriptorProto *f =
          google__protobuf__file_descriptor_proto__unpack(NULL, files[i].len, files[i].data);
      CU_ASSERT_PTR_NOT_NULL_FATAL(f);
      found += strcmp(f->name, first->dependency[d]) == 0;
      google__protobuf__file_descriptor_proto__free_unpacked(f, NULL);
    }
    CU_ASSERT_EQUAL(found, 1);
  }
  google__protobuf__file_descriptor_proto__free_unpacked(first, NULL);
  free(files);
  eg_reflection_free(r);
}

static void test_refuses_a_bad_set(void) {
  size_t len;
  const uint8_t *set = set_bytes(&len);
  eg_reflection *r = NULL;
  char err[256];
  const char *nope[] = {"engram.v1.NoSuchService"};
  CU_ASSERT_EQUAL(eg_reflection_new(set, len, nope, 1, &r, err, sizeof err), EG_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "engram.v1.NoSuchService"));
  CU_ASSERT_EQUAL(eg_reflection_new(set, len - 1, NULL, 0, &r, err, sizeof err), EG_EINVAL);
  static const uint8_t junk[] = {0xff, 0xff, 0xff};
  CU_ASSERT_EQUAL(eg_reflection_new(junk, sizeof junk, NULL, 0, &r, err, sizeof err), EG_EINVAL);
  /* A set of session.proto alone: its imports are missing. */
  eg_reflection *whole = NULL;
  CU_ASSERT_EQUAL_FATAL(eg_reflection_new(set, len, NULL, 0, &whole, err, sizeof err), EG_OK);
  ProtobufCBinaryData *files = calloc(eg_reflection_n_files(whole), sizeof *files);
  CU_ASSERT_PTR_NOT_NULL_FATAL(files);
  eg_reflection_closure(whole, eg_reflection_file(whole, "engram/v1/session.proto"), files);
  Google__Protobuf__FileDescriptorProto *f =
      google__protobuf__file_descriptor_proto__unpack(NULL, files[0].len, files[0].data);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  Google__Protobuf__FileDescriptorSet one = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_SET__INIT;
  one.n_file = 1;
  one.file = &f;
  size_t n = google__protobuf__file_descriptor_set__get_packed_size(&one);
  uint8_t *buf = malloc(n);
  CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
  google__protobuf__file_descriptor_set__pack(&one, buf);
  CU_ASSERT_EQUAL(eg_reflection_new(buf, n, NULL, 0, &r, err, sizeof err), EG_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "imports"));
  free(buf);
  google__protobuf__file_descriptor_proto__free_unpacked(f, NULL);
  free(files);
  eg_reflection_free(whole);
}

void eg_test_register_reflection(void) {
  CU_pSuite s = CU_add_suite("reflection", NULL, NULL);
  CU_add_test(s, "every served service is in the set", test_every_served_service_is_in_the_set);
  CU_add_test(s, "symbols and files", test_symbols_and_files);
  CU_add_test(s, "refuses a bad set", test_refuses_a_bad_set);
}
