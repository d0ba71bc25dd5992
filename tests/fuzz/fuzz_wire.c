/*
 * Target: the wire validator and every request decoder. Input: one byte
 * choosing the request type (fz_request_types, modulo their count), then
 * the request's bytes, handled as the transport handles a call's payload:
 * eg_validate_wire, and protobuf_c_message_unpack when that passes.
 *
 * Checked beyond "no crash, no leak": a request that passes and unpacks
 * holds only well-formed UTF-8 in every string, however deep (what the
 * validator promises the services), and packs back to bytes that unpack.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "server/validate.h"

/* Checks every string of m and of the messages below it. */
static void check_strings(const ProtobufCMessage *m) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
    const char *member = (const char *)m + f->offset;
    size_t n = 1;
    const void *const *values = (const void *const *)member;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      n = *(const size_t *)((const char *)m + f->quantifier_offset);
      values = *(const void *const *const *)member;
    } else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
      /* Only the member the case names is set; the others share its bytes. */
      if (*(const uint32_t *)((const char *)m + f->quantifier_offset) != f->id) continue;
    }
    for (size_t k = 0; k < n; k++) {
      if (!values[k]) continue;
      if (f->type == PROTOBUF_C_TYPE_STRING) {
        const char *s = values[k];
        FZ_CHECK(eg_utf8_valid(s, strlen(s)), "validated request unpacked to bad UTF-8");
      } else {
        check_strings(values[k]);
      }
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t n_types;
  const ProtobufCMessageDescriptor *const *types = fz_request_types(&n_types);
  if (size < 1) return 0;
  const ProtobufCMessageDescriptor *desc = types[data[0] % n_types];
  const uint8_t *buf = size > 1 ? data + 1 : NULL;
  size_t len = size - 1;
  char err[256] = "";
  eg_err e = eg_validate_wire(desc, buf, len, err, sizeof err);
  FZ_CHECK(e == EG_OK || e == EG_EINVAL, "validator returned neither OK nor EINVAL");
  FZ_CHECK(e == EG_OK || (err[0] && memchr(err, '\0', sizeof err)), "refusal without a message");
  if (e != EG_OK) return 0;
  ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, buf);
  if (!m) return 0;
  check_strings(m);
  size_t packed_len = protobuf_c_message_get_packed_size(m);
  uint8_t *packed = malloc(packed_len ? packed_len : 1);
  FZ_CHECK(packed != NULL, "out of memory");
  FZ_CHECK(protobuf_c_message_pack(m, packed) == packed_len, "packed size differs");
  ProtobufCMessage *again = protobuf_c_message_unpack(desc, NULL, packed_len, packed);
  FZ_CHECK(again != NULL, "a decoded request packs to bytes that do not decode");
  protobuf_c_message_free_unpacked(again, NULL);
  free(packed);
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}
