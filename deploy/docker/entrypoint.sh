#!/bin/sh
# Starts engramd with the ENGRAM_* variables and the arguments it is given.
# It decides nothing about roles: flags and ENGRAM_* variables do (in
# deploy/k8s, overlays/ha has etcd elect the primary). It only turns two
# mounted secret files into what engramd reads:
#  - KEYRING_SECRET: engramd reads only a keyring no other user can read,
#    and a mounted secret may be group-readable (Kubernetes fsGroup), so it
#    is copied, owner-only, to ENGRAM_KEYRING (a memory-backed volume);
#  - REPLICA_TOKEN_FILE: the token a replica presents, into
#    ENGRAM_REPLICA_TOKEN (read at each start, so a restart picks up a
#    rotated secret).
set -eu
if [ -n "${KEYRING_SECRET:-}" ]; then
  (umask 077 && cp "$KEYRING_SECRET" "$ENGRAM_KEYRING")
fi
if [ -n "${REPLICA_TOKEN_FILE:-}" ]; then
  ENGRAM_REPLICA_TOKEN=$(cat "$REPLICA_TOKEN_FILE")
  export ENGRAM_REPLICA_TOKEN
fi
exec engramd "$@"
