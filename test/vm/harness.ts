// Shared by the VM suites: a helmd started the way the README starts it, agents run
// with helmctl, and the audit trail read back. Runs as root in the QEMU kernel.
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { scratchPins } from '../support/scratch-pins';

export const ROOT = path.resolve(__dirname, '..', '..', '..');
export const HELMD = path.join(ROOT, 'bin', 'helmd');
export const HELMCTL = path.join(ROOT, 'bin', 'helmctl');
export const HELM_ENTER = path.join(ROOT, 'build', 'helm-enter');
export const PROBE = path.join(ROOT, 'test', 'vm', 'probe.sh');

/** The allow rule every test agent needs to run a shell and coreutils at all (a YAML list item, 4-space indent). */
export const RUNTIME_RULE = '    - { id: runtime, exec: [/usr/bin/, /usr/lib/], read: [/usr/, /etc/ld.so.cache, /dev/null], write: [/dev/null] }';

/** Fails (never skips) when not in a kernel with BPF LSM: this suite exists to touch one. */
export function requireBpfLsm(): string | undefined {
  if (process.getuid?.() !== 0) return 'the VM suite must run as root';
  try {
    const lsm = fs.readFileSync('/sys/kernel/security/lsm', 'utf8');
    if (!lsm.split(',').includes('bpf')) return `BPF LSM not active (lsm=${lsm.trim()})`;
  } catch (e) {
    return `cannot read /sys/kernel/security/lsm: ${(e as Error).message}`;
  }
  return undefined;
}

export interface Daemon {
  proc: ChildProcess;
  socket: string;
  audit: string;
  log: () => string;
  stop: () => Promise<number | null>;
}

/**
 * helmd as the README starts it, pinning into a directory of its own; stop()
 * stops it and then removes its enforcement (helmctl uninstall, audited in its
 * trail), as these tests expect of a helmd they are done with.
 */
export async function startHelmd(args: { policy: string[]; audit: string; socket: string; extra?: string[] }): Promise<Daemon> {
  let output = '';
  const pins = scratchPins('test');
  const proc = spawn(HELMD, ['--policy', ...args.policy, '--audit-log', args.audit, '--socket', args.socket, ...pins.args, ...(args.extra ?? [])], { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout!.on('data', (d) => (output += d));
  proc.stderr!.on('data', (d) => (output += d));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  // Loading and verifying the programs takes minutes in a TCG VM on a loaded machine.
  const deadline = Date.now() + 600_000;
  while (!/helmd enforcing|helmd running in DRY-RUN/.test(output)) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill('SIGKILL');
      await exited;
      pins.remove(args.audit);
      throw new Error(`helmd did not start:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  let removed = false;
  return {
    proc,
    socket: args.socket,
    audit: args.audit,
    log: () => output,
    stop: async () => {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      const code = await exited;
      if (!removed) {
        removed = true;
        const r = pins.remove(args.audit);
        if (r.status !== 0) throw new Error(`could not remove the test helmd's enforcement: ${r.output}`);
      }
      return code;
    },
  };
}

export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function helmctl(args: string[]): RunResult {
  const r = spawnSync(HELMCTL, args, { encoding: 'utf8', timeout: 180_000, maxBuffer: 256 * 1024 * 1024 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** helmctl without blocking the event loop: for tests whose own servers must answer the agent meanwhile. */
export function helmctlAsync(args: string[], timeoutMs = 180_000): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(HELMCTL, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** Runs the probe as a governed agent; returns the per-case outcomes and the probe shell's pid. */
export function probe(d: Daemon, opts: { role: string; name: string; dryRun?: boolean }, cases: string[]): { pid: number; cases: Map<string, string>; raw: RunResult } {
  // The script goes in as an argument: the agent's policy need not let it read the checkout.
  const script = fs.readFileSync(PROBE, 'utf8');
  const raw = helmctl(['run', '--socket', d.socket, '--role', opts.role, '--name', opts.name, ...(opts.dryRun ? ['--dry-run'] : []), '--', 'sh', '-c', script, 'probe', ...cases]);
  const out = new Map<string, string>();
  let pid = 0;
  for (const line of raw.stdout.split('\n')) {
    const m = /^CASE (\S+) (.*)$/.exec(line);
    if (m) out.set(m[1], m[2]);
    const p = /^PID (\d+)$/.exec(line);
    if (p) pid = Number(p[1]);
  }
  return { pid, cases: out, raw };
}

export interface AuditLine {
  type: string;
  decision: string;
  op: string;
  path: string | null;
  pid: number;
  ppid: number;
  uid: number;
  exe: string | null;
  comm: string;
  agent: string | null;
  role: string | null;
  policy: string | null;
  rule: string;
  mode: string;
  reason: string;
  generation: number;
  ts: string;
  seq: number;
  cgroup: { id: string; path: string | null };
}

/**
 * Decision, dns, control and lost lines, waiting until `until` holds (the
 * daemon drains asynchronously). The trail's other lines (file, start, stop,
 * counters: these name an agent at the top level like decisions do) are left
 * out: test/vm/audit.test.ts reads those.
 */
export async function auditLines(file: string, until: (lines: AuditLine[]) => boolean = () => true, timeoutMs = 20_000): Promise<AuditLine[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
    // helmd may be in the middle of writing a batch: only complete lines count
    const complete = text.slice(0, text.lastIndexOf('\n') + 1);
    const lines = complete
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as AuditLine)
      .filter((l) => l.type === 'decision' || l.type === 'dns' || l.type === 'control' || l.type === 'lost');
    if (until(lines) || Date.now() > deadline) return lines;
    await new Promise((r) => setTimeout(r, 200));
  }
}

export function sh(cmd: string): string {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd}: ${r.stderr}`);
  return r.stdout;
}
