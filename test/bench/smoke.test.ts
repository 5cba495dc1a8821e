// make bench-smoke as CI runs it: the whole benchmark with a few iterations,
// natively and in the VM. It asserts that the benchmark works — every figure
// is a number or says why it could not be measured, the report names the
// machine — and never asserts a timing.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { rowProblem, type Results, type Row } from '../../bench/model';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const OPS = ['read', 'write', 'exec', 'connect', 'get', 'post'];
const VARIANTS = ['baseline', 'baseline-2', 'helm-5', 'helm-large', 'strace', 'seccomp'];

t.test('bench --smoke: every row has a figure or the reason it could not run', async (t) => {
  if (process.getuid?.() !== 0) {
    t.fail('the benchmark needs root (cgroups, BPF maps, the VM)');
    return;
  }
  const out = fs.mkdtempSync(path.join(ROOT, 'build', 'bench-smoke-'));
  const started = Date.now();
  const r = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'bench', 'run.js'), '--smoke', '--out', out], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 1_200_000,
    maxBuffer: 64 << 20,
  });
  t.comment(`bench --smoke took ${((Date.now() - started) / 1000).toFixed(0)} s`);
  for (const line of (r.stderr ?? '').split('\n').filter((l) => /^bench(\(vm\))?[: ]/.test(l))) t.comment(line);
  t.equal(r.status, 0, `bench --smoke exits 0\n${(r.stderr ?? '').split('\n').slice(-15).join('\n')}`);
  const res = JSON.parse(fs.readFileSync(path.join(out, 'latest.json'), 'utf8')) as Results;
  const md = fs.readFileSync(path.join(out, 'latest.md'), 'utf8');
  t.equal(r.stdout.trim(), md.trim(), 'the report printed is the report written');

  t.ok(res.meta.smoke, 'marked as a smoke run');
  t.match(md, /\*\*Smoke run\*\*/, 'the report says it is a smoke run');
  t.equal(res.meta.host.kernel, os.release(), 'the host kernel');
  t.equal(res.meta.cpu, os.cpus()[0].model, 'the CPU');
  t.ok(Math.abs(Date.parse(res.meta.date) - started) < 60_000, 'the date of the run');
  t.ok(res.meta.vm?.kernel && res.meta.vm.kernel !== os.release(), `the VM's kernel (${res.meta.vm?.kernel})`);
  for (const s of [os.release(), res.meta.vm?.kernel ?? '?', os.cpus()[0].model, res.meta.date]) t.ok(md.includes(s), `the report names ${s}`);

  const problems = res.rows.map((row) => [row, rowProblem(row)] as const).filter(([, p]) => p);
  t.same(problems.map(([row, p]) => `${key(row)}: ${p}`), [], `all ${res.rows.length} rows have a figure or a reason`);
  t.ok(res.rows.filter((row) => row.couldNotRun).every((row) => row.couldNotRun!.length > 10), 'every reason says something');

  // Every figure the benchmark promises is there, in both places it runs.
  const want: string[] = [];
  for (const env of ['native', 'vm']) for (const op of OPS) for (const v of VARIANTS) want.push(`ops/${env}/${op}/${v}`);
  for (const op of ['read', 'exec', 'connect']) want.push(`ungoverned/vm/${op}/helm-loaded`);
  want.push('ungoverned/native/connect/helm-loaded');
  for (const op of ['evaluate-5', 'evaluate-large']) want.push(`evaluator/native/${op}/reference evaluator`);
  for (const n of res.meta.sizes.apply) for (const v of ['total', 'parse-json', 'parse-yaml', 'compile', 'tables']) want.push(`apply/native/apply-${n}/${v}`);
  for (const n of res.meta.sizes.apply) want.push(`apply/vm/apply-${n}/rpc-to-live`);
  want.push('audit/vm/events-per-second/helmd');
  want.push('audit/vm/trail-throughput/audit-throughput');
  want.push('audit/native/trail-throughput/audit-throughput'); // denied connects through helmd --network-only
  for (const op of ['cpu-idle', 'rss-idle', 'cpu-operations', 'rss-operations', 'cpu-audit', 'rss-audit']) want.push(`helmd/vm/${op}/helmd`);
  const have = new Set(res.rows.map(key));
  t.same(want.filter((k) => !have.has(k)), [], `the ${want.length} promised rows are there`);

  // What can always be measured here is: no "could not run" for it.
  const measured = (k: string) => res.rows.find((row) => key(row) === k);
  const mustMeasure = [
    ...OPS.flatMap((op) => ['baseline', 'baseline-2', 'strace', 'seccomp'].flatMap((v) => [`ops/native/${op}/${v}`, `ops/vm/${op}/${v}`])),
    ...['read', 'write', 'exec'].flatMap((op) => [`ops/vm/${op}/helm-5`, `ops/vm/${op}/helm-large`]),
    // helm's network hooks: natively (helmd --network-only) and in the VM
    ...['connect', 'get', 'post'].flatMap((op) => ['native', 'vm'].flatMap((env) => [`ops/${env}/${op}/helm-5`, `ops/${env}/${op}/helm-large`])),
    'audit/vm/events-per-second/helmd',
    'audit/native/trail-throughput/audit-throughput',
    ...res.meta.sizes.apply.flatMap((n) => [`apply/native/apply-${n}/total`, `apply/vm/apply-${n}/rpc-to-live`]),
    'ungoverned/native/connect/helm-loaded',
    ...['read', 'exec', 'connect'].map((op) => `ungoverned/vm/${op}/helm-loaded`),
  ];
  t.same(
    mustMeasure.filter((k) => !measured(k)?.time && !measured(k)?.quantity).map((k) => `${k}: ${measured(k)?.couldNotRun ?? 'missing'}`),
    [],
    'baselines, strace, seccomp, helm in the VM, ungoverned, audit and apply were measured',
  );
  t.same(
    res.rows.filter((row) => row.note?.startsWith('not hooked')).map(key),
    [],
    'governed connects went through helm’s hooks (probed: a connect no rule allows was refused)',
  );
  t.ok(
    res.rows.filter((row) => row.section === 'ops' && row.variant !== 'baseline' && row.time).every((row) => row.baseline),
    'every measured variant is compared with the baseline of its run',
  );
  const asWritten = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
  for (const row of res.rows.filter((x) => x.couldNotRun)) t.ok(md.includes(asWritten(row.couldNotRun!)), `the report says why ${key(row)} could not run`);
  fs.rmSync(out, { recursive: true, force: true });
});

function key(r: Row): string {
  return `${r.section}/${r.env}/${r.op}/${r.variant}`;
}
