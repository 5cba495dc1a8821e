// Runs bench/audit-throughput.js (its own helmd) and turns what it prints into
// report rows: natively with the connect load (helmd --network-only), or in the
// VM with the open load (BPF LSM).
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import type { Env, Row } from './model';
import { ROOT } from './ops';

export function auditThroughputRows(env: Env, args: string[]): Row[] {
  const script = path.join(ROOT, 'dist', 'bench', 'audit-throughput.js');
  const row = { section: 'audit', env, op: 'trail-throughput', variant: 'audit-throughput' } as const;
  if (!fs.existsSync(script)) return [{ ...row, couldNotRun: 'bench/audit-throughput.ts is not in this tree' }];
  const r = spawnSync(process.execPath, [script, ...args], { encoding: 'utf8', timeout: 1_800_000, maxBuffer: 16 << 20 });
  let m: Record<string, number | string>;
  try {
    m = JSON.parse((r.stdout ?? '').split('\n')[0]);
  } catch {
    return [{ ...row, couldNotRun: `bench/audit-throughput.js failed (exit ${r.status}): ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' | ') || 'no output'}` }];
  }
  const q = (op: string, value: unknown, unit: string): Row => ({ ...row, op, quantity: { value: Number(value), unit } });
  return [
    q('trail-throughput', m.written_per_s, `events/s (${m.load}, fsync ${m.fsync}, trail on ${m.trail_fs})`),
    q('trail-produced', m.produced_per_s, 'denials/s'),
    q('trail-raw-append', m.raw_append_per_s, 'lines/s'),
    q('trail-ratio-raw', Number(m.ratio_vs_raw_append) * 100, '% of the plain appends’ rate'),
    q('trail-lost', m.lost, 'events'),
    q('trail-cpu', m.helmd_cpu_percent, '% of a CPU'),
    q('trail-cpu-per-event', m.helmd_cpu_us_per_event, 'µs of CPU per event'),
    q('trail-rss-idle', Number(m.rss_idle_kb) / 1024, 'MB'),
    q('trail-rss-peak', Number(m.rss_peak_kb) / 1024, 'MB (peak)'),
    q('trail-rss-rings', Number(m.rss_rings_kb) / 1024, 'MB'),
  ];
}
