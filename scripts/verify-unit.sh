#!/usr/bin/env bash
# Checks systemd/helmd.service with systemd-analyze verify, as `make install`
# installs it (into a staging directory): any warning is a failure, since
# systemd ignores what it cannot parse. Needs no running systemd (containers,
# CI runners where systemd is not PID 1).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v systemd-analyze >/dev/null || {
  echo "verify-unit: systemd-analyze is missing (Debian's systemd package; scripts/install-deps.sh installs it)" >&2
  exit 1
}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
make -s install DESTDIR="$stage" PREFIX=/usr/local >/dev/null
unit="$stage/usr/local/lib/systemd/system/helmd.service"
# verify checks that ExecStart's program exists: point it into the staged tree.
sed "s#^ExecStart=/usr/local/#ExecStart=$stage/usr/local/#" "$unit" >"$stage/helmd.service"
if ! out=$(systemd-analyze verify --man=no "$stage/helmd.service" 2>&1) || [ -n "$out" ]; then
  echo "verify-unit: systemd-analyze verify systemd/helmd.service:" >&2
  echo "$out" | sed "s#$stage/##g" >&2
  exit 1
fi
echo "verify-unit: systemd/helmd.service verified (systemd-analyze $(systemd-analyze --version | head -1 | awk '{print $2}'))"
