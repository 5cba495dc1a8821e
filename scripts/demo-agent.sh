#!/usr/bin/env bash
# The main job, on a kernel with BPF LSM: helmd with the default policy governs a
# demo agent started with `helmctl run`; the audit trail shows what was denied.
set -euo pipefail
cd "$(dirname "$0")/.."

AUDIT=${HELM_AUDIT_LOG:-/var/log/helm/audit.jsonl}
SOCK=${HELM_SOCKET:-/run/helm/helmd.sock}
helmd() { bin/helmd "$@"; }
helmctl() { bin/helmctl "$@"; }
# The demo's enforcement is pinned apart from an installed helmd's, and removed at the end.
PINS=(--pin-dir /sys/fs/bpf/helm-demo --state-dir /run/helm-demo)
undo() { kill $HELMD 2>/dev/null; wait $HELMD 2>/dev/null || true; helmctl uninstall "${PINS[@]}" --audit-log "$AUDIT" >/dev/null 2>&1 || true; }

# The demo workspace the default policy allows.
mkdir -p /srv/agent/out
echo "quarterly numbers: 42" > /srv/agent/report.txt

helmd --policy policies/default.yaml --audit-log "$AUDIT" --socket "$SOCK" "${PINS[@]}" > /tmp/helmd.log 2>&1 &
HELMD=$!
trap undo EXIT
for _ in $(seq 600); do [ -S "$SOCK" ] && break; kill -0 $HELMD 2>/dev/null || break; sleep 0.1; done
if [ ! -S "$SOCK" ]; then cat /tmp/helmd.log; echo "helmd did not start" >&2; exit 1; fi
echo "== kernel $(uname -r), active LSMs: $(cat /sys/kernel/security/lsm)"
echo "== helmd is enforcing policies/default.yaml; audit trail: $AUDIT"

# Two local web servers: the policy lets the agent reach only the first.
python3 -m http.server 8080 --bind 127.0.0.1 >/dev/null 2>&1 &
WEB1=$!
python3 -m http.server 8080 --bind 127.0.0.2 >/dev/null 2>&1 &
WEB2=$!
trap 'kill $WEB1 $WEB2 2>/dev/null; undo' EXIT
sleep 1

echo "== a governed agent (role demo) does its work:"
helmctl run --role demo --name demo-agent -- sh -c '
  echo "-- read its workspace:";        cat /srv/agent/report.txt
  echo "-- write its output:";          echo done > /srv/agent/out/result.txt && echo ok
  echo "-- read /etc/shadow (blocked):"; cat /etc/shadow || true
  echo "-- read /etc/hostname (not listed: default deny):"; cat /etc/hostname || true
  echo "-- write outside its output dir:"; echo x > /srv/agent/sneaky.txt || true
  echo "-- GET http://127.0.0.1:8080/ (allowed):"; curl -s -o /dev/null -w "HTTP %{http_code}\n" http://127.0.0.1:8080/ || true
  echo "-- GET http://127.0.0.2:8080/ (not listed):"; curl -sS -o /dev/null http://127.0.0.2:8080/ 2>&1 || true
  echo "-- look up example.com (no rule names it: refused by helmd, never sent):"; getent hosts example.com || echo "lookup failed"
' || true
echo "== the same reads, ungoverned:"
head -c 40 /etc/shadow >/dev/null && echo "root outside helm still reads /etc/shadow"

sleep 0.5
echo "== audit trail ($AUDIT):"
cat "$AUDIT"
kill $HELMD; wait $HELMD 2>/dev/null || true
echo "== helmd stopped; its enforcement outlives it until removed:"
helmctl uninstall "${PINS[@]}" --audit-log "$AUDIT"
echo "== its hash chain:"
helmctl audit verify "$AUDIT"
