#!/usr/bin/env bash
# Build .cache/vm/initrd.gz: static busybox + the kernel's 9p/overlay modules +
# scripts/vm/init as /init. Rebuilt only when one of those inputs changes.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

need_pkgs cpio:cpio gzip:gzip
# The dynamic "busybox" package also ships /bin/busybox but cannot run from an
# initramfs without libc; insist on the static build.
dpkg -s busybox-static >/dev/null 2>&1 || { apt_update_once; DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >&2; }
BUSYBOX=/bin/busybox

kernel="$CACHE/kernel"
lock_cache
[[ -e $kernel/.complete ]] || die "no kernel in $kernel; run fetch-kernel.sh first"

out="$CACHE/initrd.gz"
# The stamp names every input by content, so edits to init, a new kernel or a
# busybox upgrade all trigger a rebuild.
stamp=$(cd "$kernel" && sha256sum "$VM_DIR/init" "$BUSYBOX" modules.list modules/*.ko | sha256sum)
stamp="${stamp%% *} $(readlink "$kernel")"
if [[ -e $out && $(cat "$out.stamp" 2>/dev/null) == "$stamp" ]]; then
  echo "$out"
  exit 0
fi

log "building initramfs"
root=$(mktemp -d "$CACHE/.initramfs.XXXXXX")
chmod 0755 "$root"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,etc,lib/modules}
cp "$BUSYBOX" "$root/bin/busybox"
install -m 0755 "$VM_DIR/init" "$root/init"
cp "$kernel"/modules/*.ko "$root/lib/modules/"
cp "$kernel/modules.list" "$root/etc/modules.list"
# Without /dev/console in the archive the kernel starts /init with no stdio.
mknod -m 600 "$root/dev/console" c 5 1
mknod -m 666 "$root/dev/null" c 1 3

(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -n >"$out.tmp"
mv "$out.tmp" "$out"
echo "$stamp" >"$out.stamp"
echo "$out"
