# Shared by lab/up, lab/down, lab/status, lab/image, lab/logs. Sourced, not run.
# shellcheck shell=bash

LAB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$LAB_ROOT/.." && pwd)
LAB_DIR=${FERRY_LAB_DIR:-$HOME/.cache/ferry/lab}
LAB_BIN_DIR=${FERRY_BIN_DIR:-$HOME/.cache/ferry/bin}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/ferry/target}
export GOFLAGS=${GOFLAGS:--mod=mod}

KUBERNETES_VERSION=v1.34.4
ETCD_PORT=${FERRY_ETCD_PORT:-23790}
APISERVER_PORT=${FERRY_APISERVER_PORT:-6443}
# lab/api-proxy: the API server behind a proxy that lab/fault api-errors makes fail.
API_PROXY_PORT=${FERRY_API_PROXY_PORT:-6444}
# The image registry (CNCF distribution, Debian's docker-registry): open on
# REGISTRY_PORT, the same storage behind basic auth on REGISTRY_AUTH_PORT
# (user and password in $LAB_DIR/registry/credentials) for pull secrets.
REGISTRY_PORT=${FERRY_REGISTRY_PORT:-5000}
REGISTRY_AUTH_PORT=${FERRY_REGISTRY_AUTH_PORT:-5001}
KUBECONFIG_PATH="$LAB_DIR/kubeconfig"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler agent api-proxy registry registry-auth)

lab_log() { printf '[lab] %s\n' "$*" >&2; }
lab_die() { printf '[lab] error: %s\n' "$*" >&2; exit 1; }

# The control-plane binary's path, keyed by everything that decides its content.
controlplane_bin() {
  local key
  key=$(cat "$LAB_ROOT/controlplane/go.mod" "$LAB_ROOT/controlplane/go.sum" "$LAB_ROOT/controlplane/main.go" \
        <(go env GOVERSION) | sha256sum | cut -c1-16)
  echo "$LAB_BIN_DIR/controlplane-$KUBERNETES_VERSION-$key"
}

agent_bin() { echo "$CARGO_TARGET_DIR/release/ferry-lab-agent"; }

pid_file() { echo "$LAB_DIR/run/$1.pid"; }

# Is component $1 running (its pid file names a live process)?
running() {
  local f pid
  f=$(pid_file "$1")
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# Waits up to $2 seconds for the command "${@:3}" to succeed; $1 names it.
wait_for() {
  local what=$1 seconds=$2 i
  shift 2
  for ((i = 0; i < seconds * 10; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  lab_die "$what not ready after ${seconds}s; see $LAB_DIR/logs/"
}
