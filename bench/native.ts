// The half of the benchmark that runs on this machine's own kernel: the
// operations ungoverned, under strace and under the seccomp supervisor; helm's
// network hooks where helmd can load them here (helmd --network-only); the
// reference evaluator; and policy apply-to-live (the same tables and switch
// whether or not the LSM programs are loaded, so it is measured here, natively).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { RuleCache, loadPolicies } from '../daemon/policy/parse';
import { compilePolicy } from '../daemon/policy/compile';
import { IncrementalCompiler } from '../daemon/policy/compile-incremental';
import { evaluateOperation } from '../daemon/policy/evaluate';
import { KernelEnforcer } from '../daemon/kernel/enforcer';
import { C } from '../daemon/kernel/layout';
import { figure } from './stats';
import type { Row } from './model';
import { FILE_OPS, HELMD, NET_OPS, type Layout, makeLayout, pickPorts, scaled, startServers } from './ops';
import { applyPolicy, benchPolicy, sizes } from './policies';
import { BenchCgroups, attach, startHelmd, type RunningHelmd } from './helmd-process';
import { measureOps } from './operations';
import { UngovernedSession, alternate } from './ungoverned';
import { networkRulesCompile, probeNetwork } from './network';
import { auditThroughputRows } from './audit-rows';
import { applyLatencyRows } from './apply-rows';

export interface NativeResult {
  rows: Row[];
  network: string;
  tmpfs: string;
}

export async function runNative(smoke: boolean, say: (s: string) => void): Promise<NativeResult> {
  const rows: Row[] = [];
  // Scratch on tmpfs when there is one: the VM's /tmp is tmpfs too, and a disk adds its own noise.
  const shm = fsType('/dev/shm') === 'tmpfs' ? '/dev/shm' : os.tmpdir();
  const layout = makeLayout(shm, pickPorts(process.pid + 1));
  const cgroups = new BenchCgroups();
  const servers = await startServers(layout.ports);
  let network = '';
  try {
    const cg = { base: cgroups.make('base'), g5: cgroups.make('g5'), gLarge: cgroups.make('gLarge'), free: cgroups.make('free') };
    const helm = await nativeHelmd(layout, smoke);
    let hooked = false;
    if (helm.helmd) {
      try {
        await attach(helm.helmd.socket, cg.g5, 'bench5');
        await attach(helm.helmd.socket, cg.gLarge, 'benchlarge');
        const probe = probeNetwork(layout, cg.g5, networkRulesCompile(layout));
        hooked = probe.ok;
        network = probe.text;
      } catch (e) {
        network = `helmd started here but could not govern the benchmark's cgroups: ${(e as Error).message}`;
        await helm.helmd.stop();
        helm.helmd = undefined;
      }
    } else {
      network = helm.reason;
    }
    say(`native network: ${network}`);

    const fileReason = `this kernel refuses BPF LSM programs, so helm's file hooks cannot run here: see the VM rows (helmd: ${helm.lsmReason})`;
    rows.push(...(await measureOps({ env: 'native', ops: FILE_OPS, layout, cgroups: { base: cg.base, helm: { reason: fileReason } }, netHooked: false, smoke, say })));
    const netHelm = helm.helmd && hooked ? { g5: cg.g5, gLarge: cg.gLarge } : { reason: network };
    rows.push(...(await measureOps({ env: 'native', ops: NET_OPS, layout, cgroups: { base: cg.base, helm: netHelm }, netHooked: hooked, smoke, say })));
    if (helm.helmd) await helm.helmd.stop();

    const ungoverned = new UngovernedSession({ env: 'native', ops: ['connect'], layout, cgroup: cg.free, smoke });
    try {
      if (helm.start && hooked) {
        await ungoverned.warm();
        await alternate(ungoverned, smoke ? 1 : 6, helm.start, say);
        rows.push(...(await ungoverned.finish()));
      } else {
        rows.push(...(await ungoverned.finish(network)));
      }
    } finally {
      ungoverned.kill();
    }

    say('reference evaluator');
    rows.push(...evaluator(layout, smoke));
    say('apply-to-live');
    rows.push(...(await applyToLive(layout.root, layout.data, smoke)));
    // And as a user gets it: an Apply call to helmd --network-only, to the first connect decided by it.
    say('apply-to-live through helmd --network-only (bench/apply-latency.js --network)');
    const { apply } = sizes(smoke);
    rows.push(...applyLatencyRows('native', apply, apply.map(() => (smoke ? 1 : scaled(30))), ['--network']));
    // helmd --network-only's own trail, fed by denied connects: the whole audit path natively.
    say('audit: bench/audit-throughput.js (denied connects, helmd --network-only, fsync every batch)');
    rows.push(...auditThroughputRows('native', ['--load', 'denied-connect', '--seconds', smoke ? '1' : '10']));
  } finally {
    servers.kill('SIGKILL');
    await cgroups.cleanup();
    fs.rmSync(layout.root, { recursive: true, force: true });
  }
  return { rows, network, tmpfs: `${path.dirname(layout.root)} (${fsType(path.dirname(layout.root))})` };
}

function fsType(dir: string): string {
  const r = spawnSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : 'unknown';
}

/**
 * helmd on this kernel: as a user starts it, which here fails on the LSM
 * programs (the reason is reported), and, when this helmd has one, in its
 * network-only mode, which loads only the cgroup network programs.
 */
async function nativeHelmd(layout: Layout, smoke: boolean): Promise<{ helmd?: RunningHelmd; start?: () => Promise<RunningHelmd>; reason: string; lsmReason: string }> {
  const dir = path.join(layout.root, 'helmd');
  const policy = path.join(dir, 'policies');
  fs.mkdirSync(policy, { recursive: true });
  const network = networkRulesCompile(layout);
  fs.writeFileSync(path.join(policy, 'bench-5.yaml'), benchPolicy('bench-5', 'bench5', 5, layout, network.ok));
  fs.writeFileSync(path.join(policy, 'bench-large.yaml'), benchPolicy('bench-large', 'benchlarge', sizes(smoke).large, layout, network.ok));
  const files = { policy, audit: path.join(dir, 'audit.jsonl'), socket: path.join(dir, 'helmd.sock') };
  let lsmReason = '';
  try {
    const full = await startHelmd(files);
    await full.stop(); // a kernel that runs BPF LSM: the file rows would need it natively too
    lsmReason = 'started with BPF LSM on this kernel; run the benchmark where it does not to compare with the VM';
  } catch (e) {
    lsmReason = (e as Error).message.replace(/^helmd did not start: /, '');
  }
  const help = spawnSync(HELMD, ['--help'], { encoding: 'utf8' }).stdout ?? '';
  if (!help.includes('--network-only')) {
    return { reason: `helm's network hooks could not be loaded here: this helmd has no network-only mode and the full one does not start (${lsmReason})`, lsmReason };
  }
  const start = () => startHelmd({ ...files, extra: ['--network-only'] });
  try {
    return { helmd: await start(), start, reason: '', lsmReason };
  } catch (e) {
    return { reason: `helmd --network-only could not start here: ${(e as Error).message}`, lsmReason };
  }
}

/** The TypeScript reference evaluator deciding the measured read, with 5 rules and the large policy. */
function evaluator(layout: Layout, smoke: boolean): Row[] {
  const rows: Row[] = [];
  for (const [rules, role] of [
    [5, 'bench5'],
    [sizes(smoke).large, 'benchlarge'],
  ] as const) {
    const file = path.join(layout.root, `eval-${rules}.yaml`);
    fs.writeFileSync(file, benchPolicy(`eval-${rules}`, role, rules, layout, false));
    const { policies } = loadPolicies([file]);
    const op = { role, verb: 'read' as const, path: layout.readFile };
    if (evaluateOperation(policies, op).decision !== 'allow') throw new Error(`the reference evaluator does not allow ${layout.readFile} under ${file}`);
    const rounds = smoke ? 2 : rules > 100 ? 10 : 20;
    const batch = smoke ? 3 : rules > 100 ? 20 : 1000;
    const samples: number[] = [];
    for (let r = 0; r < rounds + 1; r++) {
      for (let i = 0; i < batch; i++) {
        const t0 = process.hrtime.bigint();
        evaluateOperation(policies, op);
        const t1 = process.hrtime.bigint();
        if (r > 0) samples.push(Number(t1 - t0)); // round 0 warms up
      }
    }
    rows.push({ section: 'evaluator', env: 'native', op: rules === 5 ? 'evaluate-5' : 'evaluate-large', variant: 'reference evaluator', time: figure(samples) });
  }
  return rows;
}

/**
 * From a policy file to the kernel deciding by it (`total`): the file parsed
 * (`parse-json`), compiled (`compile`), then the next generation's tables written
 * and switched in (`tables`, KernelEnforcer.applyGeneration). The file is JSON;
 * the same policy as YAML is parsed too, on its own (`parse-yaml`): the YAML
 * parser takes most of a second at 10,000 rules, which is why JSON is read
 * without it. Each apply is an edit: the policy differs from the one before in
 * one rule, as when a user changes a line, and is compiled as helmd compiles it:
 * from the compile of the one before (IncrementalCompiler). `compile-full` is the
 * same compile from nothing, as helmd's first (not part of the total). Between
 * applies the superseded generation is retired, as helmd does after answering
 * (not timed). `tables-new` is the same write when every entry differs (the whole
 * policy moved to another tree). helm's programs are loaded network-only, as this
 * kernel allows: the tables and the switch are the same with the LSM programs.
 */
export async function applyToLive(root: string, data: string, smoke: boolean): Promise<Row[]> {
  const rows: Row[] = [];
  const { apply } = sizes(smoke);
  let enforcer: KernelEnforcer;
  try {
    enforcer = KernelEnforcer.load(undefined, { networkOnly: true });
  } catch (e) {
    for (const n of apply) rows.push({ section: 'apply', env: 'native', op: `apply-${n}`, variant: 'total', couldNotRun: `helm's programs could not be loaded here: ${(e as Error).message}` });
    return rows;
  }
  try {
    for (const n of apply) {
      const file = path.join(root, `apply-${n}.json`);
      const yamlFile = path.join(root, `apply-${n}.yaml`);
      const times = { total: [] as number[], 'parse-json': [] as number[], 'parse-yaml': [] as number[], compile: [] as number[], 'compile-full': [] as number[], tables: [] as number[], 'tables-new': [] as number[] };
      const iterations = smoke ? 2 : scaled(n >= 10_000 ? 30 : 100);
      // helmd compiles each edit from the compile before it, as here.
      const compiler = new IncrementalCompiler();
      const ruleCache = new RuleCache(); // and parses each from the parse before
      // Warm-up: every slot of the outer maps gets its tables.
      for (let i = 0; i < C.HELM_MAX_GENERATIONS; i++) {
        enforcer.applyGeneration(compiler.compile(loadPolicies([writePolicy(file, applyPolicy(n, data, { edit: -1 - i }, 'json'))], { ruleCache }).policies));
        await enforcer.retire();
      }
      const editsBefore = ruleCache.editsParsed;
      for (let i = 0; i < iterations; i++) {
        writePolicy(file, applyPolicy(n, data, { edit: i }, 'json'));
        const t0 = performance.now();
        const { policies } = loadPolicies([file], { ruleCache });
        const t1 = performance.now();
        const compiled = compiler.compile(policies);
        const t2 = performance.now();
        enforcer.applyGeneration(compiled);
        const t3 = performance.now();
        await enforcer.retire();
        if (policies[0].rules.length !== n) throw new Error(`apply-${n}: the JSON file does not hold ${n} rules`);
        times.total.push((t3 - t0) * 1e6);
        times['parse-json'].push((t1 - t0) * 1e6);
        times.compile.push((t2 - t1) * 1e6);
        times.tables.push((t3 - t2) * 1e6);
      }
      const asEdits = ruleCache.editsParsed - editsBefore;
      // The full compile, in a loop of its own: its garbage (a new tree of every entry) would
      // otherwise be collected during the next apply, and counted there.
      for (let i = 0; i < iterations; i++) {
        const { policies } = loadPolicies([writePolicy(file, applyPolicy(n, data, { edit: i }, 'json'))], { ruleCache });
        const t0 = performance.now();
        compilePolicy(policies);
        times['compile-full'].push((performance.now() - t0) * 1e6);
      }
      // Every entry new: each version in its own tree (the slot last held another one).
      for (let i = 0; i < Math.max(2, Math.ceil(iterations / 3)); i++) {
        const compiled = compilePolicy(loadPolicies([writePolicy(file, applyPolicy(n, data, { tree: i }, 'json'))]).policies);
        const t0 = performance.now();
        enforcer.applyGeneration(compiled);
        times['tables-new'].push((performance.now() - t0) * 1e6);
        await enforcer.retire();
      }
      // The same edits written as YAML, parsed in a loop of their own: the YAML parser's
      // garbage (hundreds of MB at 10,000 rules) would otherwise be collected in the middle
      // of the JSON applies and be counted there. Last, for the same reason.
      for (let i = 0; i < iterations; i++) {
        writePolicy(yamlFile, applyPolicy(n, data, { edit: i }));
        const t0 = performance.now();
        const { policies } = loadPolicies([yamlFile]);
        times['parse-yaml'].push((performance.now() - t0) * 1e6);
        if (policies[0].rules.length !== n) throw new Error(`apply-${n}: the YAML file does not hold ${n} rules`);
      }
      for (const [variant, v] of Object.entries(times)) {
        // Whether the parses took the edit path (parse.ts, parseEdit) or read the whole source.
        const note = variant === 'parse-json' ? `${asEdits} of ${iterations} parsed as an edit of the parse before` : undefined;
        rows.push({ section: 'apply', env: 'native', op: `apply-${n}`, variant, time: figure(v), note });
      }
    }
  } finally {
    enforcer.close();
  }
  return rows;
}

function writePolicy(file: string, text: string): string {
  fs.writeFileSync(file, text);
  return file;
}
