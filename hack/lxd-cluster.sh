#!/usr/bin/env bash
# A real N-member LXD cluster on this machine, for tests and the demo.
#
#   hack/lxd-cluster.sh up [N]        start (or repair) an N-member cluster (N defaults to 3)
#   hack/lxd-cluster.sh env           shell exports for tests: endpoints, certificates, LXD_DIRs
#   hack/lxd-cluster.sh manifest [NS] an LxdCluster named `local` and its client Secret (in NS)
#   hack/lxd-cluster.sh status        the members as LXD sees them
#   hack/lxd-cluster.sh stop-member I stop member I's daemon (its containers keep running)
#   hack/lxd-cluster.sh start-member I start member I's daemon again
#   hack/lxd-cluster.sh down          delete every instance, stop every daemon, remove all state
#
#   hack/lxd-cluster.sh bare up N [F] start N bare, unclustered LXD servers on 127.0.0.F.. (F
#                                     defaults to 4), each with a trust token for the operator
#   hack/lxd-cluster.sh bare manifest [NS] [NAME]
#                                     an LxdCluster (default `formed`) that forms them, its Secrets
#   hack/lxd-cluster.sh bare down     stop them all (clustered by then or not), remove their state
#
# Bare servers keep their state under $LXD_BARE_DIR (default: target/lxd-bare); server i is
# `node<i>` on 127.0.0.<i>:8443 too. Only the first has the busybox image (it becomes the
# cluster), and none has a storage pool (a join makes the cluster's pools on the joiner).
#
# Member i is `node<i>`, listens on 127.0.0.<i>:8443 and keeps its state in its own LXD_DIR under
# $LXD_CLUSTER_DIR (default: target/lxd-cluster in the repository). It never touches the system
# LXD in /var/lib/lxd, and nothing it starts sends traffic beyond 127.0.0.0/8: the daemons get a
# dead loopback HTTP(S) proxy for anything outside, and the default profile has no network device.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE_DIR=${LXD_CLUSTER_DIR:-$REPO_ROOT/target/lxd-cluster}
BARE_DIR=${LXD_BARE_DIR:-$REPO_ROOT/target/lxd-bare}
PORT=8443
POOL=local
IMAGE_ALIAS=busybox
# LXD fetches instance types from its image server at start: send that (and anything else bound
# outside loopback) to a closed loopback port. Go never proxies loopback addresses, so cluster
# traffic between members is unaffected.
DEAD_PROXY=http://127.0.0.1:9

log() { printf '%s lxd-cluster: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

member_dir() { echo "$STATE_DIR/node$1"; }
member_addr() { echo "127.0.0.$1"; }
pid_file() { echo "$STATE_DIR/node$1.pid"; }
size() { cat "$STATE_DIR/size" 2>/dev/null || echo 0; }

# lxc against member I through its unix socket (always trusted).
lxc_on() { local i=$1; shift; LXD_DIR=$(member_dir "$i") lxc "$@"; }

# A pid is alive when it exists and is not a zombie (a reaped-late daemon stays a zombie).
alive() {
  local pid=$1 state
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ "$state" != Z ]
}

member_pid() { cat "$(pid_file "$1")" 2>/dev/null || true; }
member_alive() { alive "$(member_pid "$1")"; }

ensure_packages() {
  local missing=()
  command -v lxd >/dev/null || missing+=(lxd)
  command -v lxc >/dev/null || missing+=(lxd-client)
  [ -x /bin/busybox ] && file_is_static /bin/busybox || missing+=(busybox-static)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v ss >/dev/null || missing+=(iproute2)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "needs root to install ${missing[*]} (and to run LXD)"
  log "installing ${missing[*]} with apt-get"
  # Keep the package's own service (the system LXD) from being started by the install.
  local policy=/usr/sbin/policy-rc.d created_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null || apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  [ -n "$created_policy" ] && rm -f "$policy"
  return 0
}

file_is_static() { ! ldd "$1" >/dev/null 2>&1; }

check_state_dir() {
  # A unix socket path is limited to 107 bytes; LXD's longest is <dir>/devlxd/sock.
  local longest="$STATE_DIR/node9/devlxd/sock"
  [ ${#longest} -lt 100 ] || die "state folder $STATE_DIR is too long for unix sockets; set LXD_CLUSTER_DIR to a shorter path"
  case "$STATE_DIR" in /var/lib/lxd|/var/lib/lxd/*) die "refusing to use the system LXD folder" ;; esac
}

# Closes every descriptor above stderr, then runs the command: a daemon must not keep what its
# caller had open. A lock held around a test run (flock) would otherwise stay held for the
# daemon's whole life, and everyone waiting for it would wait forever.
exec_without_inherited_fds() {
  local fd
  for fd in /proc/$BASHPID/fd/*; do
    fd=${fd##*/}
    [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null
  done
  exec "$@"
}

start_member() {
  local i=$1 dir
  member_alive "$i" && return 0
  dir=$(member_dir "$i")
  mkdir -p "$dir"
  chmod 0711 "$dir"
  # Detach from this shell's session so the daemon outlives the caller; neither the subshell
  # (exec) nor setsid forks here (a background job is no group leader), so $! is the daemon's pid.
  (
    export LXD_DIR=$dir https_proxy=$DEAD_PROXY http_proxy=$DEAD_PROXY HTTPS_PROXY=$DEAD_PROXY \
      HTTP_PROXY=$DEAD_PROXY no_proxy= NO_PROXY=
    exec_without_inherited_fds setsid lxd --group root --logfile "$dir/lxd.log"
  ) </dev/null >"$dir/daemon.out" 2>&1 &
  echo $! >"$(pid_file "$i")"
}

wait_member_ready() {
  local i=$1
  LXD_DIR=$(member_dir "$i") timeout 60 lxd waitready --timeout 50 2>/dev/null ||
    { log "node$i did not become ready; last log lines:"; tail -5 "$(member_dir "$i")/lxd.log" >&2; return 1; }
}

is_clustered() { lxc_on "$1" query /1.0/cluster 2>/dev/null | grep -q '"enabled": true'; }

init_first_member() {
  log "node1: initialising the cluster on $(member_addr 1):$PORT"
  lxc_on 1 query /1.0 >/dev/null
  LXD_DIR=$(member_dir 1) lxd init --preseed <<EOF
config:
  core.https_address: $(member_addr 1):$PORT
  images.auto_update_interval: "0"
storage_pools:
- name: $POOL
  driver: dir
profiles:
- name: default
  description: Root disk only; test containers get no network device.
  devices:
    root: {type: disk, path: /, pool: $POOL}
cluster:
  server_name: node1
  enabled: true
EOF
}

join_member() {
  local i=$1 token
  token=$(lxc_on 1 cluster add "node$i" 2>/dev/null | tail -n 1) || true
  if [ -z "$token" ]; then
    # A token left over from an interrupted join blocks a new one: revoke it and ask again.
    lxc_on 1 cluster revoke-token "node$i" >/dev/null 2>&1 || true
    token=$(lxc_on 1 cluster add "node$i" | tail -n 1)
  fi
  log "node$i: joining at $(member_addr "$i"):$PORT"
  LXD_DIR=$(member_dir "$i") lxd init --preseed <<EOF
cluster:
  enabled: true
  server_name: node$i
  server_address: $(member_addr "$i"):$PORT
  cluster_token: $token
  member_config:
  - {entity: storage-pool, name: $POOL, key: source, value: ""}
EOF
}

online_members() {
  lxc_on 1 cluster list --format csv 2>/dev/null | grep -c ',ONLINE,' || true
}

wait_online() {
  local n=$1 deadline=$((SECONDS + ${2:-30}))
  while [ "$(online_members)" -lt "$n" ]; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}

build_image() {
  local work=$STATE_DIR/image
  [ -f "$work/busybox.tar.gz" ] && { echo "$work/busybox.tar.gz"; return 0; }
  rm -rf "$work/build" && mkdir -p "$work/build/rootfs"
  local root=$work/build/rootfs
  mkdir -p "$root"/{bin,sbin,etc,dev,proc,sys,tmp,root,run,var/log}
  cp /bin/busybox "$root/bin/busybox"
  local applet
  for applet in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
  done
  ln -sf ../bin/busybox "$root/sbin/init"
  # busybox init: nothing to start; it stays up as PID 1 and powers off on LXD's stop signal.
  printf '::sysinit:/bin/hostname -F /etc/hostname\n::shutdown:/bin/true\n' >"$root/etc/inittab"
  echo busybox >"$root/etc/hostname"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\n' >"$root/etc/group"
  cat >"$work/build/metadata.yaml" <<EOF
architecture: $(uname -m)
creation_date: $(date +%s)
properties:
  os: busybox
  release: "$(/bin/busybox | head -1 | awk '{print $2}')"
  description: busybox (static), built locally by hack/lxd-cluster.sh
templates:
  /etc/hostname:
    when: [create, copy, rename]
    template: hostname.tpl
EOF
  mkdir -p "$work/build/templates"
  echo '{{ container.name }}' >"$work/build/templates/hostname.tpl"
  tar -C "$work/build" -czf "$work/busybox.tar.gz.tmp" metadata.yaml templates rootfs
  mv "$work/busybox.tar.gz.tmp" "$work/busybox.tar.gz"
  echo "$work/busybox.tar.gz"
}

ensure_image() {
  local i=${1:-1}
  lxc_on "$i" image info "$IMAGE_ALIAS" >/dev/null 2>&1 && return 0
  local tarball
  tarball=$(build_image)
  log "importing the busybox image as alias $IMAGE_ALIAS"
  lxc_on "$i" image import "$tarball" --alias "$IMAGE_ALIAS" >/dev/null
}

ensure_client_certificate() {
  make_client_certificate
  local crt=$STATE_DIR/client.crt fingerprint
  fingerprint=$(cert_fingerprint "$crt")
  if ! lxc_on 1 query /1.0/certificates 2>/dev/null | grep -q "$fingerprint"; then
    log "trusting the operator's client certificate"
    lxc_on 1 config trust add "$crt" --name lxd-operator >/dev/null 2>&1 ||
      lxc_on 1 config trust add "$crt" >/dev/null
  fi
  cp "$(member_dir 1)/cluster.crt" "$STATE_DIR/server.crt"
}

# The operator's client certificate and key in $STATE_DIR, made once.
make_client_certificate() {
  local crt=$STATE_DIR/client.crt key=$STATE_DIR/client.key
  if [ ! -s "$crt" ] || [ ! -s "$key" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:secp384r1 -sha384 -nodes \
      -keyout "$key.tmp" -out "$crt.tmp" -days 3650 -subj "/CN=lxd-operator" 2>/dev/null
    # PKCS#8 key, as reqwest's Identity::from_pem and Kubernetes TLS Secrets expect.
    openssl pkcs8 -topk8 -nocrypt -in "$key.tmp" -out "$key"
    mv "$crt.tmp" "$crt" && rm -f "$key.tmp"
    chmod 0600 "$key"
  fi
}

cert_fingerprint() {
  openssl x509 -in "$1" -outform DER | sha256sum | awk '{print $1}'
}

# Stop every process of ours: daemons by pid, then the container monitors they left behind.
kill_everything() {
  local pidf pid
  for pidf in "$STATE_DIR"/node*.pid; do
    [ -e "$pidf" ] || continue
    pid=$(cat "$pidf")
    alive "$pid" && kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidf"
  done
  # Container processes (the `[lxc monitor] <dir>/containers <name>` and their children).
  local monitors
  monitors=$(pgrep -f "\[lxc monitor\] $STATE_DIR/" || true)
  for pid in $monitors; do
    pkill -9 -P "$pid" 2>/dev/null || true
    kill -9 "$pid" 2>/dev/null || true
  done
  unmount_state
}

unmount_state() {
  local mounts
  mounts=$(awk -v dir="$STATE_DIR/" 'index($2, dir) == 1 {print $2}' /proc/self/mounts | sort -r)
  local m
  for m in $mounts; do umount -l "$m" 2>/dev/null || true; done
}

wipe() {
  kill_everything
  rm -rf "$STATE_DIR"
}

cmd_up() {
  local n=${1:-3}
  [[ "$n" =~ ^[1-9]$ ]] || die "member count must be 1 to 9, not '$n'"
  check_state_dir
  ensure_packages
  local started=$SECONDS
  if [ -d "$STATE_DIR" ] && [ "$(size)" != "$n" ]; then
    log "found a cluster of $(size) members, want $n: starting over"
    wipe
  fi
  if [ -d "$STATE_DIR" ] && [ ! -e "$STATE_DIR/ready" ]; then
    log "found an unfinished cluster: starting over"
    wipe
  fi
  mkdir -p "$STATE_DIR"
  echo "$n" >"$STATE_DIR/size"

  if ! bring_up "$n"; then
    log "could not bring the existing state back: starting over"
    wipe
    mkdir -p "$STATE_DIR"
    echo "$n" >"$STATE_DIR/size"
    bring_up "$n" || die "the cluster did not come up; see $STATE_DIR/node*/lxd.log"
  fi
  ensure_image
  ensure_client_certificate
  touch "$STATE_DIR/ready"
  log "$n members online in $((SECONDS - started)) s"
}

# Start what is not running (all daemons at once: restarted members need each other for the
# database quorum), then form or complete the cluster.
bring_up() {
  local n=$1 i
  for i in $(seq 1 "$n"); do start_member "$i"; done
  for i in $(seq 1 "$n"); do wait_member_ready "$i" || return 1; done
  if ! is_clustered 1; then
    [ ! -e "$STATE_DIR/ready" ] || return 1
    init_first_member || return 1
  fi
  for i in $(seq 2 "$n"); do
    if ! is_clustered "$i"; then
      [ ! -e "$STATE_DIR/ready" ] || return 1
      join_member "$i" || return 1
    fi
  done
  wait_online "$n" 60
}

cmd_env() {
  [ -e "$STATE_DIR/ready" ] || die "no cluster: run hack/lxd-cluster.sh up"
  local n i endpoints=() members=()
  n=$(size)
  for i in $(seq 1 "$n"); do
    endpoints+=("https://$(member_addr "$i"):$PORT")
    members+=("node$i")
  done
  echo "export LXD_CLUSTER_DIR='$STATE_DIR'"
  echo "export LXD_CLUSTER_SIZE=$n"
  echo "export LXD_MEMBERS='$(IFS=,; echo "${members[*]}")'"
  echo "export LXD_ENDPOINTS='$(IFS=,; echo "${endpoints[*]}")'"
  echo "export LXD_CLIENT_CERT='$STATE_DIR/client.crt'"
  echo "export LXD_CLIENT_KEY='$STATE_DIR/client.key'"
  echo "export LXD_SERVER_CERT='$STATE_DIR/server.crt'"
  echo "export LXD_SERVER_FINGERPRINT=$(cert_fingerprint "$STATE_DIR/server.crt")"
  for i in $(seq 1 "$n"); do
    echo "export LXD_DIR_NODE$i='$(member_dir "$i")'"
  done
  # So that a plain `lxc` in this shell talks to the test cluster, never to a system LXD.
  echo "export LXD_DIR='$(member_dir 1)'"
}

cmd_manifest() {
  [ -e "$STATE_DIR/ready" ] || die "no cluster: run hack/lxd-cluster.sh up"
  local ns=${1:-default} n i
  n=$(size)
  cat <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: lxd-local-client
  namespace: $ns
type: kubernetes.io/tls
data:
  tls.crt: $(base64 -w0 "$STATE_DIR/client.crt")
  tls.key: $(base64 -w0 "$STATE_DIR/client.key")
---
apiVersion: lxd-operator.dev/v1alpha1
kind: LxdCluster
metadata:
  name: local
spec:
  endpoints:
EOF
  for i in $(seq 1 "$n"); do echo "  - https://$(member_addr "$i"):$PORT"; done
  cat <<EOF
  clientCertSecretRef: {namespace: $ns, name: lxd-local-client}
  serverCertificate:
    fingerprint: $(cert_fingerprint "$STATE_DIR/server.crt")
EOF
}

cmd_status() {
  [ -d "$STATE_DIR" ] || { echo "no cluster in $STATE_DIR"; return 0; }
  local i
  for i in $(seq 1 "$(size)"); do
    if member_alive "$i"; then echo "node$i: daemon running (pid $(member_pid "$i"))"; else echo "node$i: daemon stopped"; fi
  done
  member_alive 1 && lxc_on 1 cluster list || true
}

cmd_stop_member() {
  local i=${1:?member number}
  member_alive "$i" || { log "node$i is not running"; return 0; }
  local pid
  pid=$(member_pid "$i")
  # SIGKILL, as a crash: the member's containers keep running and LXD sees the member go
  # offline, which is what the tests of lost operations need.
  kill -9 "$pid"
  while alive "$pid"; do sleep 0.1; done
  log "node$i stopped"
}

cmd_start_member() {
  local i=${1:?member number}
  start_member "$i"
  wait_member_ready "$i"
  log "node$i started"
}

cmd_down() {
  [ -d "$STATE_DIR" ] || return 0
  if member_alive 1; then
    local names
    names=$(lxc_on 1 list --format csv -c n 2>/dev/null || true)
    if [ -n "$names" ]; then
      log "deleting $(echo "$names" | wc -l) instances"
      echo "$names" | xargs -r -P 8 -n 1 env LXD_DIR="$(member_dir 1)" timeout 60 lxc delete --force >/dev/null 2>&1 || true
    fi
  fi
  local i
  for i in $(seq 1 "$(size)"); do
    member_alive "$i" && LXD_DIR=$(member_dir "$i") timeout 20 lxd shutdown >/dev/null 2>&1 &
  done
  wait
  wipe
  log "cluster removed"
}

# Bare servers: the same functions with STATE_DIR pointed at BARE_DIR (member i stays
# 127.0.0.<i>), in a subshell each so that the cluster's STATE_DIR is untouched.
bare_servers() { cat "$BARE_DIR/servers" 2>/dev/null || true; }

cmd_bare_up() {
  local n=${1:-3} first=${2:-4}
  [[ "$n" =~ ^[1-9]$ ]] && [[ "$first" =~ ^[1-9]$ ]] && [ $((first + n - 1)) -le 9 ] ||
    die "bare up N F: servers F..F+N-1 must lie in 1..9"
  (
    STATE_DIR=$BARE_DIR
    check_state_dir
    ensure_packages
    mkdir -p "$STATE_DIR"
    make_client_certificate
    local i started=$SECONDS
    for i in $(seq "$first" $((first + n - 1))); do
      grep -qx "$i" "$STATE_DIR/servers" 2>/dev/null || echo "$i" >>"$STATE_DIR/servers"
      start_member "$i"
    done
    for i in $(seq "$first" $((first + n - 1))); do
      wait_member_ready "$i" || die "bare server node$i did not start"
      if [ ! -e "$STATE_DIR/node$i.initialised" ]; then
        LXD_DIR=$(member_dir "$i") lxd init --preseed <<EOF
config:
  core.https_address: $(member_addr "$i"):$PORT
  images.auto_update_interval: "0"
EOF
        touch "$STATE_DIR/node$i.initialised"
      fi
      # The first server listed becomes the cluster: it alone holds the image.
      if [ "$(head -n 1 "$STATE_DIR/servers")" = "$i" ]; then ensure_image "$i"; fi
      if [ ! -s "$STATE_DIR/node$i.token" ]; then
        lxc_on "$i" config trust add --name lxd-operator | tail -n 1 >"$STATE_DIR/node$i.token"
      fi
    done
    log "bare servers $(bare_servers | sed 's/^/node/' | paste -sd, -) up in $((SECONDS - started)) s"
  )
}

cmd_bare_manifest() {
  local ns=${1:-default} name=${2:-formed} i
  [ -n "$(bare_servers)" ] || die "no bare servers: run hack/lxd-cluster.sh bare up"
  cat <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: lxd-$name-client
  namespace: $ns
type: kubernetes.io/tls
data:
  tls.crt: $(base64 -w0 "$BARE_DIR/client.crt")
  tls.key: $(base64 -w0 "$BARE_DIR/client.key")
EOF
  for i in $(bare_servers); do
    cat <<EOF
---
apiVersion: v1
kind: Secret
metadata:
  name: lxd-$name-node$i-token
  namespace: $ns
stringData:
  token: $(cat "$BARE_DIR/node$i.token")
EOF
  done
  cat <<EOF
---
apiVersion: lxd-operator.dev/v1alpha1
kind: LxdCluster
metadata:
  name: $name
spec:
  clientCertSecretRef: {namespace: $ns, name: lxd-$name-client}
  storagePools:
  - {name: $POOL, driver: dir}
  servers:
EOF
  for i in $(bare_servers); do
    cat <<EOF
  - name: node$i
    address: https://$(member_addr "$i"):$PORT
    trustTokenSecretRef: {namespace: $ns, name: lxd-$name-node$i-token}
EOF
  done
}

cmd_bare_down() {
  [ -d "$BARE_DIR" ] || return 0
  (
    STATE_DIR=$BARE_DIR
    local i
    for i in $(bare_servers); do
      if member_alive "$i"; then
        LXD_DIR=$(member_dir "$i") timeout 20 lxd shutdown >/dev/null 2>&1 &
      fi
    done
    wait
    wipe
  )
  log "bare servers removed"
}

cmd_bare() {
  local command=${1:-}
  shift || true
  case "$command" in
    up) cmd_bare_up "$@" ;;
    manifest) cmd_bare_manifest "$@" ;;
    down) cmd_bare_down ;;
    *) die "bare: up N [F] | manifest [NS] [NAME] | down" ;;
  esac
}

main() {
  local command=${1:-}
  shift || true
  case "$command" in
    up) cmd_up "$@" ;;
    env) cmd_env ;;
    manifest) cmd_manifest "$@" ;;
    status) cmd_status ;;
    stop-member) cmd_stop_member "$@" ;;
    start-member) cmd_start_member "$@" ;;
    down) cmd_down ;;
    bare) cmd_bare "$@" ;;
    *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; [ -z "$command" ] || exit 2 ;;
  esac
}

main "$@"
