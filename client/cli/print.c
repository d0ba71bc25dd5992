/*
 * Readable output, driven by descriptors like json.c: one "field: value"
 * line per field (empty strings and unset messages left out), map entries
 * as "field.key: value", enums by short lowercase name. Messages print as
 * "#seq role: content", sessions and replicas (admin status) as one line
 * each.
 */
#include <inttypes.h>
#include <string.h>

#include "cli.h"

static void message_line(FILE *out, const Engram__V1__Message *m) {
  char role[32];
  pb_enum_short(&engram__v1__role__descriptor, m->role, role, sizeof role);
  fprintf(out, "#%" PRId64 " %s: %s\n", m->seq, role, m->content);
}

static void session_line(FILE *out, const Engram__V1__Session *s) {
  char state[32];
  pb_enum_short(&engram__v1__session_state__descriptor, s->state, state, sizeof state);
  fprintf(out, "%s %s user=%s agent=%s messages=%" PRId64 "\n", s->session_id, state, s->user_id,
          s->agent_id, s->message_count);
}

/* "replica: ID connected|disconnected applied_lsn=N lag_records=N last_ack=TIME" */
static void replica_line(FILE *out, const Engram__V1__ReplicaStatus *r) {
  char ack[48] = "-";
  if (r->last_ack_time) pb_timestamp_text(r->last_ack_time, ack);
  fprintf(out, "replica: %s %s applied_lsn=%" PRIu64 " lag_records=%" PRIu64 " last_ack=%s\n",
          r->replica_id, r->connected ? "connected" : "disconnected", r->applied_lsn,
          r->lag_records, ack);
}

/* A value that fits on a line: string, bytes, enum, number, bool, time. */
static void print_value(FILE *out, const ProtobufCFieldDescriptor *f, const void *v) {
  char buf[64];
  switch (f->type) {
  case PROTOBUF_C_TYPE_STRING:
    fputs(*(const char *const *)v, out);
    return;
  case PROTOBUF_C_TYPE_BYTES:
    fprintf(out, "<%zu bytes>", ((const ProtobufCBinaryData *)v)->len);
    return;
  case PROTOBUF_C_TYPE_ENUM:
    pb_enum_short(f->descriptor, *(const int *)v, buf, sizeof buf);
    break;
  case PROTOBUF_C_TYPE_MESSAGE: /* a Timestamp: others never reach here */
    pb_timestamp_text(*(const Google__Protobuf__Timestamp *const *)v, buf);
    break;
  default:
    pb_scalar_text(f, v, buf, sizeof buf);
    break;
  }
  fputs(buf, out);
}

static void print_fields(FILE *out, const ProtobufCMessage *m, const char *prefix);

/* A message value: a line of its own for messages and sessions, else its
 * fields under label. */
static void print_sub(FILE *out, const char *label, const ProtobufCMessage *sub) {
  if (sub->descriptor == &engram__v1__message__descriptor) {
    message_line(out, (const Engram__V1__Message *)sub);
  } else if (sub->descriptor == &engram__v1__session__descriptor) {
    session_line(out, (const Engram__V1__Session *)sub);
  } else if (sub->descriptor == &engram__v1__replica_status__descriptor) {
    replica_line(out, (const Engram__V1__ReplicaStatus *)sub);
  } else {
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%.250s.", label);
    print_fields(out, sub, prefix);
  }
}

static void print_map(FILE *out, const char *label, const ProtobufCMessage *m,
                      const ProtobufCFieldDescriptor *f) {
  const ProtobufCMessageDescriptor *d = f->descriptor;
  for (size_t i = 0, n = pb_count(m, f); i < n; i++) {
    const ProtobufCMessage *e = *(const ProtobufCMessage *const *)pb_value(m, f, i);
    fprintf(out, "%s.", label);
    print_value(out, &d->fields[0], pb_value(e, &d->fields[0], 0));
    fputs(": ", out);
    print_value(out, &d->fields[1], pb_value(e, &d->fields[1], 0));
    fputc('\n', out);
  }
}

static int is_empty_string(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  return f->type == PROTOBUF_C_TYPE_STRING && f->label != PROTOBUF_C_LABEL_REPEATED &&
         !**(const char *const *)pb_value(m, f, 0);
}

static void print_field(FILE *out, const char *label, const ProtobufCMessage *m,
                        const ProtobufCFieldDescriptor *f) {
  size_t n = pb_count(m, f);
  if (n == 0 || is_empty_string(m, f)) return;
  if (pb_is_map(f)) {
    print_map(out, label, m, f);
  } else if (f->type == PROTOBUF_C_TYPE_MESSAGE && !pb_is_timestamp(f)) {
    for (size_t i = 0; i < n; i++)
      print_sub(out, label, *(const ProtobufCMessage *const *)pb_value(m, f, i));
  } else {
    fprintf(out, "%s: ", label);
    for (size_t i = 0; i < n; i++) {
      if (i) fputs(", ", out);
      print_value(out, f, pb_value(m, f, i));
    }
    fputc('\n', out);
  }
}

static void print_fields(FILE *out, const ProtobufCMessage *m, const char *prefix) {
  for (unsigned k = 0; k < m->descriptor->n_fields; k++) {
    const ProtobufCFieldDescriptor *f = &m->descriptor->fields[k];
    char label[256];
    snprintf(label, sizeof label, "%s%s", prefix, f->name);
    print_field(out, label, m, f);
  }
}

void cli_print_readable(FILE *out, const ProtobufCMessage *m) {
  print_fields(out, m, "");
}
