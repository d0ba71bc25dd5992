/*
 * Request validation helpers shared by the services. Every failure writes
 * "<field path>: <problem>" into err and returns EG_EINVAL, so the client's
 * INVALID_ARGUMENT message names the field.
 */
#ifndef EG_SERVER_VALIDATE_H
#define EG_SERVER_VALIDATE_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define EG_ID_MAX 128

/* Levels of nested messages eg_validate_wire walks below the request. The
 * engram protos nest a few levels, so only a hostile or broken client gets
 * near it; it bounds the walk's recursion. */
#define EG_WIRE_DEPTH_MAX 32

/* The most fields a message eg_validate_wire walks may declare (engram's
 * have at most 17): the walk counts each repeated field's values. */
#define EG_WIRE_FIELDS_MAX 64

/* The most values of a repeated request field with no limit of its own
 * (filter types and states, update_mask paths): the wire walk refuses
 * more before anything is unpacked. */
#define EG_WIRE_REPEATED_MAX 64

/* The most unknown fields one message may carry. A newer client's fields
 * are skipped, but protobuf-c keeps each one (an allocation apiece), so a
 * request padded with thousands of them would cost the server far more
 * memory than its size. */
#define EG_WIRE_UNKNOWN_MAX 64

/* ListSessions filters: states (three exist, so more is a mistake) and
 * metadata equalities (each hashed, then checked per session examined). */
#define EG_LIST_SESSIONS_STATES_MAX 8
#define EG_LIST_SESSIONS_METADATA_MAX 16

/* SearchMessages filters (session.proto): session ids (each looked up once
 * per search) and session states (three exist). */
#define EG_SEARCH_SESSION_IDS_MAX 100
#define EG_SEARCH_STATES_MAX 8
/* MemoryService: a MemoryFilter's metadata equalities, the requests of one
 * BatchCreateMemories, the ids of one BatchDeleteMemories. */
#define EG_MEMORY_FILTER_METADATA_MAX 16
#define EG_BATCH_CREATE_MAX 100
#define EG_BATCH_DELETE_MAX 1000

/* 1 if s[0..len) is well-formed UTF-8 (no overlongs, no surrogates,
 * nothing above U+10FFFF), else 0. */
int eg_utf8_valid(const char *s, size_t len);

/* Checks the request in buf[0..len), the wire encoding of a desc message,
 * before protobuf-c unpacks it. Every string field, in nested messages,
 * repeated fields and map entries too, must be well-formed UTF-8 (protobuf-c
 * does not check) and must not contain a NUL byte: unpacking hands strings
 * over NUL-terminated, so "a\0b" would silently become "a" and be stored
 * cut short. Every repeated field holds at most its limit of values (the
 * ceilings, from config.h and storage/memories.h: messages of AppendMessages EG_APPEND_MESSAGES_MAX,
 * metadata entries EG_METADATA_ENTRIES_MAX, tags EG_MEMORY_TAGS_MAX,
 * embedding values EG_MEMORY_DIM_MAX, ListSessions states and metadata_equals
 * EG_LIST_SESSIONS_STATES_MAX and EG_LIST_SESSIONS_METADATA_MAX, SearchMessages'
 * session_ids and session_states EG_SEARCH_SESSION_IDS_MAX and
 * EG_SEARCH_STATES_MAX, PutWrites' writes
 * EG_CKPT_WRITES_MAX, MemoryFilter.metadata_equals EG_MEMORY_FILTER_METADATA_MAX,
 * BatchCreateMemories' requests EG_BATCH_CREATE_MAX, BatchDeleteMemories'
 * memory_ids EG_BATCH_DELETE_MAX, any other
 * EG_WIRE_REPEATED_MAX), so
 * a small request cannot make the server unpack, or loop over, a huge
 * count. A singular (non-repeated) message field may occur once: protobuf-c
 * would merge a second occurrence into the first, appending its repeated
 * fields past their ceiling. Unknown fields are skipped, at most
 * EG_WIRE_UNKNOWN_MAX per message. buf is only read;
 * it may be NULL when len is 0.
 *
 * Returns EG_OK, or EG_EINVAL with err set to one of:
 *   "<path>: more than <max> values", the path naming the repeated field
 *     ("memory.tags", "filter.types");
 *   "<path>: given more than once" for a singular message field sent twice
 *     ("memory", "filter");
 *   "<path>: more than <max> unknown fields" (path "request" at the top);
 *   "<path>: contains a NUL byte", "<path>: not valid UTF-8", where the path
 *     names the first bad value: "messages[2].content",
 *     "session.metadata[0].value" (the index counts the values of that field
 *     before it in the same message);
 *   "request: malformed protobuf" for bytes that are not protobuf, or a
 *     string or message field not sent length-delimited;
 *   "request: nested too deeply" past EG_WIRE_DEPTH_MAX nested messages.
 * Passing does not mean the bytes unpack: unpacking checks the rest.
 * Thread safety: any thread. */
eg_err eg_validate_wire(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
                        char *err, size_t errlen);

/* Checks an id against [A-Za-z0-9._:-]{1,128}. With required == 0 an empty
 * value is fine. field names it in the message. */
eg_err eg_validate_id(const char *field, const char *value, int required, char *err,
                      size_t errlen);

/* Formats "<field>: <message>" into err and returns EG_EINVAL, so a check
 * reads: if (bad) return eg_invalid(err, errlen, "page_size", "must not be negative"); */
eg_err eg_invalid(char *err, size_t errlen, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
