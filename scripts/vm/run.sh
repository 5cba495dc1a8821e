#!/usr/bin/env bash
# Run one command as root inside a throwaway QEMU VM booted with Debian's 6.1
# kernel (BPF LSM enabled), seeing a writable copy of this machine's /.
#
#   run.sh [--timeout SECONDS] [--mem MB] [--env NAME[=VALUE]]... [--append KERNEL-ARG]... -- CMD ARGS...
#
# CMD runs in the caller's working directory (the path is the same inside), with
# PATH, HOME=/root, CI, HELM_* and any --env variables; stdin is empty. Its
# stdout and stderr arrive together on our stdout (a pipe inside, not a tty);
# kernel errors logged meanwhile go to our stderr. Exits with CMD's status;
# 124 on timeout; 125 if the VM died without reporting one.
# HELM_VM_KEEP=1 keeps .cache/vm/job-* (job file, console log) for debugging.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() { sed -n '5p' "$0" >&2; exit 2; }
timeout=1200 mem=2048 envs=() kargs=()
while (($#)); do
  case $1 in
    --timeout) timeout=${2:?}; shift 2 ;;
    --mem)     mem=${2:?}; shift 2 ;;
    --env)     envs+=("${2:?}"); shift 2 ;;
    --append)  [[ ${2:?} =~ ^[A-Za-z0-9_.,=-]+$ ]] || die "bad --append $2"; kargs+=("$2"); shift 2 ;;
    --)        shift; break ;;
    *)         usage ;;
  esac
done
(($#)) || usage
[[ $PWD != /tmp ]] || die "the VM has its own empty /tmp; run from a checkout (one under /tmp is fine)"

need_pkgs qemu-system-x86_64:qemu-system-x86 timeout:coreutils
bash "$VM_DIR/fetch-kernel.sh" >/dev/null
bash "$VM_DIR/build-initramfs.sh" >/dev/null
kernel=$(readlink -f "$CACHE/kernel")
image="$kernel/vmlinux"  # see fetch-kernel.sh: boots 5 s faster than vmlinuz
[[ -e $image ]] || image="$kernel/vmlinuz"

# The VM reads its job from the checkout through 9p (its /tmp is empty).
# mktemp gives each concurrent run its own file.
job=$(mktemp "$CACHE/job-XXXXXXXX.sh")
base=${job%.sh} console=${job%.sh}.console
trap '[[ -n ${HELM_VM_KEEP:-} ]] || rm -f "$base".*' EXIT
[[ $job != *[[:space:]]* ]] || die "checkout path must not contain spaces: $job"

# Quote for sh: wrap in single quotes, and spell each ' as '\''.
q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
{
  echo "# helm VM job written by scripts/vm/run.sh"
  for name in $(compgen -e); do
    if [[ $name == CI || ($name == HELM_* && $name != HELM_VM_APT_UPDATED) ]]; then
      echo "export $name=$(q "${!name}")"
    fi
  done
  for e in "${envs[@]}"; do
    name=${e%%=*}
    [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "bad --env $e"
    [[ $e == *=* ]] && value=${e#*=} || value=${!name-}
    echo "export $name=$(q "$value")"
  done
  echo "cd $(q "$PWD") || exit 125"
  printf 'exec'; for a in "$@"; do printf ' %s' "$(q "$a")"; done; echo
} >"$job"

# Two channels: the job's output on a virtio-serial port wired to our stdout,
# and the serial console (boot log, kernel errors, exit marker) in $console.
# The port uses a write-only file chardev: a stdio one reads stdin, and at
# EOF QEMU marks the port closed and the guest's writes block forever.
# qemu's stdout is a pipe to cat, so opening /dev/stdout cannot truncate a
# file our caller redirected us to.
qemu=(qemu-system-x86_64
  -accel tcg -cpu max -m "$mem" -smp 2  # -enable-kvm hangs on these hosts
  -nographic -nodefaults -no-user-config -no-reboot -monitor none
  -serial "file:$console"
  -device virtio-serial-pci -chardev file,id=out,path=/dev/stdout
  -device virtserialport,chardev=out,name=helm.out
  -kernel "$image" -initrd "$CACHE/initrd.gz"
  -append "console=ttyS0 lsm=lockdown,capability,landlock,yama,bpf quiet loglevel=3 panic=-1 ${kargs[*]-} helm.job=$job"
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap)

# --foreground keeps qemu in our process group, so Ctrl-C or a CI runner
# killing the group stops it as well; the traps cover a kill aimed at us
# alone (bash only runs them promptly while in "wait", hence the "&").
set +e
{ timeout --foreground --kill-after=10 "$timeout" "${qemu[@]}" -pidfile "$base.pid" </dev/null
  echo $? >"$base.rc"; } | cat &
stop() { kill "$(cat "$base.pid" 2>/dev/null)" 2>/dev/null; wait; }
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM HUP
wait $!  # cat ends once qemu is gone and the status is written
set -e
qemu_status=$(cat "$base.rc")

# Drop the \r the serial console adds and SeaBIOS's terminal escapes.
sed 's/\r$//; s/\x1bc//g; s/\x1b\[[0-9;?]*[A-Za-z]//g' "$console" >"$base.txt"
mv "$base.txt" "$console"
code=$(sed -n 's/^HELM_VM_EXIT=\([0-9]*\)$/\1/p' "$console" | tail -n1)
if [[ -n $code ]]; then
  # Kernel messages printed while the job ran (errors only: loglevel=3) are
  # worth seeing; an oops or a BPF warning can explain a failure.
  sed -n '/HELM_VM_START$/,/^HELM_VM_EXIT=/{/HELM_VM_START$/d;/^HELM_VM_EXIT=/d;s/^/vm console: /p}' \
    "$console" >&2
  exit "$code"
fi
if ((qemu_status == 124 || qemu_status == 137)); then
  echo "vm: error: timed out after ${timeout}s; VM killed. Console:" >&2
  status=124
else
  echo "vm: error: VM stopped without an exit status (qemu: $qemu_status). Console:" >&2
  status=125
fi
tail -n 30 "$console" >&2 || true
exit "$status"
