/*
 * The chunks AdminService.Backup and BackupKeys stream (one BackupChunk
 * layout, one reader in the CLI): built here for both. A key store's copy
 * has no LSN, epoch or schema version (its eg_store_file_info is zeroed:
 * those fields stay unset).
 */
#ifndef EG_SERVER_BACKUP_CHUNK_H
#define EG_SERVER_BACKUP_CHUNK_H

#include "engram/v1/admin.pb-c.h"
#include "replica/replica.h"
#include "server/data_keys.h"
#include "server/service.h"

typedef struct {
  Engram__V1__BackupChunk chunk;
  Google__Protobuf__Timestamp time;
  /* The master key ids the copy needs (as many as the key store's status
   * lists: more than a keyring's, which the data store's copy names). */
  uint32_t key_ids[EG_DATA_KEYS_MASTERS_MAX];
  size_t n_key_ids;
} eg_backup_msg;

/* Clears b and stamps it with the time now: taken before the copy starts,
 * so the copy holds every change acknowledged before it. */
void eg_backup_msg_init(eg_backup_msg *b);

/* The start both backup streams share: takes the request (of type req,
 * no fields), sets out's bounds (--call-timeout-ms a chunk,
 * --backup-max-ms the whole) and starts its clock, and stamps b
 * (eg_backup_msg_init). */
eg_err eg_backup_stream_begin(const eg_srv *srv, struct grpc_call *call,
                              struct grpc_completion_queue *cq,
                              const ProtobufCMessageDescriptor *req, eg_stream_out *out,
                              eg_backup_msg *b, char *msg, size_t msglen);

/* An eg_repl_copy_msg_fn over an eg_backup_msg (arg). */
const ProtobufCMessage *eg_backup_chunk(void *arg, const eg_repl_copy_piece *p);

#endif
