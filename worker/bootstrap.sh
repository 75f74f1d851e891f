#!/usr/bin/env bash
# Starts a worker agent on a host that can reach the control plane.
#   APOTHIC_SERVER_URL=https://control.example APOTHIC_WORKER_TOKEN=wt-... ./bootstrap.sh
# The token is the control plane's worker join token ($APOTHIC_HOME/worker_token there): it can
# open a worker session and fetch code bundles, nothing else.
# It is also the start script of rented hosts: the vast and fly providers send this file as
# Vast's `onstart` and Fly's init command, with APOTHIC_WORKER_TOKEN set to a one-time join token
# (which the agent exchanges for its own key) and APOTHIC_PROVIDER to the provider's name.
set -euo pipefail
: "${APOTHIC_SERVER_URL:?set APOTHIC_SERVER_URL}"
: "${APOTHIC_WORKER_TOKEN:?set APOTHIC_WORKER_TOKEN}"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c "import apothic" 2>/dev/null; then
  "$PYTHON" -m pip install --quiet "${APOTHIC_PACKAGE:-apothic}"
fi
exec "$PYTHON" -m apothic worker start --server "$APOTHIC_SERVER_URL" --token "$APOTHIC_WORKER_TOKEN" \
  --provider "${APOTHIC_PROVIDER:-manual}"
