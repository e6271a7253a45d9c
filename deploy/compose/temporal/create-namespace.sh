#!/bin/sh
# One-shot (docker-compose.yml, service temporal-namespace, image temporalio/admin-tools): creates
# the namespace pgrunbook uses, unless it exists. pgrunbook's worker registers its own search
# attributes at start.
set -eu
: "${TEMPORAL_ADDRESS:?}" "${TEMPORAL_NAMESPACE:?}"
retention=${TEMPORAL_NAMESPACE_RETENTION:-30d}

attempt=0
until temporal operator cluster health --address "${TEMPORAL_ADDRESS}"; do
  attempt=$((attempt + 1))
  if [ "$attempt" -ge 30 ]; then
    echo "temporal-namespace: ${TEMPORAL_ADDRESS} is not healthy after ${attempt} attempts" >&2
    exit 1
  fi
  sleep 2
done

if temporal operator namespace describe --namespace "${TEMPORAL_NAMESPACE}" --address "${TEMPORAL_ADDRESS}" >/dev/null 2>&1; then
  echo "temporal-namespace: ${TEMPORAL_NAMESPACE} exists"
else
  temporal operator namespace create --namespace "${TEMPORAL_NAMESPACE}" --retention "${retention}" --address "${TEMPORAL_ADDRESS}"
  echo "temporal-namespace: created ${TEMPORAL_NAMESPACE} (retention ${retention})"
fi
