#!/usr/bin/env node
// Apply-to-live latency: from the moment a PolicyService.Apply call is made to the
// first operation the kernel decides by the new generation, for policies of 1, 100
// and 10,000 rules; p50 and p99. A benchmark, not a test: it asserts nothing.
//
// A governed agent can open a probe file. Each sample: the driver applies the
// version that allows the probe and waits for the answer (the agent is idle: no
// denials, so helmd is not busy auditing a flood); tells the agent to start
// opening the probe every --probe-interval-us; applies the version that denies it
// (same size, otherwise identical); and takes the time from just before that Apply
// call to the agent's first denied open (CLOCK_MONOTONIC on both sides). So each
// sample costs exactly one denial. The baseline, measured in the same run over the
// same connection, is a Status call: the ratio says how much more than one gRPC
// round trip an apply costs.
//
// Needs root and a kernel that runs BPF LSM programs; elsewhere run it in the VM:
//   bash scripts/vm/run.sh --timeout 3000 -- node dist/bench/apply-latency.js
// or natively with --network: the probe is then a TCP connect to a loopback port this
// process listens on (helm's connect hook is a cgroup program, which kernels that refuse
// BPF LSM still run), and the helmd started runs --network-only.
// Options: --rules 1,100,10000  --samples 30,30,5  --probe-interval-us 200  --network
//          --socket PATH: apply to the helmd already serving PATH instead of starting
//          one (its policies are replaced; make bench does this to start one helmd less)
// Prints one JSON object, then a Markdown table (header and one row per size).
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import type * as grpc from '@grpc/grpc-js';
import { client } from '../daemon/control/client';
import { C } from '../daemon/kernel/layout';
import { scratchPins } from '../test/support/scratch-pins';

const ROOT = path.resolve(__dirname, '..', '..');
const DIR = '/srv/helm-bench-apply';
const PROBE = `${DIR}/probe`;
// In a directory of its own: helmd protects its trail's directory, and the probe must stay readable.
const AUDIT = `${DIR}/audit/audit.jsonl`;
const EXISTING = process.argv.includes('--socket') ? process.argv[process.argv.indexOf('--socket') + 1] : undefined;
const SOCK = EXISTING ?? '/run/helm/bench-apply.sock';
const ROLE = 'bench';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}
const SIZES = arg('--rules', '1,100,10000').split(',').map(Number);
const SAMPLES = arg('--samples', '30,30,5').split(',').map(Number);
const INTERVAL_US = Number(arg('--probe-interval-us', '200'));
const NETWORK = process.argv.includes('--network');
const BASELINE_CALLS = 50;

/**
 * A set of `rules` rules: one that lets the agent run (and read the probe when `on`), and fillers.
 * JSON, one rule a line, as a large policy is best written (helmd reads JSON without the YAML
 * parser, and an edit's unchanged rules from the parse before; bench/native.ts shows YAML's cost).
 */
function policy(rules: number, on: boolean, port: number): string {
  const probe = NETWORK ? { connect: [`127.0.0.1:${on ? port : 9}`] } : {};
  const allow = [JSON.stringify({ id: 'agent', exec: ['/usr/bin/', '/usr/lib/'], read: ['/usr/', '/etc/ld.so.cache', '/dev/null', ...(on && !NETWORK ? [PROBE] : [])], ...probe })];
  for (let i = 1; i < rules; i++) allow.push(JSON.stringify({ id: `fill${i}`, read: [`${DIR}/fill/f${i}`] }));
  const head = JSON.stringify({ apiVersion: 'helm/v1', kind: 'Policy', metadata: { name: 'bench' } });
  return `${head.slice(0, -1)},\n"spec": {"roles": ${JSON.stringify([ROLE])}, "allow": [\n${allow.join(',\n')}\n]}}\n`;
}

// The agent: on each line "go" from stdin, opens the probe (or connects to the port, with
// --network) until that is denied, then prints "T <seconds>" (CLOCK_MONOTONIC) and waits for
// the next line. EOF ends it. A connect refused for another reason than the policy (EPERM)
// stops it with an error rather than count as the switch.
const AGENT = String.raw`
use strict; use warnings;
use Errno qw(EPERM);
use Socket qw(PF_INET SOCK_STREAM pack_sockaddr_in inet_aton);
use Time::HiRes qw(clock_gettime CLOCK_MONOTONIC usleep);
$| = 1;
my ($probe, $interval, $port) = @ARGV;
sub probe {
  if (!$port) { open(my $fh, '<', $probe) or return 0; close $fh; return 1; }
  socket(my $s, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
  my $ok = connect($s, pack_sockaddr_in($port, inet_aton('127.0.0.1')));
  my $err = $! + 0;
  close $s;
  return 1 if $ok;
  die "connect: $!" unless $err == EPERM;
  return 0;
}
print "READY\n";
while (my $cmd = <STDIN>) {
  while (1) {
    if (probe()) { usleep($interval) if $interval; next; }
    printf "T %.9f\n", clock_gettime(CLOCK_MONOTONIC);
    last;
  }
}
`;

interface Stats {
  n: number;
  p50: number;
  p99: number;
  min: number;
  max: number;
}

/** Nearest-rank percentiles, in milliseconds. */
function stats(ms: number[]): Stats {
  const s = [...ms].sort((a, b) => a - b);
  const at = (p: number) => s[Math.max(0, Math.ceil((p / 100) * s.length) - 1)];
  const r = (x: number) => Math.round(x * 1000) / 1000;
  return { n: s.length, p50: r(at(50)), p99: r(at(99)), min: r(s[0]), max: r(s[s.length - 1]) };
}

const nowNs = () => Number(process.hrtime.bigint());

/** The trail's last denial, for an error message. */
function lastDenial(): string {
  try {
    const lines = fs.readFileSync(AUDIT, 'utf8').trim().split('\n');
    return [...lines].reverse().find((l) => l.includes('"deny"')) ?? 'none';
  } catch (e) {
    return (e as Error).message;
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function unary<Res>(c: any, method: string, req: object): Promise<Res> {
  return new Promise((resolve, reject) => c[method](req, { deadline: Date.now() + 600_000 }, (err: grpc.ServiceError | null, res: Res) => (err ? reject(new Error(`${method}: ${err.details}`)) : resolve(res))));
}

async function waitFor(what: string, cond: () => boolean, timeoutMs: number, alive?: ChildProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (alive && alive.exitCode !== null) throw new Error(`${what}: the process exited`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

async function main(): Promise<void> {
  const lsm = fs.existsSync('/sys/kernel/security/lsm') ? fs.readFileSync('/sys/kernel/security/lsm', 'utf8') : '';
  if (process.getuid?.() !== 0 || (!NETWORK && !lsm.split(',').includes('bpf'))) {
    process.stderr.write('apply-latency: needs root and a kernel with BPF LSM; run it in the VM:\n  bash scripts/vm/run.sh --timeout 3000 -- node dist/bench/apply-latency.js\n');
    process.exit(2);
  }
  fs.rmSync(DIR, { recursive: true, force: true });
  fs.mkdirSync(`${DIR}/policy`, { recursive: true });
  fs.mkdirSync(path.dirname(AUDIT));
  fs.writeFileSync(PROBE, 'probe\n');
  // With --network, the probe's port: accepted and closed at once.
  const listener = NETWORK ? net.createServer((c) => c.destroy()) : undefined;
  if (listener) await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r));
  const port = listener ? (listener.address() as net.AddressInfo).port : 0;
  fs.writeFileSync(`${DIR}/policy/bench.json`, policy(1, true, port));

  let log = '';
  let helmd: ChildProcess | undefined;
  let helmdExited: Promise<unknown> = Promise.resolve();
  const cleanup: (() => unknown)[] = [() => listener?.close()];
  if (!EXISTING) {
    // Its own pins, removed once it has stopped: the benchmark leaves no enforcement behind.
    const pins = scratchPins('bench');
    const started = spawn(path.join(ROOT, 'bin', 'helmd'), ['--policy', `${DIR}/policy`, '--audit-log', AUDIT, '--socket', SOCK, '--no-watch', '--log-level', 'warn', ...(NETWORK ? ['--network-only'] : []), ...pins.args], { stdio: ['ignore', 'pipe', 'pipe'] });
    started.stdout!.on('data', (d) => (log += d));
    started.stderr!.on('data', (d) => (log += d));
    helmdExited = new Promise((r) => started.once('exit', r));
    cleanup.push(async () => {
      if (started.exitCode === null && started.signalCode === null) started.kill('SIGTERM');
      await helmdExited;
      pins.remove(AUDIT);
    });
    helmd = started;
  }
  try {
    if (helmd) {
      await waitFor('helmd', () => fs.existsSync(SOCK), 180_000, helmd).catch((e) => {
        throw new Error(`${e.message}\n${log}`);
      });
    }
    const sys = client('SystemService', SOCK);
    const pol = client('PolicyService', SOCK);
    cleanup.push(() => sys.close(), () => pol.close());
    const { generation: current } = await unary<{ generation: number }>(sys, 'Status', {}); // connect once: no call below pays for it
    // A helmd of someone else's: the agent's policy goes in first (a started one read it from DIR).
    if (EXISTING) await unary(pol, 'Apply', { sources: [{ file: 'bench.json', content: policy(1, true, port) }], expected_generation: current });

    const agent = spawn(path.join(ROOT, 'bin', 'helmctl'), ['run', '--socket', SOCK, '--role', ROLE, '--name', 'bench', '--', 'perl', '-e', AGENT, PROBE, String(INTERVAL_US), String(port)], { stdio: ['pipe', 'pipe', 'inherit'] });
    const agentExited = new Promise((r) => agent.once('exit', r));
    // The agent goes first, so that helmctl run can still release its cgroup.
    cleanup.unshift(async () => {
      agent.stdin!.end();
      await Promise.race([agentExited, new Promise((r) => setTimeout(r, 30_000))]);
    });
    const denials: number[] = [];
    let ready = false;
    let buf = '';
    agent.stdout!.on('data', (d) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const m = /^T (\S+)$/.exec(line);
        if (m) denials.push(Number(m[1]) * 1e9);
        if (line === 'READY') ready = true;
      }
    });
    await waitFor('the agent', () => ready, 180_000, agent);

    const baseline: number[] = [];
    for (let i = 0; i < BASELINE_CALLS; i++) {
      const t0 = nowNs();
      await unary(sys, 'Status', {});
      baseline.push((nowNs() - t0) / 1e6);
    }
    const base = stats(baseline);

    const results = [];
    for (let s = 0; s < SIZES.length; s++) {
      const rules = SIZES[s];
      const samples = SAMPLES[s] ?? SAMPLES[SAMPLES.length - 1];
      const sources = { on: policy(rules, true, port), off: policy(rules, false, port) };
      let generation = (await unary<{ generation: number }>(sys, 'Status', {})).generation;
      // Warm-up at this size: every generation slot gets tables of it (the first apply into a
      // slot creates them, and the kernel waits a grace period per table to place them), and
      // V8 compiles the paths an apply takes. What follows is an apply into a running helmd.
      for (let i = 0; i < 2 * C.HELM_MAX_GENERATIONS; i++) {
        generation = (await unary<{ generation: number }>(pol, 'Apply', { sources: [{ file: 'bench.json', content: i % 2 ? sources.on : sources.off }], expected_generation: generation })).generation;
      }
      const live: number[] = [];
      const rpc: number[] = [];
      for (let i = 0; i < samples; i++) {
        // Allowed, settled: the switch is done when Apply answers.
        generation = (await unary<{ generation: number }>(pol, 'Apply', { sources: [{ file: 'bench.json', content: sources.on }], expected_generation: generation })).generation;
        const seen = denials.length;
        agent.stdin!.write('go\n');
        await new Promise((r) => setTimeout(r, 20)); // let it probe (allowed) first
        if (denials.length !== seen) throw new Error(`the probe was denied before the apply: the policies are wrong (the trail's last denial: ${lastDenial()})`);
        const t0 = nowNs();
        const r = await unary<{ generation: number }>(pol, 'Apply', { sources: [{ file: 'bench.json', content: sources.off }], expected_generation: generation });
        rpc.push((nowNs() - t0) / 1e6);
        generation = r.generation;
        await waitFor(`the first denied ${NETWORK ? 'connect' : 'open'}`, () => denials.length > seen, 600_000, agent);
        live.push((denials[seen] - t0) / 1e6);
      }
      const st = stats(live);
      results.push({ rules, samples, apply_to_live_ms: st, apply_rpc_ms: stats(rpc), ratio_p50_to_baseline: Math.round((st.p50 / base.p50) * 10) / 10 });
    }

    const report = {
      bench: 'apply-latency',
      probe: NETWORK ? 'connect' : 'open',
      kernel: os.release(),
      cpus: os.cpus().length,
      node: process.version,
      probe_interval_us: INTERVAL_US,
      baseline_status_rpc_ms: base,
      results,
    };
    process.stdout.write(JSON.stringify(report) + '\n\n');
    process.stdout.write('| rules | apply→live p50 (ms) | apply→live p99 (ms) | Apply RPC p50 (ms) | p50 ÷ Status RPC p50 | samples |\n|---:|---:|---:|---:|---:|---:|\n');
    for (const r of results) {
      process.stdout.write(`| ${r.rules} | ${r.apply_to_live_ms.p50} | ${r.apply_to_live_ms.p99} | ${r.apply_rpc_ms.p50} | ${r.ratio_p50_to_baseline}× (${base.p50} ms) | ${r.samples} |\n`);
    }
  } finally {
    for (const c of cleanup) await c();
    await helmdExited;
    fs.rmSync(DIR, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`apply-latency: ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
