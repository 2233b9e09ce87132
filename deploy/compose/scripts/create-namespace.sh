#!/bin/sh
# Registers the namespace the workers use (TEMPORAL_NAMESPACE, `default` unless set) once the server
# answers: run by the `temporal-namespace` service of docker-compose.prod.yml (image
# temporalio/admin-tools) after the server is healthy and before the workers start. Idempotent.
set -eu
ns="${TEMPORAL_NAMESPACE:-default}"
retention="${TEMPORAL_NAMESPACE_RETENTION:-72h}"
address="${TEMPORAL_ADDRESS:-temporal:7233}"

tries=0
until temporal operator cluster health --address "$address" >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    echo "create-namespace: the server at $address is not healthy" >&2
    exit 1
  fi
  sleep 2
done

tries=0
while :; do
  if temporal operator namespace describe --address "$address" -n "$ns" >/dev/null 2>&1; then
    echo "create-namespace: namespace $ns exists"
    exit 0
  fi
  if temporal operator namespace create --address "$address" -n "$ns" --retention "$retention"; then
    echo "create-namespace: namespace $ns created (retention $retention)"
    exit 0
  fi
  tries=$((tries + 1))
  if [ "$tries" -ge 30 ]; then
    echo "create-namespace: cannot create namespace $ns at $address" >&2
    exit 1
  fi
  sleep 2
done
