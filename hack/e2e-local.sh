#!/usr/bin/env bash
# `make test-e2e`: runs the e2e suite against a local cluster of its own (its own state
# directory, ports and pod IP range, so a `make run` cluster can keep running), then
# stops that cluster, whatever the outcome.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
: "${HELM:?}"
# E2E_SLOT (0-7) picks another state directory, port block and pod range, so several
# checkouts of the repository can run the suite on one machine at the same time.
slot=${E2E_SLOT:-0}
case $slot in [0-7]) ;; *) echo "E2E_SLOT must be 0-7, got $slot" >&2; exit 2 ;; esac
state=$root/.local/e2e
[ "$slot" = 0 ] || state=$root/.local/e2e-$slot
flags=(--state-dir "$state")
# Every port sits below 32768, outside Linux's ephemeral range (ip_local_port_range
# 32768-60999): a port there can be held by any outgoing connection as its local end at
# the moment the cluster binds it (a CI run failed so: "port 33790 is taken").
up_flags=(--etcd-port $((24790 + 100 * slot)) --apiserver-port $((26443 + 100 * slot))
	--controller-manager-port $((20357 + 100 * slot)) --scheduler-port $((20359 + 100 * slot))
	--pod-cidr "127.0.$((32 + 16 * slot)).0/20" --node-name e2e)

go build -o "$root/bin/localcluster" ./hack/localcluster
"$root/bin/localcluster" down "${flags[@]}" >/dev/null 2>&1 || true
rm -rf "$state"
cleanup() { "$root/bin/localcluster" down "${flags[@]}"; }
trap cleanup EXIT

t0=$(date +%s)
"$root/bin/localcluster" up "${flags[@]}" "${up_flags[@]}"
echo "local cluster up in $(( $(date +%s) - t0 ))s"

KUBECONFIG=$state/kubeconfig E2E_HELM=$HELM E2E_LOG_DIR=$state/logs/pods \
	go test ./test/e2e/ -count=1 -timeout 25m -v -ginkgo.v ${GINKGO_ARGS:-}
