// The half of the benchmark that needs BPF LSM: run inside the QEMU VM
// (scripts/vm/run.sh -- node dist/bench/vm.js [--smoke] [--scale F]). It prints progress
// lines and, last, one line "BENCH-RESULT <json>" with its rows and facts.
//
// Loading helm's programs is what takes time here (the verifier, emulated), so
// the run is ordered around one helmd: ungoverned workers measured before it
// starts and once it runs; then, with the 5-rule and the large (10,000-rule)
// policy, every operation in every variant, interleaved, and helmd's CPU and
// memory idle and under that load; the audit trail under a flood of denials;
// last with that helmd, apply-to-live through its control API
// (bench/apply-latency.ts, which replaces its policies); then, in a full run, more rounds of the ungoverned
// comparison with the programs loaded by this process as helmd loads them.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadPolicies } from '../daemon/policy/parse';
import { compilePolicy } from '../daemon/policy/compile';
import { KernelEnforcer } from '../daemon/kernel/enforcer';
import type { Row } from './model';
import { FILE_OPS, NET_OPS, scaled, type Layout, makeLayout, pickPorts, startServers, workerArgv } from './ops';
import { benchPolicy, sizes } from './policies';
import { BenchCgroups, attach, cpuPercent, procSample, startHelmd, status, type RunningHelmd } from './helmd-process';
import { Worker } from './worker';
import { networkRulesCompile, probeNetwork } from './network';
import { measureOps } from './operations';
import { UngovernedSession, alternate } from './ungoverned';
import { auditThroughputRows } from './audit-rows';
import { applyLatencyRows } from './apply-rows';

const smoke = process.argv.includes('--smoke');
const rows: Row[] = [];
const facts: Record<string, string> = { kernel: os.release(), cpu: os.cpus()[0]?.model ?? 'unknown' };
const began = performance.now();
const say = (s: string) => console.log(`bench(vm) ${((performance.now() - began) / 1000).toFixed(0)} s: ${s}`);

async function main(): Promise<void> {
  const lsm = fs.readFileSync('/sys/kernel/security/lsm', 'utf8').trim();
  if (!lsm.split(',').includes('bpf')) throw new Error(`BPF LSM is not active here (lsm=${lsm})`);
  const layout = makeLayout('/tmp', pickPorts());
  const cgroups = new BenchCgroups();
  const servers = await startServers(layout.ports);
  const ungoverned = new UngovernedSession({ env: 'vm', ops: ['read', 'exec', 'connect'], layout, cgroup: cgroups.make('free'), smoke });
  try {
    await ungoverned.warm();
    say('ungoverned: helm not loaded');
    await ungoverned.batch('unloaded');
    await governed(layout, cgroups, ungoverned);
    auditThroughput();
    if (!smoke) await alternate(ungoverned, 3, () => loadPrograms(layout), say);
    rows.push(...(await ungoverned.finish()));
  } finally {
    ungoverned.kill();
    servers.kill('SIGKILL');
    await cgroups.cleanup();
    fs.rmSync(layout.root, { recursive: true, force: true });
  }
  console.log(`BENCH-RESULT ${JSON.stringify({ facts, rows })}`);
}

/** helm's programs attached and a 5-rule policy in force, nothing governed: what helmd sets up. */
async function loadPrograms(layout: Layout): Promise<{ stop: () => Promise<void> }> {
  const file = path.join(layout.root, 'bench-5.yaml');
  fs.writeFileSync(file, benchPolicy('bench-5', 'bench5', 5, layout, networkRulesCompile(layout).ok));
  const enforcer = KernelEnforcer.load();
  try {
    enforcer.applyGeneration(compilePolicy(loadPolicies([file]).policies));
  } catch (e) {
    enforcer.close();
    throw e;
  }
  return { stop: async () => enforcer.close() };
}

/**
 * Apply-to-live as a user gets it: a PolicyService.Apply call to the first
 * operation the kernel decides by the new generation, against a Status round
 * trip of the same run (bench/apply-latency.ts, given this helmd: it
 * replaces the policies, so it comes last).
 */
function applyThroughHelmd(socket: string): void {
  const { apply } = sizes(smoke);
  say('apply-to-live through helmd (bench/apply-latency.js)');
  // Emulated, one apply of 10,000 rules takes seconds: few samples of the largest.
  const samples = smoke ? apply.map(() => 1) : apply.map((n) => (n >= 10_000 ? 3 : scaled(20)));
  rows.push(...applyLatencyRows('vm', apply, samples, ['--socket', socket]));
}

/**
 * The audit trail's own throughput benchmark (bench/audit-throughput.ts): one
 * agent's denied opens to disk with fsync per batch, against the rate the agent
 * made them and plain appends of the same lines, with helmd's CPU and memory.
 * It starts its own helmd (after ours stopped).
 */
function auditThroughput(): void {
  say('audit: bench/audit-throughput.js (its own helmd, fsync every batch)');
  rows.push(...auditThroughputRows('vm', ['--in-vm', '--seconds', smoke ? '1' : '10']));
}

/** helmd's own files: policies, audit trail, socket (helmd protects them from governed tasks). */
function helmdFiles(layout: Layout, name: string) {
  const dir = path.join(layout.root, name);
  fs.mkdirSync(path.join(dir, 'policies'), { recursive: true });
  return { dir, policy: path.join(dir, 'policies'), audit: path.join(dir, 'audit.jsonl'), socket: path.join(dir, 'helmd.sock') };
}

// ------------------------------------------------------------------ helmd

async function governed(layout: Layout, cgroups: BenchCgroups, ungoverned: UngovernedSession): Promise<void> {
  const files = helmdFiles(layout, 'helmd');
  const network = networkRulesCompile(layout);
  fs.writeFileSync(path.join(files.policy, 'bench-5.yaml'), benchPolicy('bench-5', 'bench5', 5, layout, network.ok));
  fs.writeFileSync(path.join(files.policy, 'bench-large.yaml'), benchPolicy('bench-large', 'benchlarge', sizes(smoke).large, layout, network.ok));
  const t0 = performance.now();
  // One trail file (no rotation): the audit flood counts its decision lines in it (a long run would otherwise rotate and compress).
  const helmd = await startHelmd({ ...files, extra: ['--audit-rotate-size', '0'] });
  say(`helmd with the 5- and ${sizes(smoke).large}-rule policies started in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  say('ungoverned: helm loaded');
  await ungoverned.batch('loaded');
  const cg = { base: cgroups.make('base'), g5: cgroups.make('g5'), gLarge: cgroups.make('gLarge') };
  try {
    await attach(helmd.socket, cg.g5, 'bench5');
    await attach(helmd.socket, cg.gLarge, 'benchlarge');
    const hooked = probeNetwork(layout, cg.g5, network);
    facts.network = hooked.text;
    say(hooked.text);

    const idleA = procSample(helmd.pid);
    await new Promise((r) => setTimeout(r, smoke ? 1000 : 5000));
    pushHelmd('idle', idleA, procSample(helmd.pid));

    const loadA = procSample(helmd.pid);
    rows.push(
      ...(await measureOps({ env: 'vm', ops: [...FILE_OPS, ...NET_OPS], layout, cgroups: { base: cg.base, helm: { g5: cg.g5, gLarge: cg.gLarge } }, netHooked: hooked.ok, smoke, say })),
    );
    pushHelmd('operations', loadA, procSample(helmd.pid));

    await auditFlood(layout, helmd, cg.g5);
    // Last: it replaces helmd's policies.
    applyThroughHelmd(helmd.socket);
  } finally {
    await helmd.stop();
  }
}

function pushHelmd(phase: string, a: ReturnType<typeof procSample>, b: ReturnType<typeof procSample>): void {
  rows.push({ section: 'helmd', env: 'vm', op: `cpu-${phase}`, variant: 'helmd', quantity: { value: cpuPercent(a, b), unit: '% of a CPU' } });
  rows.push({ section: 'helmd', env: 'vm', op: `rss-${phase}`, variant: 'helmd', quantity: { value: b.rssKb / 1024, unit: 'MB' } });
}

/**
 * Governed workers open a file no rule allows as fast as they can; every
 * denial is an event. Throughput is the decision lines helmd wrote divided by
 * the time from the first denial to the last line, once every denial is in the
 * trail or counted lost.
 */
async function auditFlood(layout: Layout, helmd: RunningHelmd, governedDir: string): Promise<void> {
  say('audit: flood of denials');
  const lines = () => countLines(helmd.audit);
  const lostNow = async () => BigInt((await status(helmd.socket)).events_lost);
  const before = lines();
  const lostBefore = await lostNow();
  const seconds = smoke ? 0.2 : 10;
  const workers = [0, 1].map((i) => new Worker(`deny-${i}`, workerArgv('denied-open', layout, `deny-${i}`, { kind: 'cgroup', dir: governedDir })));
  let made = 0;
  const a = procSample(helmd.pid);
  const t0 = performance.now();
  try {
    const counts = await Promise.all(workers.map((w) => w.runFor(seconds * 1000)));
    made = counts.reduce((x, y) => x + y, 0);
  } catch (e) {
    auditFailed((e as Error).message);
    return;
  } finally {
    workers.forEach((w) => w.kill());
  }
  // Until every denial is in the trail or counted lost (helmd reports losses once a second).
  let last = lines();
  let lastAt = performance.now();
  let lost = 0n;
  const deadline = performance.now() + (smoke ? 120_000 : 600_000);
  for (;;) {
    lost = (await lostNow()) - lostBefore;
    if (last - before + Number(lost) >= made || performance.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 200));
    const n = lines();
    if (n !== last) lastAt = performance.now();
    last = n;
  }
  const b = procSample(helmd.pid);
  const written = last - before;
  if (written + Number(lost) < made) {
    auditFailed(`only ${written} of ${made} denials reached the trail or the lost count within the time allowed`);
    return;
  }
  const elapsed = (lastAt - t0) / 1000;
  rows.push({ section: 'audit', env: 'vm', op: 'events-per-second', variant: 'helmd', quantity: { value: written / elapsed, unit: 'events/s' } });
  rows.push({ section: 'audit', env: 'vm', op: 'denials-made', variant: 'workers', quantity: { value: made, unit: 'denials' } });
  rows.push({ section: 'audit', env: 'vm', op: 'events-written', variant: 'helmd', quantity: { value: written, unit: 'lines' } });
  rows.push({ section: 'audit', env: 'vm', op: 'events-lost', variant: 'helmd', quantity: { value: Number(lost), unit: 'events' } });
  rows.push({ section: 'helmd', env: 'vm', op: 'cpu-audit', variant: 'helmd', quantity: { value: cpuPercent(a, b), unit: '% of a CPU' } });
  rows.push({ section: 'helmd', env: 'vm', op: 'rss-audit', variant: 'helmd', quantity: { value: b.hwmKb / 1024, unit: 'MB (peak)' } });
}

function auditFailed(why: string): void {
  rows.push({ section: 'audit', env: 'vm', op: 'events-per-second', variant: 'helmd', couldNotRun: why });
  for (const op of ['cpu-audit', 'rss-audit']) rows.push({ section: 'helmd', env: 'vm', op, variant: 'helmd', couldNotRun: why });
}

function countLines(file: string): number {
  if (!fs.existsSync(file)) return 0;
  const text = fs.readFileSync(file, 'utf8');
  let n = 0;
  for (let i = text.indexOf('"type":"decision"'); i >= 0; i = text.indexOf('"type":"decision"', i + 1)) n++;
  return n;
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`bench(vm): ${(e as Error).stack ?? e}`);
    console.log(`BENCH-RESULT ${JSON.stringify({ error: (e as Error).message, facts, rows })}`);
    process.exit(1);
  },
);

