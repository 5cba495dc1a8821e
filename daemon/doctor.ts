// Host checks shared by `helmctl doctor` and helmd's start-up: each check says
// what it found and, when it fails, how to fix it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { activeLsms, defaultBpfObject } from './kernel/enforcer';
import { BpfObject } from './kernel/bpf';
import { native } from './kernel/native';
import { C } from './kernel/layout';
import { identifyFile, pinnedMapSizes, readPins, type PinStatus } from './kernel/pins';
import { cgroup2Mount } from './control/cgroups';
import { call } from './control/client';
import { DEFAULTS, groupId, type HelmdConfig } from './config';

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
  fix?: string;
}

/** bpf_loop, which the programs use to walk paths and directories, arrived in Linux 5.17. */
export const MIN_KERNEL: [number, number] = [5, 17];

export function mountedAt(type: string, where: string): boolean {
  return fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .some((l) => {
      const [, w, t] = l.split(' ');
      return w === where && t === type;
    });
}

/** The lsm= value to boot with: the active list with bpf added (what the kernel runs now, plus bpf). */
export function lsmBootValue(active: string[]): string {
  const list = active.length ? [...active] : ['lockdown', 'capability', 'landlock', 'yama', 'apparmor'];
  if (!list.includes('bpf')) list.push('bpf');
  return list.join(',');
}

export function kernelVersionCheck(release = os.release()): Check {
  const m = /^(\d+)\.(\d+)/.exec(release);
  const ok = !!m && (Number(m[1]) > MIN_KERNEL[0] || (Number(m[1]) === MIN_KERNEL[0] && Number(m[2]) >= MIN_KERNEL[1]));
  return {
    name: 'kernel',
    ok,
    detail: `${release} (${os.arch()})${ok ? '' : `: helm needs ${MIN_KERNEL.join('.')} or later (bpf_loop)`}`,
    fix: ok ? undefined : `boot a kernel ${MIN_KERNEL.join('.')} or later (Debian 12's 6.1 works)`,
  };
}

export function runChecks(opts: { bpfObject?: string; tryLoad?: boolean } = {}): Check[] {
  const checks: Check[] = [];
  checks.push(kernelVersionCheck());

  const lsm = activeLsms();
  const cmdline = (() => {
    try {
      return /(?:^|\s)lsm=(\S+)/.exec(fs.readFileSync('/proc/cmdline', 'utf8'))?.[1];
    } catch {
      return undefined;
    }
  })();
  checks.push({
    name: 'BPF LSM active',
    ok: lsm.ok,
    detail: lsm.error ?? `active LSMs: ${lsm.list.join(',') || 'none'}${cmdline ? ` (booted with lsm=${cmdline})` : ''}`,
    fix: lsm.ok
      ? undefined
      : lsm.error
        ? 'mount -t securityfs securityfs /sys/kernel/security'
        : `boot with lsm=${lsmBootValue(lsm.list)}: add it to GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub, reboot`,
  });

  const btf = fs.existsSync('/sys/kernel/btf/vmlinux');
  checks.push({ name: 'kernel BTF', ok: btf, detail: btf ? '/sys/kernel/btf/vmlinux' : 'missing', fix: btf ? undefined : 'use a kernel built with CONFIG_DEBUG_INFO_BTF=y (every current distribution kernel is)' });

  const cg = cgroup2Mount();
  checks.push({ name: 'cgroup v2', ok: !!cg, detail: cg ? `mounted at ${cg}` : 'not mounted', fix: cg ? undefined : 'mount -t cgroup2 none /sys/fs/cgroup (or boot with systemd.unified_cgroup_hierarchy=1)' });

  const bpffs = mountedAt('bpf', '/sys/fs/bpf');
  checks.push({ name: 'bpffs', ok: bpffs, detail: bpffs ? 'mounted at /sys/fs/bpf' : 'not mounted at /sys/fs/bpf', fix: bpffs ? undefined : 'mount -t bpf bpf /sys/fs/bpf (systemd mounts it at boot)' });

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

/** What is pinned, and whether the installed object would re-adopt it. */
export function pinnedStateCheck(pinDir: string, bpfObject = defaultBpfObject()): Check {
  const name = 'pinned enforcement';
  if (process.getuid?.() !== 0) return { name, ok: false, detail: 'not checked: needs root (bpffs is root-only)', fix: 'run helmctl doctor as root' };
  let status: PinStatus;
  try {
    status = readPins(pinDir);
  } catch (e) {
    return { name, ok: false, detail: `cannot read ${pinDir}: ${(e as Error).message}`, fix: 'mount -t bpf bpf /sys/fs/bpf' };
  }
  if (status.problem) return { name, ok: false, detail: `unusable: ${status.problem}`, fix: 'helmctl uninstall (audited; removes enforcement), then start helmd' };
  if (!status.current || !status.meta) {
    return { name, ok: false, detail: `nothing pinned at ${pinDir}: no agent is governed`, fix: 'start helmd (systemctl start helmd); it pins its programs and maps there' };
  }
  const m = status.meta;
  const created = new Date(Number(m.createdNs / 1_000_000n)).toISOString();
  let relation = '';
  try {
    // Compared as helmd would load it: with the pinned rings' sizes (a helmd started with
    // --audit-deny-ring/--audit-allow-ring pins other sizes than helm.h's, and re-adopts them
    // when started the same way), and network-only when only the network programs are linked.
    const sizes = pinnedMapSizes(status, ['deny_events', 'allow_events']);
    const networkOnly = sameMembers(status.links, identifyFile(bpfObject, { networkOnly: true, sizes }).programs);
    const mine = identifyFile(bpfObject, { networkOnly, sizes });
    relation =
      mine.layout !== m.layout
        ? '; the installed helmd has another layout: it will rebuild the maps and move the links over on start'
        : mine.object !== m.object
          ? '; the installed helmd has new programs for the same layout: it will swap them in on start'
          : '; the installed helmd re-adopts it as it is';
    const deny = sizes.deny_events ?? C.HELM_DENY_RING_BYTES;
    const allow = sizes.allow_events ?? C.HELM_ALLOW_RING_BYTES;
    if (deny !== C.HELM_DENY_RING_BYTES || allow !== C.HELM_ALLOW_RING_BYTES) {
      relation += ` (started with --audit-deny-ring ${deny} --audit-allow-ring ${allow}; with other sizes it rebuilds the maps)`;
    }
  } catch (e) {
    relation = `; cannot compare with ${bpfObject}: ${(e as Error).message.split('\n')[0]}`;
  }
  const changing = m.state === 2 ? ' (marked CHANGING: an upgrade was interrupted; the next helmd start finishes it)' : '';
  return {
    name,
    ok: true,
    detail: `${pinDir}/${status.current} by helm ${m.version} since ${created}: ${status.links.length} programs, ${status.maps.length} maps${changing}${relation}`,
  };
}

interface StatusReply {
  version: string;
  generation: number;
  policies: string[];
  agents: number;
  events_lost: string;
}

/** helmd over its socket, and the policy it runs. */
export async function daemonChecks(socket: string): Promise<Check[]> {
  try {
    const s = await call<StatusReply>(socket, 'SystemService', 'Status', {}, 15_000);
    const loaded = s.generation > 0 && s.policies.length > 0;
    return [
      { name: 'helmd reachable', ok: true, detail: `helmd ${s.version} at ${socket}, ${s.agents} agents` },
      {
        name: 'policy loaded',
        ok: loaded,
        detail: loaded ? `generation ${s.generation}: ${s.policies.join(', ')}` : 'no policy installed',
        fix: loaded ? undefined : 'give helmd policies (policy: in /etc/helm/helmd.yaml) and restart it',
      },
    ];
  } catch (e) {
    return [
      { name: 'helmd reachable', ok: false, detail: (e as Error).message, fix: `start helmd (systemctl start helmd; journalctl -u helmd says why it stopped), or name its socket: --socket PATH` },
      { name: 'policy loaded', ok: false, detail: 'not checked: helmd is not reachable', fix: 'start helmd' },
    ];
  }
}

/** Can the trail be appended to, with room to grow? */
export function auditCheck(file: string): Check {
  const name = 'audit writable';
  const dir = path.dirname(file);
  try {
    if (fs.existsSync(file)) fs.accessSync(file, fs.constants.W_OK);
    else fs.accessSync(fs.existsSync(dir) ? dir : path.dirname(dir), fs.constants.W_OK);
  } catch (e) {
    return { name, ok: false, detail: `${file}: ${(e as Error).message}`, fix: `make ${dir} writable by root (mkdir -p ${dir}; chmod 0750 ${dir})` };
  }
  try {
    const st = fs.statfsSync(fs.existsSync(dir) ? dir : '/');
    const free = st.bavail * st.bsize;
    const mib = Math.floor(free / (1 << 20));
    if (free < 64 * (1 << 20)) return { name, ok: false, detail: `${file}: only ${mib} MiB free`, fix: `free space on the filesystem of ${dir}` };
    return { name, ok: true, detail: `${file} (${mib} MiB free)` };
  } catch (e) {
    return { name, ok: false, detail: `${file}: ${(e as Error).message}` };
  }
}

/**
 * Audit timestamps are the kernel's boot clock plus the wall-clock time of boot
 * (taken when helmd starts): the wall clock must be set, and agree with the boot
 * time the kernel reports.
 */
export function clockCheck(): Check {
  const name = 'clock';
  const now = Date.now();
  const offsetMs = Number(BigInt(native().helm_realtime_offset_ns()) / 1_000_000n);
  const btime = Number(/^btime (\d+)$/m.exec(fs.readFileSync('/proc/stat', 'utf8'))?.[1] ?? NaN) * 1000;
  const bootIso = new Date(offsetMs).toISOString();
  if (new Date(now).getUTCFullYear() < 2024) {
    return { name, ok: false, detail: `the wall clock says ${new Date(now).toISOString()}`, fix: 'set the clock (systemd-timesyncd or chrony) and restart helmd: audit times would be wrong' };
  }
  if (offsetMs <= 0 || offsetMs > now) return { name, ok: false, detail: `boot time ${bootIso} is not in the past`, fix: 'set the clock and restart helmd' };
  if (Number.isFinite(btime) && Math.abs(btime - offsetMs) > 5000) {
    return { name, ok: false, detail: `boot time ${bootIso}, but the kernel says ${new Date(btime).toISOString()}`, fix: 'the clock moved since boot; restart helmd after it settles so audit times are right' };
  }
  return { name, ok: true, detail: `wall clock ${new Date(now).toISOString()}, booted ${bootIso}` };
}

/** Everything: the host, what is pinned, helmd and its policy, the trail, the clock, the config. */
export async function runAllChecks(opts: { config?: HelmdConfig; configFile?: string; configError?: string; socket?: string; bpfObject?: string }): Promise<Check[]> {
  const cfg = opts.config;
  const checks = runChecks({ bpfObject: opts.bpfObject });
  if (opts.configError) checks.push({ name: 'configuration', ok: false, detail: opts.configError, fix: `correct ${opts.configFile}` });
  else if (opts.configFile) checks.push({ name: 'configuration', ok: true, detail: opts.configFile });
  if (cfg?.socket.group && groupId(cfg.socket.group) === undefined) {
    checks.push({ name: 'socket group', ok: false, detail: `group ${cfg.socket.group} does not exist`, fix: `groupadd --system ${cfg.socket.group} (make install does)` });
  }
  checks.push(pinnedStateCheck(cfg?.pinDir ?? DEFAULTS.pinDir, opts.bpfObject));
  checks.push(...(await daemonChecks(opts.socket ?? cfg?.socket.path ?? DEFAULTS.socket.path)));
  checks.push(auditCheck(cfg?.audit.log ?? DEFAULTS.audit.log));
  checks.push(clockCheck());
  return checks;
}

export function formatChecks(checks: Check[]): string {
  return checks
    .map((c) => `${c.ok ? 'PASS' : 'FAIL'}  ${c.name.padEnd(22)} ${c.detail}${c.fix ? `\n      fix: ${c.fix}` : ''}`)
    .join('\n');
}

function sameMembers(a: string[], b: string[]): boolean {
  return a.length === b.length && [...a].sort().every((x, i) => x === [...b].sort()[i]);
}
