/*
 * The typed calls of engram.h, one per row of EG_CLIENT_METHODS: each is
 * eg_client_call() with its method's path and response type.
 */
#include <assert.h>

#include "engram.h"

#define EG_CLIENT_DEFINE(name, path_, Req, req_desc, Resp, resp_desc)                      \
  const eg_client_method eg_client_method_##name = {                                      \
      .path = path_, .request = &req_desc, .response = &resp_desc};                       \
  int eg_client_##name(eg_client *c, const Req *req, const eg_client_opts *opts,          \
                       eg_client_status *st, Resp **resp) {                               \
    assert(req && req->base.descriptor == &req_desc);                                     \
    return eg_client_call(c, path_, &req->base, &resp_desc, opts, st,                     \
                          (ProtobufCMessage **)resp);                                     \
  }
EG_CLIENT_METHODS(EG_CLIENT_DEFINE)
