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
exec /usr/local/bin/engramd "$@"
