// Host checks shared by `helmctl doctor` and helmd's start-up: each check says
// what it found and, when it fails, how to fix it.
import fs from 'node:fs';
import os from 'node:os';
import { activeLsms, defaultBpfObject } from './kernel/enforcer';
import { BpfObject } from './kernel/bpf';
import { cgroup2Mount } from './control/cgroups';

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
  fix?: string;
}

export function mountedAt(type: string, where: string): boolean {
  return fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .some((l) => {
      const [, w, t] = l.split(' ');
      return w === where && t === type;
    });
}

export function runChecks(opts: { bpfObject?: string; tryLoad?: boolean } = {}): Check[] {
  const checks: Check[] = [];
  checks.push({ name: 'kernel', ok: true, detail: `${os.release()} (${os.arch()})` });

  const lsm = activeLsms();
  checks.push({
    name: 'BPF LSM active',
    ok: lsm.ok,
    detail: lsm.error ?? `active LSMs: ${lsm.list.join(',') || 'none'}`,
    fix: lsm.ok ? undefined : lsm.error ? 'mount -t securityfs securityfs /sys/kernel/security' : 'add bpf to the lsm= kernel parameter (e.g. lsm=lockdown,capability,landlock,yama,apparmor,bpf in GRUB_CMDLINE_LINUX) and reboot',
  });

  const btf = fs.existsSync('/sys/kernel/btf/vmlinux');
  checks.push({ name: 'kernel BTF', ok: btf, detail: btf ? '/sys/kernel/btf/vmlinux' : 'missing', fix: btf ? undefined : 'use a kernel built with CONFIG_DEBUG_INFO_BTF=y (every current distribution kernel is)' });

  const cg = cgroup2Mount();
  checks.push({ name: 'cgroup v2', ok: !!cg, detail: cg ? `mounted at ${cg}` : 'not mounted', fix: cg ? undefined : 'mount -t cgroup2 none /sys/fs/cgroup (or boot with systemd.unified_cgroup_hierarchy=1)' });

  const bpffs = mountedAt('bpf', '/sys/fs/bpf');
  checks.push({ name: 'bpffs', ok: bpffs, detail: bpffs ? 'mounted at /sys/fs/bpf' : 'not mounted at /sys/fs/bpf', fix: bpffs ? undefined : 'mount -t bpf bpf /sys/fs/bpf' });

  if (opts.tryLoad !== false) {
    const obj = opts.bpfObject ?? defaultBpfObject();
    if (process.getuid?.() !== 0) {
      checks.push({ name: 'BPF LSM programs load', ok: false, detail: 'not checked: needs root', fix: 'run helmctl doctor as root' });
    } else {
      try {
        BpfObject.load(obj).close();
        checks.push({ name: 'BPF LSM programs load', ok: true, detail: `${obj} loaded (not attached)` });
      } catch (e) {
        const msg = (e as Error).message.split('\n')[0];
        checks.push({
          name: 'BPF LSM programs load',
          ok: false,
          detail: msg,
          fix: /EPERM|Operation not permitted/.test(msg)
            ? 'this kernel refuses BPF LSM programs even to root; use a kernel that permits them, or the bundled VM (make demo); ' +
              'helmd --network-only enforces network rules alone here'
            : 'run make to build the BPF objects, and check the message above',
        });
      }
      try {
        BpfObject.load(obj, { networkOnly: true }).close();
        checks.push({
          name: 'network programs load',
          ok: true,
          detail: 'cgroup sock_addr programs load: connect/bind rules can be enforced (helmd --network-only on a kernel without BPF LSM: file and exec rules are then NOT enforced)',
        });
      } catch (e) {
        checks.push({ name: 'network programs load', ok: false, detail: (e as Error).message.split('\n')[0], fix: 'use a kernel with cgroup v2 BPF (CONFIG_CGROUP_BPF=y), and run make to build the BPF objects' });
      }
    }
  }
  return checks;
}

export function formatChecks(checks: Check[]): string {
  return checks
    .map((c) => `${c.ok ? 'PASS' : 'FAIL'}  ${c.name.padEnd(22)} ${c.detail}${c.fix ? `\n      fix: ${c.fix}` : ''}`)
    .join('\n');
}
