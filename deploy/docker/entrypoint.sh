#!/bin/sh
# Pod 0 of the StatefulSet is the primary; every other pod follows it.
# ENGRAM_* variables (from the manifest) configure the rest.
set -eu
ordinal="${HOSTNAME##*-}"
if [ "${ENGRAM_ROLE:-auto}" = "auto" ]; then
  if [ "$ordinal" = "0" ]; then
    export ENGRAM_ROLE=primary
  else
    export ENGRAM_ROLE=replica
    export ENGRAM_PRIMARY="${ENGRAM_PRIMARY:-${HOSTNAME%-*}-0.${ENGRAM_HEADLESS_SERVICE:-engram-headless}:50051}"
  fi
fi
export ENGRAM_REPLICA_ID="${ENGRAM_REPLICA_ID:-$HOSTNAME}"
# engramd reads only a keyring no other user can read; a mounted secret may
# be group-readable (Kubernetes fsGroup), so copy it, owner-only, to
# ENGRAM_KEYRING (a memory-backed volume in the manifest).
if [ -n "${KEYRING_SECRET:-}" ]; then
  (umask 077 && cp "$KEYRING_SECRET" "$ENGRAM_KEYRING")
fi
exec /usr/local/bin/engramd "$@"
