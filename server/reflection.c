/* The index behind server reflection (server/reflection.h). */
#include "server/reflection.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"

typedef struct {
  char *name; /* fully qualified, no leading dot */
  int file;
} eg_refl_symbol;

typedef struct {
  char *extendee; /* fully qualified, no leading dot */
  int32_t number;
  int file;
} eg_refl_ext;

typedef struct {
  ProtobufCBinaryData bytes; /* the FileDescriptorProto, inside the set */
  int *closure;              /* this file, then every file it imports */
  size_t n_closure;
} eg_refl_file;

struct eg_reflection {
  Google__Protobuf__FileDescriptorSet *set;
  eg_refl_file *files;
  size_t n_files;
  eg_refl_symbol *symbols; /* sorted by name */
  size_t n_symbols, cap_symbols;
  eg_refl_ext *exts;
  size_t n_exts, cap_exts;
  char **messages; /* the message types' names, sorted */
  size_t n_messages, cap_messages;
  const char *const *services;
  size_t n_services;
};

static eg_err eg_refl_fail(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return EG_EINVAL;
}

/* scope + "." + name (or name alone in the empty scope), malloc'd. */
static char *eg_refl_join(const char *scope, const char *name) {
  size_t a = strlen(scope), b = strlen(name);
  char *s = malloc(a + b + 2);
  if (!s) return NULL;
  if (a) {
    memcpy(s, scope, a);
    s[a++] = '.';
  }
  memcpy(s + a, name, b + 1);
  return s;
}

static int eg_refl_grow(void **arr, size_t *cap, size_t n, size_t size) {
  if (n < *cap) return 0;
  size_t c = *cap ? *cap * 2 : 64;
  void *p = realloc(*arr, c * size);
  if (!p) return -1;
  *arr = p;
  *cap = c;
  return 0;
}

/* Adds scope.name as a symbol of file; the name is returned (owned by the
 * index) for nested scopes, NULL when out of memory. */
static const char *eg_refl_add(eg_reflection *r, const char *scope, const char *name, int file) {
  if (eg_refl_grow((void **)&r->symbols, &r->cap_symbols, r->n_symbols, sizeof *r->symbols) != 0)
    return NULL;
  char *s = eg_refl_join(scope, name);
  if (!s) return NULL;
  r->symbols[r->n_symbols++] = (eg_refl_symbol){.name = s, .file = file};
  return s;
}

static int eg_refl_add_ext(eg_reflection *r, const Google__Protobuf__FieldDescriptorProto *f,
                           int file) {
  if (eg_refl_grow((void **)&r->exts, &r->cap_exts, r->n_exts, sizeof *r->exts) != 0) return -1;
  const char *t = f->extendee ? f->extendee : "";
  char *s = strdup(t[0] == '.' ? t + 1 : t);
  if (!s) return -1;
  r->exts[r->n_exts++] = (eg_refl_ext){.extendee = s, .number = f->number, .file = file};
  return 0;
}

/* An enum's type is in scope; its values are its siblings (protobuf's
 * scoping: values live in the scope that holds the enum). */
static int eg_refl_enum(eg_reflection *r, const char *scope,
                        const Google__Protobuf__EnumDescriptorProto *e, int file) {
  if (!eg_refl_add(r, scope, e->name, file)) return -1;
  for (size_t i = 0; i < e->n_value; i++)
    if (!eg_refl_add(r, scope, e->value[i]->name, file)) return -1;
  return 0;
}

static int eg_refl_message(eg_reflection *r, const char *scope,
                           const Google__Protobuf__DescriptorProto *m, int file) {
  const char *name = eg_refl_add(r, scope, m->name, file);
  if (!name) return -1;
  if (eg_refl_grow((void **)&r->messages, &r->cap_messages, r->n_messages, sizeof *r->messages) != 0)
    return -1;
  r->messages[r->n_messages++] = (char *)name; /* owned by the symbol */
  for (size_t i = 0; i < m->n_field; i++)
    if (!eg_refl_add(r, name, m->field[i]->name, file)) return -1;
  for (size_t i = 0; i < m->n_oneof_decl; i++)
    if (!eg_refl_add(r, name, m->oneof_decl[i]->name, file)) return -1;
  for (size_t i = 0; i < m->n_extension; i++)
    if (!eg_refl_add(r, name, m->extension[i]->name, file) ||
        eg_refl_add_ext(r, m->extension[i], file) != 0)
      return -1;
  for (size_t i = 0; i < m->n_enum_type; i++)
    if (eg_refl_enum(r, name, m->enum_type[i], file) != 0) return -1;
  for (size_t i = 0; i < m->n_nested_type; i++)
    if (eg_refl_message(r, name, m->nested_type[i], file) != 0) return -1;
  return 0;
}

static int eg_refl_file_symbols(eg_reflection *r, const Google__Protobuf__FileDescriptorProto *f,
                                int file) {
  const char *pkg = f->package ? f->package : "";
  for (size_t i = 0; i < f->n_message_type; i++)
    if (eg_refl_message(r, pkg, f->message_type[i], file) != 0) return -1;
  for (size_t i = 0; i < f->n_enum_type; i++)
    if (eg_refl_enum(r, pkg, f->enum_type[i], file) != 0) return -1;
  for (size_t i = 0; i < f->n_service; i++) {
    const char *svc = eg_refl_add(r, pkg, f->service[i]->name, file);
    if (!svc) return -1;
    for (size_t j = 0; j < f->service[i]->n_method; j++)
      if (!eg_refl_add(r, svc, f->service[i]->method[j]->name, file)) return -1;
  }
  for (size_t i = 0; i < f->n_extension; i++)
    if (!eg_refl_add(r, pkg, f->extension[i]->name, file) ||
        eg_refl_add_ext(r, f->extension[i], file) != 0)
      return -1;
  return 0;
}

static int eg_refl_symbol_cmp(const void *a, const void *b) {
  return strcmp(((const eg_refl_symbol *)a)->name, ((const eg_refl_symbol *)b)->name);
}
static int eg_refl_str_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A varint at *p (below end): 0, or -1 if it runs past end or 10 bytes. */
static int eg_refl_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  *v = 0;
  for (int shift = 0; shift < 64 && *p < end; shift += 7) {
    uint8_t b = *(*p)++;
    *v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) return 0;
  }
  return -1;
}

/* Where each FileDescriptorProto lies in the set's bytes (its field 1, in
 * the order unpacking lists them): answers send those bytes as protoc
 * wrote them. */
static eg_err eg_refl_slices(eg_reflection *r, const uint8_t *set, size_t len, char *err,
                             size_t errlen) {
  const uint8_t *p = set, *end = set + len;
  size_t i = 0;
  while (p < end) {
    uint64_t tag, n;
    if (eg_refl_varint(&p, end, &tag) != 0 || tag != ((1 << 3) | 2) ||
        eg_refl_varint(&p, end, &n) != 0 || n > (uint64_t)(end - p) || i >= r->n_files)
      return eg_refl_fail(err, errlen, "descriptor set: not a FileDescriptorSet of files only");
    r->files[i++].bytes = (ProtobufCBinaryData){.len = (size_t)n, .data = (uint8_t *)p};
    p += n;
  }
  if (i != r->n_files) return eg_refl_fail(err, errlen, "descriptor set: files missing");
  return EG_OK;
}

/* file's closure: itself, then what it imports, depth first, each once
 * (seen: one flag per file, cleared by the caller). */
static eg_err eg_refl_closure_of(eg_reflection *r, int file, unsigned char *seen, int *out,
                                 size_t *n, char *err, size_t errlen) {
  seen[file] = 1;
  out[(*n)++] = file;
  const Google__Protobuf__FileDescriptorProto *f = r->set->file[file];
  for (size_t i = 0; i < f->n_dependency; i++) {
    int d = eg_reflection_file(r, f->dependency[i]);
    if (d < 0)
      return eg_refl_fail(err, errlen, "descriptor set: %s imports %s, which it lacks", f->name,
                          f->dependency[i]);
    if (!seen[d]) {
      eg_err e = eg_refl_closure_of(r, d, seen, out, n, err, errlen);
      if (e != EG_OK) return e;
    }
  }
  return EG_OK;
}

eg_err eg_reflection_new(const uint8_t *set, size_t len, const char *const *services,
                         size_t n_services, eg_reflection **out, char *err, size_t errlen) {
  eg_reflection *r = calloc(1, sizeof *r);
  if (!r) return EG_ENOMEM;
  r->services = services;
  r->n_services = n_services;
  eg_err e = EG_ENOMEM;
  unsigned char *seen = NULL;
  r->set = google__protobuf__file_descriptor_set__unpack(NULL, len, set);
  if (!r->set) {
    e = eg_refl_fail(err, errlen, "descriptor set: does not decode");
    goto fail;
  }
  r->n_files = r->set->n_file;
  if (!(r->files = calloc(r->n_files ? r->n_files : 1, sizeof *r->files))) goto fail;
  if ((e = eg_refl_slices(r, set, len, err, errlen)) != EG_OK) goto fail;
  e = EG_ENOMEM;
  for (size_t i = 0; i < r->n_files; i++)
    if (eg_refl_file_symbols(r, r->set->file[i], (int)i) != 0) goto fail;
  qsort(r->symbols, r->n_symbols, sizeof *r->symbols, eg_refl_symbol_cmp);
  qsort(r->messages, r->n_messages, sizeof *r->messages, eg_refl_str_cmp);
  if (!(seen = malloc(r->n_files ? r->n_files : 1))) goto fail;
  for (size_t i = 0; i < r->n_files; i++) {
    eg_refl_file *f = &r->files[i];
    if (!(f->closure = malloc(r->n_files * sizeof *f->closure))) goto fail;
    memset(seen, 0, r->n_files);
    if ((e = eg_refl_closure_of(r, (int)i, seen, f->closure, &f->n_closure, err, errlen)) != EG_OK)
      goto fail;
  }
  e = EG_EINVAL;
  for (size_t i = 0; i < n_services; i++)
    if (eg_reflection_symbol(r, services[i]) < 0) {
      eg_refl_fail(err, errlen, "descriptor set: lacks the service %s", services[i]);
      goto fail;
    }
  free(seen);
  *out = r;
  return EG_OK;
fail:
  if (e == EG_ENOMEM) snprintf(err, errlen, "descriptor set: out of memory");
  free(seen);
  eg_reflection_free(r);
  return e;
}

void eg_reflection_free(eg_reflection *r) {
  if (!r) return;
  for (size_t i = 0; i < r->n_symbols; i++) free(r->symbols[i].name);
  for (size_t i = 0; i < r->n_exts; i++) free(r->exts[i].extendee);
  for (size_t i = 0; r->files && i < r->n_files; i++) free(r->files[i].closure);
  free(r->symbols);
  free(r->exts);
  free(r->messages);
  free(r->files);
  if (r->set) google__protobuf__file_descriptor_set__free_unpacked(r->set, NULL);
  free(r);
}

size_t eg_reflection_services(const eg_reflection *r, const char *const **names) {
  *names = r->services;
  return r->n_services;
}

int eg_reflection_file(const eg_reflection *r, const char *name) {
  for (size_t i = 0; i < r->n_files; i++)
    if (r->set->file[i]->name && strcmp(r->set->file[i]->name, name) == 0) return (int)i;
  return -1;
}

int eg_reflection_symbol(const eg_reflection *r, const char *symbol) {
  eg_refl_symbol key = {.name = (char *)symbol};
  const eg_refl_symbol *s = bsearch(&key, r->symbols, r->n_symbols, sizeof *r->symbols,
                                    eg_refl_symbol_cmp);
  return s ? s->file : -1;
}

int eg_reflection_extension(const eg_reflection *r, const char *type, int32_t number) {
  for (size_t i = 0; i < r->n_exts; i++)
    if (r->exts[i].number == number && strcmp(r->exts[i].extendee, type) == 0)
      return r->exts[i].file;
  return -1;
}

int eg_reflection_is_message(const eg_reflection *r, const char *type) {
  return bsearch(&type, r->messages, r->n_messages, sizeof *r->messages, eg_refl_str_cmp) != NULL;
}

size_t eg_reflection_extension_numbers(const eg_reflection *r, const char *type, int32_t *nums,
                                       size_t cap) {
  size_t n = 0;
  for (size_t i = 0; i < r->n_exts; i++)
    if (strcmp(r->exts[i].extendee, type) == 0) {
      if (n < cap) nums[n] = r->exts[i].number;
      n++;
    }
  return n;
}

size_t eg_reflection_closure(const eg_reflection *r, int file, ProtobufCBinaryData *out) {
  const eg_refl_file *f = &r->files[file];
  for (size_t i = 0; i < f->n_closure; i++) out[i] = r->files[f->closure[i]].bytes;
  return f->n_closure;
}

size_t eg_reflection_n_files(const eg_reflection *r) { return r->n_files; }
