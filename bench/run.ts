// make bench: the whole benchmark in one run. The native half on this kernel,
// then the half that needs BPF LSM inside the QEMU VM; one report of both,
// printed and written to bench/results/latest.md and latest.json.
//
//   node dist/bench/run.js [--smoke] [--scale F] [--out DIR] [--no-vm]
//
// --smoke: a few iterations of everything (CI: proves the benchmark runs; no
// timing is asserted). Exits non-zero only if the benchmark itself broke: a
// row with neither a figure nor the reason it could not be measured.
// --scale F: F times the rounds of every measurement (bench/ops.ts), both halves.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import type { Meta, Results, Row } from './model';
import { rowProblem } from './model';
import { runNative } from './native';
import { renderMarkdown } from './report';
import { FILE_OPS, NET_OPS, ROOT, SCALE } from './ops';
import { sizes } from './policies';

const args = process.argv.slice(2);
const smoke = args.includes('--smoke');
const noVm = args.includes('--no-vm');
const outDir = path.resolve(args.includes('--out') ? args[args.indexOf('--out') + 1] : path.join(ROOT, 'bench', 'results'));
const say = (s: string) => console.error(`bench: ${s}`);

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    console.error('bench: must run as root (cgroups, BPF maps, the VM)');
    return 2;
  }
  const started = new Date();
  say(`${smoke ? 'smoke run' : 'full run'}: native half`);
  const native = await runNative(smoke, say);
  let vm: VmResult | undefined;
  let vmProblem: string | undefined;
  if (noVm) vmProblem = 'not run (--no-vm)';
  else {
    say('the VM half (QEMU, Debian kernel with BPF LSM)');
    vm = await runVm();
    vmProblem = vm.problem;
  }
  const rows = [...native.rows, ...(vm ? vm.rows : []), ...(vmProblem ? vmPlaceholders(vmProblem, vm?.rows ?? []) : [])];
  const meta: Meta = {
    date: started.toISOString().replace(/\.\d+Z$/, 'Z'),
    smoke,
    commit: commit(),
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    node: process.version,
    host: { kernel: os.release(), tmpfs: native.tmpfs },
    vm: vm?.facts.kernel ? { kernel: vm.facts.kernel, cpu: vm.facts.cpu, accel: 'QEMU TCG' } : undefined,
    sizes: sizes(smoke),
    ...(SCALE !== 1 ? { scale: SCALE } : {}),
    network: { native: native.network, vm: vm?.facts.network ?? vmProblem ?? 'not run' },
  };
  const results: Results = { meta, rows };
  const md = renderMarkdown(results);
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, 'latest.md'), md);
  fs.writeFileSync(path.join(outDir, 'latest.json'), `${JSON.stringify(results, null, 1)}\n`);
  console.log(md);
  say(`written: ${path.join(outDir, 'latest.md')} and latest.json`);
  const broken = rows.map((r) => [r, rowProblem(r)] as const).filter(([, p]) => p);
  for (const [r, p] of broken) console.error(`bench: BROKEN ROW ${r.section}/${r.env}/${r.op}/${r.variant}: ${p}`);
  return broken.length ? 1 : 0;
}

function commit(): string {
  const rev = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).stdout.trim() || 'unknown';
  const dirty = spawnSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: ROOT, encoding: 'utf8' }).stdout.trim();
  return dirty ? `${rev} (with uncommitted changes)` : rev;
}

interface VmResult {
  facts: Record<string, string>;
  rows: Row[];
  /** Why (some of) the VM half is missing. */
  problem?: string;
}

/** Runs dist/bench/vm.js in the VM; its progress goes to our stderr, its result line is parsed. */
function runVm(): Promise<VmResult> {
  return new Promise((resolve) => {
    const cmd = ['scripts/vm/run.sh', '--timeout', smoke ? '900' : '7200', '--', 'node', 'dist/bench/vm.js', ...(smoke ? ['--smoke'] : []), ...(SCALE !== 1 ? ['--scale', String(SCALE)] : [])];
    const p = spawn('bash', cmd, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let buffered = '';
    let result: string | undefined;
    const tail: string[] = [];
    const onLine = (line: string) => {
      if (line.startsWith('BENCH-RESULT ')) result = line.slice('BENCH-RESULT '.length);
      else {
        console.error(line);
        tail.push(line);
        if (tail.length > 5) tail.shift();
      }
    };
    p.stdout.setEncoding('utf8');
    p.stdout.on('data', (d: string) => {
      buffered += d;
      let i: number;
      while ((i = buffered.indexOf('\n')) >= 0) {
        onLine(buffered.slice(0, i));
        buffered = buffered.slice(i + 1);
      }
    });
    p.stderr.on('data', (d) => process.stderr.write(d));
    p.on('exit', (code) => {
      if (buffered) onLine(buffered);
      if (!result) return resolve({ facts: {}, rows: [], problem: `the VM half did not finish (exit ${code}): ${tail.join(' | ') || 'no output'}` });
      const parsed = JSON.parse(result) as { facts?: Record<string, string>; rows: Row[]; error?: string };
      resolve({ facts: parsed.facts ?? {}, rows: parsed.rows, problem: parsed.error ? `the VM half failed: ${parsed.error}` : undefined });
    });
  });
}

/** Rows the VM half would have given, each saying why it is missing. */
function vmPlaceholders(reason: string, have: Row[]): Row[] {
  const want: Row[] = [];
  for (const op of [...FILE_OPS, ...NET_OPS]) {
    for (const variant of ['baseline', 'baseline-2', 'helm-5', 'helm-large', 'strace', 'seccomp']) want.push({ section: 'ops', env: 'vm', op, variant });
  }
  for (const op of ['read', 'exec', 'connect']) want.push({ section: 'ungoverned', env: 'vm', op, variant: 'helm-loaded' });
  for (const n of sizes(smoke).apply) want.push({ section: 'apply', env: 'vm', op: `apply-${n}`, variant: 'rpc-to-live' });
  want.push({ section: 'audit', env: 'vm', op: 'events-per-second', variant: 'helmd' });
  want.push({ section: 'audit', env: 'vm', op: 'trail-throughput', variant: 'audit-throughput' });
  for (const phase of ['idle', 'operations', 'audit']) {
    for (const what of ['cpu', 'rss']) want.push({ section: 'helmd', env: 'vm', op: `${what}-${phase}`, variant: 'helmd' });
  }
  const same = (a: Row, b: Row) => a.section === b.section && a.op === b.op && a.variant === b.variant;
  return want.filter((w) => !have.some((h) => h.env === 'vm' && same(h, w))).map((w) => ({ ...w, couldNotRun: reason }));
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`bench: ${(e as Error).stack ?? e}`);
    process.exit(1);
  },
);
