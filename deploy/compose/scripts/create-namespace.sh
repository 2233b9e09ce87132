#!/bin/sh
# Registers the namespace the workers use (TEMPORAL_NAMESPACE, `default` unless set) once the server
# answers, and the search attributes StatefulWorkflows set (README, "Finding workflows"): run by the
# `temporal-namespace` service of docker-compose.prod.yml (image temporalio/admin-tools) after the
# server is healthy and before the workers start. Idempotent.
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

# StatefulEntity, StatefulId, StatefulStatus, StatefulRoot (Keyword), each created when missing.
search_attributes() {
  for name in StatefulEntity StatefulId StatefulStatus StatefulRoot; do
    tries=0
    until temporal operator search-attribute list --address "$address" -n "$ns" 2>/dev/null | grep -qw "$name"; do
      temporal operator search-attribute create --address "$address" -n "$ns" --name "$name" --type Keyword >/dev/null 2>&1 || true
      tries=$((tries + 1))
      if [ "$tries" -ge 30 ]; then
        echo "create-namespace: cannot create search attribute $name in $ns" >&2
        exit 1
      fi
      sleep 2
    done
  done
  echo "create-namespace: search attributes present in $ns"
}

tries=0
while :; do
  if temporal operator namespace describe --address "$address" -n "$ns" >/dev/null 2>&1; then
    echo "create-namespace: namespace $ns exists"
    search_attributes
    exit 0
  fi
  if temporal operator namespace create --address "$address" -n "$ns" --retention "$retention"; then
    echo "create-namespace: namespace $ns created (retention $retention)"
    search_attributes
    exit 0
  fi
  tries=$((tries + 1))
  if [ "$tries" -ge 30 ]; then
    echo "create-namespace: cannot create namespace $ns at $address" >&2
    exit 1
  fi
  sleep 2
done
