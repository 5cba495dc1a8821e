// Shared set-up for the host-privileged suite: the root guard (the suite fails, never skips,
// without root), bpffs/securityfs mounts, scratch cgroups that are always removed, and a
// bounded child-process runner.
//
// tap runs every .js in dist/test/host, this one included. Run as a test file itself, it
// checks the guard: every sibling *.test.js, started as user nobody, must FAIL with the
// guard's message rather than pass or skip.
import { mountedAt } from '../../daemon/doctor';
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { cgroup2Mount } from '../../daemon/control/cgroups';

/** The checkout: tests run from dist/test/host. */
export const REPO = path.resolve(__dirname, '../../..');
export const BUILD = path.join(REPO, 'build');
export const NEEDS_ROOT = 'host-privileged suite needs root';

/** true when we may run; otherwise records a failure (never a skip) and returns false. */
export function requireRoot(): boolean {
  if (process.getuid?.() === 0) return true;
  t.fail(NEEDS_ROOT, { uid: process.getuid?.() });
  return false;
}


/** What the helpers need of a test: somewhere to register clean-up. */
export interface Scope {
  teardown(fn: () => unknown): void;
}

/** Mounts bpffs and securityfs when missing; unmounts at the end only what it mounted. */
export function ensureKernelMounts(scope: Scope = t): void {
  for (const [type, where] of [
    ['bpf', '/sys/fs/bpf'],
    ['securityfs', '/sys/kernel/security'],
  ] as const) {
    if (mountedAt(type, where)) continue;
    execFileSync('mount', ['-t', type, type, where]);
    scope.teardown(() => {
      try {
        execFileSync('umount', [where]);
      } catch {
        /* busy: something else started using it */
      }
    });
  }
}

export function v2Mount(): string {
  const m = cgroup2Mount();
  if (!m) throw new Error('no cgroup v2 hierarchy is mounted');
  return m;
}

/** Kills every process below `dir` and removes the cgroups, deepest first. */
export async function removeCgroupTree(dir: string): Promise<void> {
  if (!fs.existsSync(dir)) return;
  for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
    if (d.isDirectory()) await removeCgroupTree(path.join(dir, d.name));
  }
  for (let attempt = 0; ; attempt++) {
    let procs: number[] = [];
    try {
      procs = fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
    } catch {
      /* gone */
    }
    for (const pid of procs) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    try {
      fs.rmdirSync(dir);
      return;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (attempt >= 100) throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** A fresh cgroup directly below the v2 mount, removed (with anything left in it) at teardown. */
export function scratchCgroup(scope: Scope, tag: string): string {
  const dir = path.join(v2Mount(), `helm-host-${tag}-${process.pid}`);
  fs.mkdirSync(dir);
  scope.teardown(() => removeCgroupTree(dir));
  return dir;
}

/** A fresh temporary directory, removed at teardown. */
export function scratchDir(scope: Scope, tag: string): string {
  const dir = fs.mkdtempSync(path.join(fs.realpathSync('/tmp'), `helm-host-${tag}-`));
  scope.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  timedOut: boolean;
}

/** Runs a command to completion, killing it (SIGKILL) after timeoutMs. */
export function run(cmd: string, args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; cwd?: string; uid?: number; gid?: number } = {}): Promise<RunResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd ?? REPO, env: opts.env ?? process.env, uid: opts.uid, gid: opts.gid, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 60_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started, timedOut });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Run directly (tap runs this file too): the guard makes each test file fail without root.

if (require.main === module && requireRoot()) {
  const nobody = 65534;
  const files = fs
    .readdirSync(__dirname)
    .filter((f) => f.endsWith('.test.js'))
    .sort();

  t.test('the suite has test files to guard', async (t) => {
    t.ok(files.length >= 4, `found ${files.join(', ')}`);
  });

  for (const f of files) {
    t.test(`${f} fails (does not pass or skip) without root`, async (t) => {
      const r = await run(process.execPath, [path.join(__dirname, f)], { uid: nobody, gid: nobody, cwd: '/', timeoutMs: 60_000, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/nonexistent' } });
      t.equal(r.timedOut, false, 'finished');
      t.not(r.code, 0, `exit status ${r.code} (non-zero)`);
      t.match(r.stdout, /^not ok \d+ - host-privileged suite needs root/m, 'reports the guard failure');
      t.notMatch(r.stdout, /^ok \d+ /m, 'no test passed');
      t.notMatch(r.stdout, /# SKIP/, 'nothing skipped');
    });
  }
}
