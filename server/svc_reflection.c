/* grpc.reflection.v1 and v1alpha ServerReflection: which services engramd
 * serves, and the descriptors of their files, from the descriptor set
 * embedded at build (server/reflection.h), so that grpcurl, grpcui,
 * Postman and k6 call engramd without the .proto files.
 *
 * Like health, it needs no token (as gRPC's own servers expose it): the
 * descriptors are the public API, which the repository publishes anyway.
 * --reflection=false does not serve it at all (UNIMPLEMENTED).
 *
 * One bidirectional stream answers each request with one response, in
 * order. Its bounds: the whole stream ends within --call-timeout-ms
 * (DEADLINE_EXCEEDED), whether the client sends, reads or neither, and
 * sooner once it asks nothing for EG_REFLECTION_IDLE_MS; at most
 * EG_REFLECTION_STREAMS_MAX at once for callers without a valid token, at
 * most EG_REFLECTION_PEER_STREAMS of them from one address, and
 * EG_REFLECTION_TOKEN_STREAMS_MAX more for callers with one (UNAVAILABLE
 * past any); each request at
 * most EG_REFLECTION_REQUEST_BYTES (checked before it is decoded) and at
 * most EG_REFLECTION_REQUESTS of them on one stream (RESOURCE_EXHAUSTED
 * past either); a request that does not decode ends the stream
 * INVALID_ARGUMENT. A question without an answer (an unknown file or
 * symbol) is answered with an error_response, and the stream goes on. */
#include <grpc/grpc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "grpc_reflection/v1/reflection.pb-c.h"
#include "server/reflection.h"
#include "server/service.h"

/* A request names one file or symbol (protobuf names run to a few hundred
 * bytes); more is not a question reflection answers. */
#define EG_REFLECTION_REQUEST_BYTES 4096
/* grpcurl asks a few dozen questions to describe everything engramd
 * serves; a client that asks more opens another stream. */
#define EG_REFLECTION_REQUESTS 1024
/* Most extension numbers one answer lists (the set declares none; a
 * bound all the same, so an answer's size is known). */
#define EG_REFLECTION_EXTENSIONS_MAX 1024
/* gRPC's codes, for error_response (a status inside a response, not the
 * call's: the transport maps eg_err only for the latter). */
#define EG_GRPC_NOT_FOUND 5
#define EG_GRPC_UNIMPLEMENTED 12

static int eg_reflection_enabled(const eg_srv *srv) {
  return strcmp(srv->cfg->reflection, "true") == 0;
}

/* The index, built once from the embedded set with the services of the
 * method tables, whichever stream comes first. */
static pthread_once_t eg_index_once = PTHREAD_ONCE_INIT;
static eg_reflection *eg_index;
static char eg_index_err[256];
static char eg_service_names[EG_SERVICES_MAX][EG_SERVICE_NAME_MAX + 1];
static const char *eg_service_list[EG_SERVICES_MAX];

/* "/engram.v1.SessionService/GetSession" -> "engram.v1.SessionService".
 * Every method of reflection is listed, served or not: the index is built
 * once, and a server that does not serve reflection is never asked. */
size_t eg_served_services(char (*buf)[EG_SERVICE_NAME_MAX + 1], const char **names) {
  size_t n = 0;
  for (size_t t = 0; eg_service_tables[t]; t++)
    for (const eg_method *m = eg_service_tables[t]; m->path; m++) {
      const char *slash = strchr(m->path + 1, '/');
      size_t len = slash ? (size_t)(slash - m->path - 1) : 0;
      size_t i = 0;
      while (i < n && !(strlen(buf[i]) == len && memcmp(buf[i], m->path + 1, len) == 0)) i++;
      if (i < n || len == 0 || len > EG_SERVICE_NAME_MAX || n == EG_SERVICES_MAX) continue;
      memcpy(buf[n], m->path + 1, len);
      buf[n][len] = '\0';
      names[n] = buf[n];
      n++;
    }
  return n;
}

static void eg_index_build(void) {
  size_t n = eg_served_services(eg_service_names, eg_service_list);
  if (eg_reflection_new(eg_descriptor_set, (size_t)(eg_descriptor_set_end - eg_descriptor_set),
                        eg_service_list, n, &eg_index, eg_index_err, sizeof eg_index_err) != EG_OK)
    eg_index = NULL;
}

/* Fills out (an error_response) with code and message text. */
static void eg_reflection_error(Grpc__Reflection__V1__ServerReflectionResponse *out,
                                Grpc__Reflection__V1__ErrorResponse *er, int code,
                                const char *text) {
  grpc__reflection__v1__error_response__init(er);
  er->error_code = code;
  er->error_message = (char *)text;
  out->message_response_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
  out->error_response = er;
}

/* Answers one request into out; what out points to lives in the
 * answer's own storage (files: room for every file of the set). */
typedef struct {
  Grpc__Reflection__V1__ErrorResponse err;
  Grpc__Reflection__V1__FileDescriptorResponse fdr;
  Grpc__Reflection__V1__ExtensionNumberResponse ext;
  Grpc__Reflection__V1__ListServiceResponse list;
  Grpc__Reflection__V1__ServiceResponse svc[EG_SERVICES_MAX];
  Grpc__Reflection__V1__ServiceResponse *svcp[EG_SERVICES_MAX];
  int32_t nums[EG_REFLECTION_EXTENSIONS_MAX];
  char text[320];
} eg_answer;

static void eg_reflection_files(Grpc__Reflection__V1__ServerReflectionResponse *out,
                                eg_answer *a, ProtobufCBinaryData *files, int file,
                                const char *what, const char *name) {
  if (file < 0) {
    snprintf(a->text, sizeof a->text, "%s: '%.200s' is not in this server's descriptors", what,
             name);
    eg_reflection_error(out, &a->err, EG_GRPC_NOT_FOUND, a->text);
    return;
  }
  grpc__reflection__v1__file_descriptor_response__init(&a->fdr);
  a->fdr.file_descriptor_proto = files;
  a->fdr.n_file_descriptor_proto = eg_reflection_closure(eg_index, file, files);
  out->message_response_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
  out->file_descriptor_response = &a->fdr;
}

static void eg_reflection_answer(const Grpc__Reflection__V1__ServerReflectionRequest *in,
                                 Grpc__Reflection__V1__ServerReflectionResponse *out,
                                 eg_answer *a, ProtobufCBinaryData *files) {
  out->valid_host = in->host;
  out->original_request = (Grpc__Reflection__V1__ServerReflectionRequest *)in;
  switch (in->message_request_case) {
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
    eg_reflection_files(out, a, files, eg_reflection_file(eg_index, in->file_by_filename),
                        "file_by_filename", in->file_by_filename);
    return;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
    eg_reflection_files(out, a, files, eg_reflection_symbol(eg_index, in->file_containing_symbol),
                        "file_containing_symbol", in->file_containing_symbol);
    return;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION: {
    const Grpc__Reflection__V1__ExtensionRequest *x = in->file_containing_extension;
    char name[256];
    snprintf(name, sizeof name, "%.200s(%d)", x->containing_type, (int)x->extension_number);
    eg_reflection_files(out, a, files,
                        eg_reflection_extension(eg_index, x->containing_type, x->extension_number),
                        "file_containing_extension", name);
    return;
  }
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE: {
    const char *type = in->all_extension_numbers_of_type;
    if (!eg_reflection_is_message(eg_index, type)) {
      snprintf(a->text, sizeof a->text,
               "all_extension_numbers_of_type: '%.200s' is not a message type of this server's "
               "descriptors", type);
      eg_reflection_error(out, &a->err, EG_GRPC_NOT_FOUND, a->text);
      return;
    }
    grpc__reflection__v1__extension_number_response__init(&a->ext);
    a->ext.base_type_name = (char *)type;
    size_t n = eg_reflection_extension_numbers(eg_index, type, a->nums, EG_REFLECTION_EXTENSIONS_MAX);
    a->ext.n_extension_number = n < EG_REFLECTION_EXTENSIONS_MAX ? n : EG_REFLECTION_EXTENSIONS_MAX;
    a->ext.extension_number = a->nums;
    out->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
    out->all_extension_numbers_response = &a->ext;
    return;
  }
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES: {
    const char *const *names;
    size_t n = eg_reflection_services(eg_index, &names);
    grpc__reflection__v1__list_service_response__init(&a->list);
    for (size_t i = 0; i < n; i++) {
      grpc__reflection__v1__service_response__init(&a->svc[i]);
      a->svc[i].name = (char *)names[i];
      a->svcp[i] = &a->svc[i];
    }
    a->list.service = a->svcp;
    a->list.n_service = n;
    out->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
    out->list_services_response = &a->list;
    return;
  }
  default:
    /* No question, or one of a newer protocol than this server's. */
    eg_reflection_error(out, &a->err, EG_GRPC_UNIMPLEMENTED,
                        "message_request: none of the questions this server answers is set");
    return;
  }
}

/* v1 and v1alpha are one protocol under two package names: the same
 * messages, field for field, so v1's code reads and writes both. */
static eg_err eg_reflection_info(const eg_srv *srv, const char *tenant, grpc_call *call,
                                 grpc_completion_queue *cq, char *msg, size_t msglen) {
  (void)tenant;
  pthread_once(&eg_index_once, eg_index_build);
  if (!eg_index) {
    snprintf(msg, msglen, "server reflection: the embedded %s", eg_index_err);
    return EG_EIO;
  }
  int64_t ms = srv->cfg->call_timeout_ms;
  eg_stream_out o = {.call = call, .cq = cq, .send_ms = ms, .send_limit = "--call-timeout-ms",
                     .max_ms = ms, .max_limit = "--call-timeout-ms"};
  eg_stream_out_start(&o);
  eg_answer *a = malloc(sizeof *a);
  ProtobufCBinaryData *files = malloc(eg_reflection_n_files(eg_index) * sizeof *files + 1);
  eg_err e = a && files ? EG_OK : EG_ENOMEM;
  char why[160], idle_why[160];
  snprintf(why, sizeof why, "the reflection stream ran past --call-timeout-ms (%lld ms); the call is ended",
           (long long)ms);
  snprintf(idle_why, sizeof idle_why,
           "the reflection stream asked nothing for %d ms; the call is ended",
           EG_REFLECTION_IDLE_MS);
  for (int n = 0; e == EG_OK; n++) {
    ProtobufCMessage *in = NULL;
    int64_t left_ms = (o.until_us - eg_mono_us()) / 1000;
    if (left_ms <= 0) {
      snprintf(msg, msglen, "%s", why);
      e = EG_EDEADLINE;
      break;
    }
    int idle = left_ms > EG_REFLECTION_IDLE_MS;
    e = eg_stream_recv(call, cq, &grpc__reflection__v1__server_reflection_request__descriptor,
                       EG_REFLECTION_REQUEST_BYTES, idle ? EG_REFLECTION_IDLE_MS : left_ms,
                       idle ? idle_why : why, &in, msg, msglen);
    if (e != EG_OK || !in) break; /* !in: the client is done asking */
    if (n == EG_REFLECTION_REQUESTS) {
      snprintf(msg, msglen, "request: more than %d requests on one reflection stream; open another",
               EG_REFLECTION_REQUESTS);
      e = EG_ELIMIT;
    } else {
      Grpc__Reflection__V1__ServerReflectionResponse out =
          GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
      eg_reflection_answer((const void *)in, &out, a, files);
      e = eg_stream_send(&o, &out.base, msg, msglen);
    }
    protobuf_c_message_free_unpacked(in, NULL);
  }
  free(files);
  free(a);
  return e;
}

static int eg_reflection_streams_max(const eg_srv *srv) {
  (void)srv;
  return EG_REFLECTION_STREAMS_MAX;
}
static int eg_reflection_token_streams_max(const eg_srv *srv) {
  (void)srv;
  return EG_REFLECTION_TOKEN_STREAMS_MAX;
}
/* Anyone may open a reflection stream: callers with a valid token have
 * places of their own, and one address holds at most
 * EG_REFLECTION_PEER_STREAMS of the others, so neither a client nor a
 * few lock reflection out. */
static eg_stream_places eg_reflection_token_places = {
    .max = eg_reflection_token_streams_max,
    .what = "server reflection streams open for token holders"};
static eg_peer_places eg_reflection_peers[EG_REFLECTION_STREAMS_MAX];
static eg_stream_places eg_reflection_places = {.max = eg_reflection_streams_max,
                                                .what = "server reflection streams open",
                                                .tokened = &eg_reflection_token_places,
                                                .per_peer = EG_REFLECTION_PEER_STREAMS,
                                                .peers = eg_reflection_peers,
                                                .n_peers = EG_REFLECTION_STREAMS_MAX,
                                                .mu = PTHREAD_MUTEX_INITIALIZER};

const eg_method eg_reflection_methods[] = {
    {.path = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
     .in = &grpc__reflection__v1__server_reflection_request__descriptor,
     .role = EG_ROLE_NONE,
     .stream = eg_reflection_info,
     .places = &eg_reflection_places,
     .enabled = eg_reflection_enabled},
    {.path = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
     .in = &grpc__reflection__v1__server_reflection_request__descriptor,
     .role = EG_ROLE_NONE,
     .stream = eg_reflection_info,
     .places = &eg_reflection_places,
     .enabled = eg_reflection_enabled},
    {.path = NULL},
};
