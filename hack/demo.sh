#!/usr/bin/env bash
# The demo: three bare LXD servers on this machine, lxd-operator standalone (its embedded
# Kubernetes-compatible API server and the controller in one process), one LxdCluster applied with
# kubectl that has the operator form them into a cluster, the examples applied, and where every
# container landed. Run as root on a fresh machine; it installs what it
# needs. Everything keeps running afterwards; the last lines say how to use and stop it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DATA_DIR=${LXD_OPERATOR_DATA_DIR:-$PWD/target/demo}
LISTEN=${LXD_OPERATOR_LISTEN:-127.0.0.1:6443}
METRICS=${LXD_OPERATOR_METRICS:-127.0.0.1:8080}
export KUBECONFIG=$DATA_DIR/kubeconfig

. hack/lib/prerequisites.sh
check_toolchain

echo "== Building lxd-operator (debug)"
cargo build --locked -p lxd-operator
operator=$PWD/target/debug/lxd-operator

echo "== Starting three bare LXD servers on 127.0.0.1-3:8443 (not clustered; no lxd init)"
# A fresh start: the test cluster and an earlier demo's servers use the same addresses.
hack/lxd-cluster.sh down
hack/lxd-cluster.sh bare down
if [ -f "$DATA_DIR/operator.pid" ] && kill -0 "$(cat "$DATA_DIR/operator.pid")" 2>/dev/null; then
  kill "$(cat "$DATA_DIR/operator.pid")" && sleep 1
fi
rm -rf "$DATA_DIR"
hack/lxd-cluster.sh bare up 3 1

echo "== Starting lxd-operator standalone (API on $LISTEN, state in $DATA_DIR)"
mkdir -p "$DATA_DIR"
setsid "$operator" standalone --data-dir "$DATA_DIR" --listen "$LISTEN" --metrics-addr "$METRICS" \
  </dev/null >"$DATA_DIR/operator.log" 2>&1 &
echo $! >"$DATA_DIR/operator.pid"
for _ in $(seq 1 50); do
  kubectl version >/dev/null 2>&1 && break
  sleep 0.2
done
kubectl version >/dev/null || { tail -20 "$DATA_DIR/operator.log"; exit 1; }

echo "== Applying one LxdCluster that lists the three servers: the operator forms the cluster"
hack/lxd-cluster.sh bare manifest default local | kubectl apply -f -
kubectl wait lxdcl local --for=condition=Formed --timeout=120s
kubectl get lxdcl local -o custom-columns='SERVER:.status.servers[*].name,PHASE:.status.servers[*].phase,VERSION:.status.servers[*].lxdVersion'
LXD_DIR=$PWD/target/lxd-bare/node1 lxc cluster list

echo "== Applying examples/"
kubectl apply -f examples/

echo "== Waiting until every set has all its children and every container is Ready"
kubectl wait lxdcs --all --for=condition=Progressing=false --timeout=120s
kubectl wait lxdc --all --for=condition=Ready --timeout=120s

echo
echo "== kubectl get lxdcs"
kubectl get lxdcs
echo
echo "== kubectl get lxdc -o wide"
kubectl get lxdc -o wide
echo
echo "== lxc list (the same containers, as LXD sees them)"
LXD_DIR=$PWD/target/lxd-bare/node1 lxc list -c nsL

cat <<EOF

lxd-operator runs in the background (pid $(cat "$DATA_DIR/operator.pid"), log $DATA_DIR/operator.log).
  export KUBECONFIG=$KUBECONFIG
  kubectl get lxd                       # clusters, containers, policies
  kubectl describe lxdc web-1           # status and events
  kubectl patch lxdc batch-1 --type merge -p '{"spec":{"state":"Running"}}'
  kubectl scale lxdcs/runners --replicas=6
  LXD_DIR=$PWD/target/lxd-bare/node1 lxc list
Metrics: curl http://$METRICS/metrics
Stop everything:  kill \$(cat $DATA_DIR/operator.pid); hack/lxd-cluster.sh bare down
EOF
