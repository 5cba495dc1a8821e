#!/usr/bin/env bash
# Runs inside the VM (a kernel with BPF LSM): every VM test file, one after the
# other, each as its own node process. tap's own runner is skipped here: its
# start-up costs minutes under software emulation.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
for f in dist/test/vm/*.test.js; do
  echo "# vm suite: $f"
  node "$f" || status=1
done
exit $status
