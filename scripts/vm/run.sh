#!/usr/bin/env bash
# Run one command as root inside a throwaway QEMU VM booted with Debian's 6.1
# kernel (BPF LSM enabled), seeing a writable copy of this machine's /.
#
#   run.sh [--timeout SECONDS] [--mem MB] [--env NAME[=VALUE]]... -- CMD ARGS...
#
# CMD runs in the caller's working directory (the path is the same inside), with
# PATH, HOME=/root, CI, HELM_* and any --env variables; stdin is empty. Its
# stdout and stderr arrive together on our stdout; boot noise does not. Exits
# with CMD's status; 124 on timeout; 125 if the VM died without reporting one.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() { sed -n '5p' "$0" >&2; exit 2; }
timeout=1200 mem=2048 envs=()
while (($#)); do
  case $1 in
    --timeout) timeout=${2:?}; shift 2 ;;
    --mem)     mem=${2:?}; shift 2 ;;
    --env)     envs+=("${2:?}"); shift 2 ;;
    --)        shift; break ;;
    *)         usage ;;
  esac
done
(($#)) || usage
[[ $PWD != /tmp && $PWD != /tmp/* ]] || die "the VM has its own empty /tmp; run from elsewhere"

need_pkgs qemu-system-x86_64:qemu-system-x86 timeout:coreutils
bash "$VM_DIR/fetch-kernel.sh" >/dev/null
bash "$VM_DIR/build-initramfs.sh" >/dev/null
kernel=$(readlink -f "$CACHE/kernel")
image="$kernel/vmlinux"  # see fetch-kernel.sh: boots 5 s faster than vmlinuz
[[ -e $image ]] || image="$kernel/vmlinuz"

# The VM reads its job from the checkout through 9p (its /tmp is empty).
# mktemp gives each concurrent run its own file.
job=$(mktemp "$CACHE/job-XXXXXXXX.sh")
console="${job%.sh}.console"
trap '[[ -n ${HELM_VM_KEEP:-} ]] || rm -f "$job" "$console"' EXIT
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

qemu=(qemu-system-x86_64
  -accel tcg -cpu max -m "$mem" -smp 2  # -enable-kvm hangs on these hosts
  -nographic -nodefaults -no-user-config -no-reboot
  -monitor none -serial stdio           # console = our stdout, no monitor
  -kernel "$image" -initrd "$CACHE/initrd.gz"
  -append "console=ttyS0 lsm=lockdown,capability,landlock,yama,bpf quiet loglevel=3 panic=-1 helm.job=$job"
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap)

# Pass the console through, minus everything up to HELM_VM_START (kept in
# $console for diagnostics), and pick the status out of the exit marker.
# lastpipe keeps the loop in this shell so $code survives it.
shopt -s lastpipe
started=0 code=
set +e  # a failing qemu is handled below, not by errexit
timeout --kill-after=10 "$timeout" "${qemu[@]}" </dev/null |
while IFS= read -r line || [[ -n $line ]]; do
  if ((!started)) || [[ -n $code ]]; then
    printf '%s\n' "$line" >>"$console"
    [[ $line == *HELM_VM_START ]] && started=1
  elif [[ $line =~ ^(.*)HELM_VM_EXIT=([0-9]+)$ ]]; then
    printf '%s' "${BASH_REMATCH[1]}"  # the job's unterminated last line
    code=${BASH_REMATCH[2]}
  else
    printf '%s\n' "$line"
  fi
done
qemu_status=${PIPESTATUS[0]}
set -e

if [[ -n $code ]]; then exit "$code"; fi
if ((qemu_status == 124 || qemu_status == 137)); then
  echo "vm: error: timed out after ${timeout}s; VM killed. Console before the job:" >&2
  status=124
else
  echo "vm: error: VM stopped without an exit status (qemu: $qemu_status). Console before the job:" >&2
  status=125
fi
tail -n 30 "$console" >&2 || true
exit "$status"
