# Shared helpers for the VM scripts. Sourced, not executed.

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$VM_DIR/../.." && pwd)
CACHE="$REPO/.cache/vm"
mkdir -p "$CACHE"

log() { echo "vm: $*" >&2; }
die() { echo "vm: error: $*" >&2; exit 1; }

# need_pkgs CMD:PACKAGE... installs the packages whose command is missing.
# CI starts from a fresh machine, so refresh apt's lists first, but only once
# per run (the flag is exported so the child scripts inherit it).
need_pkgs() {
  local missing=() spec
  for spec in "$@"; do
    command -v "${spec%%:*}" >/dev/null || missing+=("${spec#*:}")
  done
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  apt_update_once
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
}

apt_update_once() {
  [[ ${HELM_VM_APT_UPDATED:-} == 1 ]] && return 0
  apt-get update -q >&2
  export HELM_VM_APT_UPDATED=1
}

# Serialise cache writers: two run.sh started together on a cold cache must
# not both unpack into the same directory.
lock_cache() {
  exec 9>"$CACHE/.lock"
  flock 9
}
