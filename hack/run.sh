#!/usr/bin/env bash
# `make run`: the embedded default. Starts the local cluster (no Docker), installs annshard
# with its Helm chart, applies the sample index, loads demo data through the router, runs
# queries and leaves everything running.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
: "${K8S_BIN:?}" "${HELM:?}"
export KUBECONFIG=$root/.local/kubeconfig
kubectl=$K8S_BIN/kubectl
sample=${SAMPLE:-config/samples/annshard_v1alpha1_annindex.yaml}
index=$(awk '/^metadata:/{m=1} m && /^  name:/{print $2; exit}' "$sample")

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# A failed step stops the cluster it started (logs stay under .local/logs for a look);
# a successful run leaves it running for the user.
started=
on_exit() {
	local rc=$?
	if [ "$rc" -ne 0 ] && [ -n "$started" ]; then
		echo "make run failed; stopping the local cluster (logs are in .local/logs/)" >&2
		go run ./hack/localcluster down || true
	fi
}
trap on_exit EXIT

step "Starting the local cluster (state in .local/)"
t0=$(date +%s)
if ! go run ./hack/localcluster status 2>/dev/null | grep -q running; then started=1; fi
go run ./hack/localcluster up
echo "cluster up in $(( $(date +%s) - t0 ))s"

step "Installing annshard with the Helm chart (the operator runs in-cluster, as a pod)"
"$HELM" upgrade --install annshard charts/annshard --namespace annshard-system --create-namespace \
	--set image.tag=dev --wait --timeout 5m
"$kubectl" -n annshard-system get pods -o wide

step "Applying $sample (index $index)"
"$kubectl" apply -f "$sample"

step "Waiting for $index to become Available, then loading demo data and querying through the router"
go run ./hack/demo -index "$index" -namespace default

step "kubectl get annidx"
"$kubectl" get annidx
step "kubectl get pods"
"$kubectl" get pods -o wide

cat <<HINT

annshard is running on the local cluster. Try:
  export KUBECONFIG=$KUBECONFIG
  $kubectl get annidx $index -o yaml
  go run ./hack/localcluster logs $index-shard-0-0
  curl -s http://\$($kubectl get pod -l app.kubernetes.io/component=router -o jsonpath='{.items[0].status.podIP}'):8080/metrics | head
Stop everything with:  make cluster-down
HINT
