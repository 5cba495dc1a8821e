#!/usr/bin/env bash
# Installs what building and testing helm needs on Debian 12: the BPF toolchain,
# libbpf, QEMU and busybox for the VM kernel, and the npm packages (npm ci).
# Idempotent: packages already there are not fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config make gcc
      qemu-system-x86 busybox-static cpio xz-utils kmod iproute2 strace)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# systemd-analyze checks the unit file (scripts/verify-unit.sh); it needs no running systemd.
command -v systemd-analyze >/dev/null || missing+=(systemd)
if ((${#missing[@]})); then
  echo "install-deps: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v node >/dev/null || { echo "install-deps: Node.js 20+ is required (apt-get install nodejs, or the machine's own)" >&2; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]')
((major >= 20)) || { echo "install-deps: Node.js $major is too old; helm needs 20+" >&2; exit 1; }

# koffi's binary is an optional dependency: never --omit=optional.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
