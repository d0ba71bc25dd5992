/*
 * Server reflection's index of a descriptor set: which file has which name,
 * declares which symbol or extension, and imports which files. Built once
 * from the set engramd embeds (eg_descriptor_set), then only read, by any
 * number of threads. The service itself is server/svc_reflection.c.
 */
#ifndef EG_SERVER_REFLECTION_H
#define EG_SERVER_REFLECTION_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* The serialized google.protobuf.FileDescriptorSet of every public proto
 * and its imports (server/descriptor_set.c), eg_descriptor_set_end -
 * eg_descriptor_set bytes. */
extern const uint8_t eg_descriptor_set[];
extern const uint8_t eg_descriptor_set_end[];

typedef struct eg_reflection eg_reflection;

/* Indexes the serialized FileDescriptorSet set (len bytes, which must
 * outlive *out: answers point into it) and checks that it is whole: every
 * import is in it, and so is each of the n services (fully qualified
 * names), which list_services then answers in that order. EG_EINVAL with
 * err saying what is wrong, or EG_ENOMEM. */
eg_err eg_reflection_new(const uint8_t *set, size_t len, const char *const *services,
                         size_t n_services, eg_reflection **out, char *err, size_t errlen);
void eg_reflection_free(eg_reflection *r);

/* The services given to eg_reflection_new. */
size_t eg_reflection_services(const eg_reflection *r, const char *const **names);

/* The file named name ("engram/v1/session.proto"), the file declaring the
 * fully qualified symbol (a package-qualified service, method, message at
 * any depth, field, oneof, enum, enum value or extension, without a
 * leading dot), or the file declaring extension number of the fully
 * qualified message type: its index, or -1 when the set has none. */
int eg_reflection_file(const eg_reflection *r, const char *name);
int eg_reflection_symbol(const eg_reflection *r, const char *symbol);
int eg_reflection_extension(const eg_reflection *r, const char *type, int32_t number);

/* Whether the set declares the fully qualified message type; its
 * extensions' numbers into nums (at most cap), their count returned (more
 * than cap: call again with more room). */
int eg_reflection_is_message(const eg_reflection *r, const char *type);
size_t eg_reflection_extension_numbers(const eg_reflection *r, const char *type, int32_t *nums,
                                       size_t cap);

/* The serialized FileDescriptorProto of file and of every file it imports,
 * directly or not, each once, file first, into out (room for
 * eg_reflection_n_files entries, pointing into the set); their count. */
size_t eg_reflection_closure(const eg_reflection *r, int file, ProtobufCBinaryData *out);
size_t eg_reflection_n_files(const eg_reflection *r);

#endif
