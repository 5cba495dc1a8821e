// The measured operations, the contexts a worker runs them in, and how many
// iterations each gets. Shared by the native and the VM halves of the run.
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import type { BenchLayout } from './policies';
import type { Plan, Variant } from './worker';

export const ROOT = path.resolve(__dirname, '..', '..');
export const BUILD = path.join(ROOT, 'build');
export const DRIVER = path.join(BUILD, 'bench-driver');
export const NOOP = path.join(BUILD, 'bench-noop');
export const SECCOMP_NOTIFY = path.join(BUILD, 'seccomp-notify');
export const HELM_ENTER = path.join(BUILD, 'helm-enter');
export const HELMD = path.join(ROOT, 'bin', 'helmd');

export const FILE_OPS = ['read', 'write', 'exec'] as const;
export const NET_OPS = ['connect', 'get', 'post'] as const;
export type Op = (typeof FILE_OPS)[number] | (typeof NET_OPS)[number];

export const OP_LABEL: Record<Op, string> = {
  read: 'file read, 1 KB (open, read, close)',
  write: 'file write, 1 KB (open O_TRUNC, write, close)',
  exec: 'execve of a small static binary (spawn, exit, wait)',
  connect: 'TCP connect on loopback (socket, connect, close)',
  get: 'HTTP GET of 1 KB from a local server',
  post: 'HTTP POST of 1 KB to a second local server',
};

export interface Layout extends BenchLayout {
  root: string;
  /** The 1 KB file every read opens. */
  readFile: string;
}

/** A scratch tree under `base`: data/ (allowed), denied/ (no rule), the noop binary. */
export function makeLayout(base: string, ports: BenchLayout['ports']): Layout {
  const root = fs.mkdtempSync(path.join(base, 'helm-bench-'));
  const data = path.join(root, 'data');
  const denied = path.join(root, 'denied');
  fs.mkdirSync(data);
  fs.mkdirSync(denied);
  fs.writeFileSync(path.join(data, 'file-1k'), Buffer.alloc(1024, 'r'));
  fs.writeFileSync(path.join(denied, 'file-1k'), Buffer.alloc(1024, 'd'));
  fs.copyFileSync(NOOP, path.join(data, 'noop'));
  fs.chmodSync(path.join(data, 'noop'), 0o755);
  return { root, data, denied, driver: DRIVER, ports, readFile: path.join(data, 'file-1k') };
}

/** The driver's arguments for `op`; each variant writes its own file. */
export function opArgs(op: Op | 'denied-open', l: Layout, variant: string): string[] {
  switch (op) {
    case 'read':
      return ['--op', 'read', '--file', l.readFile];
    case 'write':
      return ['--op', 'write', '--file', path.join(l.data, `written-by-${variant}`)];
    case 'exec':
      return ['--op', 'exec', '--exe', path.join(l.data, 'noop')];
    case 'connect':
      return ['--op', 'connect', '--port', String(l.ports.tcp)];
    case 'get':
      return ['--op', 'get', '--port', String(l.ports.get)];
    case 'post':
      return ['--op', 'post', '--port', String(l.ports.post)];
    case 'denied-open':
      return ['--op', 'denied-open', '--file', path.join(l.denied, 'file-1k')];
  }
}

/** What the seccomp supervisor allows: the worker's binary and libraries, the data, loopback. */
export function seccompAllow(l: Layout): string[] {
  const paths = [DRIVER, `${l.data}/`, '/etc/ld.so.cache', '/lib/', '/lib64/', '/usr/lib/', '/usr/lib64/'];
  return [...paths.flatMap((p) => ['--allow', p]), '--allow-addr', '127.0.0.1'];
}

export type Context =
  | { kind: 'plain' }
  | { kind: 'cgroup'; dir: string }
  | { kind: 'strace' }
  | { kind: 'seccomp' };

/** The command that starts a worker for `op` in `context`. */
export function workerArgv(op: Op | 'denied-open', l: Layout, name: string, context: Context, cgroup?: string): string[] {
  const worker = [DRIVER, 'worker', ...opArgs(op, l, name)];
  // Every variant runs in a cgroup of the same depth, so the ancestor walk costs the same.
  const enter = (argv: string[]) => (cgroup ? [HELM_ENTER, cgroup, '--', ...argv] : argv);
  switch (context.kind) {
    case 'plain':
      return enter(worker);
    case 'cgroup':
      return [HELM_ENTER, context.dir, '--', ...worker];
    case 'strace':
      return enter(['strace', '-f', '-qq', '-o', '/dev/null', '--', ...worker]);
    case 'seccomp':
      return enter([SECCOMP_NOTIFY, ...seccompAllow(l), '--', ...worker]);
  }
}

export function variant(op: Op, l: Layout, name: string, context: Context, cgroup?: string): Variant {
  return { name, argv: workerArgv(op, l, name, context, cgroup) };
}

/**
 * Iterations per variant: rounds × batch after the warm-up. Sized so that a
 * full run takes minutes: the VM emulates its CPU and is 10-50× slower, and
 * strace slows every system call further.
 */
export function planFor(op: Op, env: 'native' | 'vm', smoke: boolean): Plan {
  if (smoke) return { warmup: 2, rounds: 2, batch: 3 };
  const heavy = op === 'exec';
  const net = op === 'get' || op === 'post';
  const plan =
    env === 'native'
      ? heavy
        ? { warmup: 50, rounds: 40, batch: 25 }
        : net
          ? { warmup: 200, rounds: 40, batch: 100 }
          : { warmup: 500, rounds: 40, batch: 500 }
      : heavy
        ? { warmup: 10, rounds: 24, batch: 8 }
        : net
          ? { warmup: 30, rounds: 30, batch: 20 }
          : { warmup: 100, rounds: 40, batch: 75 };
  return { ...plan, rounds: scaled(plan.rounds) };
}

/**
 * `--scale F` (make bench BENCH_ARGS='--scale 0.5'): F times the rounds of every
 * interleaved measurement and the samples of apply-to-live, for a shorter (or
 * longer) full run; warm-ups and batch sizes stay. 1 by default; the report
 * states the scale when it is not 1.
 */
export const SCALE = (() => {
  const i = process.argv.indexOf('--scale');
  const f = i >= 0 ? Number(process.argv[i + 1]) : 1;
  if (!(f > 0)) throw new Error(`--scale wants a positive number, not ${process.argv[i + 1]}`);
  return f;
})();

/** A count of rounds or samples at the run's scale (at least 2: a median needs company). */
export function scaled(n: number): number {
  return Math.max(2, Math.round(n * SCALE));
}

/** Is strace here? (a Debian package: scripts/install-deps.sh installs it) */
export function straceMissing(): string | undefined {
  const r = spawnSync('strace', ['-V'], { encoding: 'utf8' });
  return r.status === 0 ? undefined : 'strace is not installed (apt-get install strace)';
}

/** The loopback servers; resolves once they listen. */
export async function startServers(ports: BenchLayout['ports']): Promise<ChildProcess> {
  const p = spawn(DRIVER, ['serve', '--tcp', String(ports.tcp), '--http', String(ports.get), '--http', String(ports.post)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout!.on('data', (d) => (out += d));
  p.stderr!.on('data', (d) => (out += d));
  const deadline = Date.now() + 30_000;
  while (!out.includes('ready')) {
    if (p.exitCode !== null || Date.now() > deadline) throw new Error(`the loopback servers did not start: ${out.trim()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return p;
}

/** Three consecutive free-looking ports in 20000-29999 (the servers fail loudly if one is taken). */
export function pickPorts(seed = process.pid): BenchLayout['ports'] {
  const base = 20000 + ((seed * 7919) % 3300) * 3;
  return { tcp: base, get: base + 1, post: base + 2 };
}

/** One operation in a context: "ok" or the worker's error ("err ERRNO step: message"). */
export function once(op: Op | 'denied-open', l: Layout, context: Context, cgroup?: string, extra: string[] = []): string {
  const argv = workerArgv(op, l, 'probe', context, cgroup);
  const i = argv.indexOf('worker');
  argv[i] = 'once';
  const r = spawnSync(argv[0], [...argv.slice(1), ...extra], { encoding: 'utf8', timeout: 120_000 });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
}
