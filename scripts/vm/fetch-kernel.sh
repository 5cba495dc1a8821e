#!/usr/bin/env bash
# Fetch the Debian 6.1 kernel used by the VM tests (it has BPF LSM, unlike the
# host) and unpack vmlinuz plus the modules the initramfs needs into
#   .cache/vm/kernel-<release>/{vmlinuz,modules/*.ko,modules.list}
# and point .cache/vm/kernel at it. Idempotent: a finished release is reused.
# Also writes vmlinux, the uncompressed kernel, when it can (faster boots).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# Load order matters: insmod does no dependency resolution.
# virtio_console carries the job's output (see run.sh).
MODULES=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
         netfs fscache 9pnet 9pnet_virtio 9p overlay virtio_console)

need_pkgs dpkg-deb:dpkg xz:xz-utils
lock_cache

# The meta package names the current ABI, e.g. linux-image-6.1.0-57-amd64.
# apt-cache takes ~1 s here (images often disable its cache), so remember the
# answer until apt's lists change.
resolved="$CACHE/kernel.pkg"
ask_apt() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n1 || true
}
resolve() {
  if [[ ! -s $resolved || /var/lib/apt/lists -nt $resolved ]]; then
    local dep
    dep=$(ask_apt)
    if [[ -z $dep ]]; then apt_update_once; dep=$(ask_apt); fi
    [[ -n $dep ]] || die "apt-cache does not know linux-image-amd64"
    echo "$dep" >"$resolved"
  fi
  pkg=$(cat "$resolved")
  release=${pkg#linux-image-}
  dest="$CACHE/kernel-$release"
}
resolve

# .complete records the module list too, so editing MODULES refetches.
if [[ $(cat "$dest/.complete" 2>/dev/null) != "${MODULES[*]}" ]]; then
  work=$(mktemp -d "$CACHE/.fetch.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  # The sandbox user is root because _apt cannot write into the checkout.
  download() {
    log "fetching $pkg"
    (cd "$work" && apt-get -q -o APT::Sandbox::User=root download "$pkg" >&2)
  }
  if ! download; then
    # Old ABIs vanish from the security archive, so stale lists mean a 404:
    # refresh them and ask again which image is current.
    apt_update_once
    rm -f "$resolved"
    resolve
    download
  fi
  deb=("$work"/*.deb)

  # Pull only what we use out of the ~400 MB payload.
  mapfile -t wanted < <(dpkg-deb --fsys-tarfile "${deb[0]}" | tar -t |
    grep -E "^\./boot/vmlinuz-|/modules\.builtin$|/($(IFS='|'; echo "${MODULES[*]}"))\.ko(\.xz)?$")
  dpkg-deb --fsys-tarfile "${deb[0]}" | tar -x -C "$work" "${wanted[@]}"

  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp/modules"
  : >"$dest.tmp/modules.list"
  cp "$work"/boot/vmlinuz-* "$dest.tmp/vmlinuz"
  # Under TCG the bzImage spends ~5 s of every boot decompressing itself.
  # The xz payload inside it is a plain ELF vmlinux with a PVH entry point,
  # which QEMU boots directly; run.sh prefers it when it exists.
  off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$dest.tmp/vmlinuz" | cut -d: -f1 | head -n1 || true)
  if [[ -n $off ]]; then
    tail -c +$((off + 1)) "$dest.tmp/vmlinuz" >"$work/payload.xz"
    if xz -dc --single-stream "$work/payload.xz" >"$work/vmlinux" 2>/dev/null &&
       [[ $(head -c4 "$work/vmlinux") == $'\x7fELF' ]]; then
      mv "$work/vmlinux" "$dest.tmp/vmlinux"
    fi
  fi
  for m in "${MODULES[@]}"; do
    f=$(find "$work/lib/modules" -name "$m.ko" -o -name "$m.ko.xz" | head -n1)
    if [[ -z $f ]]; then
      # Built into this kernel (or absent): nothing to load.
      grep -q "/$m\.ko$" "$work"/lib/modules/*/modules.builtin || log "note: no module $m"
      continue
    fi
    # Busybox insmod cannot read compressed modules.
    case $f in
      *.xz) xz -dc "$f" >"$dest.tmp/modules/$m.ko" ;;
      *)    cp "$f" "$dest.tmp/modules/$m.ko" ;;
    esac
    echo "$m" >>"$dest.tmp/modules.list"
  done
  echo "${MODULES[*]}" >"$dest.tmp/.complete"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
fi

ln -sfn "kernel-$release" "$CACHE/kernel"
echo "$dest"
