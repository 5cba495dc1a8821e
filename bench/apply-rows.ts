// Runs bench/apply-latency.js (a PolicyService.Apply call to the first decision by the
// new generation) and turns what it prints into report rows: in the VM against the
// helmd there (file opens decide), natively with --network (its own helmd
// --network-only; connects decide).
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import type { Env, Row } from './model';
import { ROOT } from './ops';

interface Ms {
  n: number;
  p50: number;
  p99: number;
}

export function applyLatencyRows(env: Env, sizes: number[], samples: number[], args: string[]): Row[] {
  const script = path.join(ROOT, 'dist', 'bench', 'apply-latency.js');
  const fail = (why: string): Row[] => sizes.map((n) => ({ section: 'apply', env, op: `apply-${n}`, variant: 'rpc-to-live', couldNotRun: why }));
  if (!fs.existsSync(script)) return fail('bench/apply-latency.ts is not in this tree');
  const r = spawnSync(process.execPath, [script, ...args, '--rules', sizes.join(','), '--samples', samples.join(',')], { encoding: 'utf8', timeout: 3_600_000, maxBuffer: 16 << 20 });
  let report: { probe: string; baseline_status_rpc_ms: Ms; results: { rules: number; apply_to_live_ms: Ms; apply_rpc_ms: Ms }[] };
  try {
    report = JSON.parse((r.stdout ?? '').split('\n')[0]);
  } catch {
    return fail(`bench/apply-latency.js failed (exit ${r.status}): ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' | ') || 'no output'}`);
  }
  const fig = (m: Ms) => ({ median: m.p50 * 1e6, p99: m.p99 * 1e6, n: m.n });
  const rows: Row[] = [];
  for (const res of report.results) {
    const base = fig(report.baseline_status_rpc_ms);
    const note = `the first ${report.probe} the kernel decides by the new generation`;
    rows.push({ section: 'apply', env, op: `apply-${res.rules}`, variant: 'rpc-to-live', time: fig(res.apply_to_live_ms), baseline: base, note });
    rows.push({ section: 'apply', env, op: `apply-${res.rules}`, variant: 'rpc', time: fig(res.apply_rpc_ms), baseline: base });
  }
  return rows;
}
