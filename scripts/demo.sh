#!/usr/bin/env bash
# Runs the demo natively when this kernel runs BPF LSM programs, otherwise in the
# bundled QEMU VM (Debian's kernel booted with lsm=...,bpf) — and says which.
set -euo pipefail
cd "$(dirname "$0")/.."
if bin/helmctl doctor >/tmp/helm-doctor.txt 2>&1; then
  echo "== this kernel runs BPF LSM programs: running the demo here"
  exec bash scripts/demo-agent.sh
fi
cat /tmp/helm-doctor.txt
echo
echo "== this kernel refuses BPF LSM programs (see doctor above): running the same demo inside the bundled VM"
echo "   (Debian's kernel under QEMU, lsm=...,bpf; the host's / is mounted read-only with a writable overlay)"
exec bash scripts/vm/run.sh -- bash scripts/demo-agent.sh
