#!/usr/bin/env bash
# The demo: a real 3-member LXD cluster on this machine, what lxd-operator would manage on it,
# and where everything is. Run as root on a fresh machine; it installs what it needs.
#
# Today it brings the cluster up, prints the LxdCluster manifest and the CRDs' kinds, and lists
# the members; the operator's standalone mode (issue: controller) will apply examples/ here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== Building lxd-operator (debug)"
cargo build --locked -p lxd-operator
operator=target/debug/lxd-operator

echo "== Bringing up a 3-member LXD cluster on 127.0.0.1-3:8443"
hack/lxd-cluster.sh up 3
eval "$(hack/lxd-cluster.sh env)"

echo
echo "== Members"
lxc cluster list

echo
echo "== The API lxd-operator serves (from the generated CRDs)"
"$operator" crds | awk '/^  names:/{n=1} n&&/kind:/{print "  kind: " $2; n=0}'

echo
echo "== The LxdCluster for this cluster (hack/lxd-cluster.sh manifest)"
hack/lxd-cluster.sh manifest | sed -n '/^kind: LxdCluster/,$p'

echo
echo "== Example containers (examples/)"
grep -h '^metadata:' examples/*.yaml | sed 's/^metadata: /  /'

cat <<EOF

The cluster keeps running. Try it:
  eval "\$(hack/lxd-cluster.sh env)"   # LXD_DIR and friends for this shell
  lxc launch busybox hello --target node2
  lxc list
Stop and remove everything:  hack/lxd-cluster.sh down
EOF
