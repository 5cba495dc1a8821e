// Every operation in every variant, interleaved, and the rows that say so.
import type { Env, Row } from './model';
import { type Layout, type Op, NET_OPS, planFor, straceMissing, variant } from './ops';
import { interleave, type Variant } from './worker';

export interface GovernedCgroups {
  /** Ungoverned, same depth as the governed ones: baseline, strace, seccomp. */
  base: string;
  /** Governed by the 5-rule and the large policy; or why helm cannot run here. */
  helm: { g5: string; gLarge: string } | { reason: string };
}

export interface OpsOptions {
  env: Env;
  ops: readonly Op[];
  layout: Layout;
  cgroups: GovernedCgroups;
  /** Whether a governed connect goes through a helm hook (probed). */
  netHooked: boolean;
  smoke: boolean;
  say: (s: string) => void;
}

/**
 * Variants: baseline, a second baseline process (the A/A comparison: what
 * noise alone looks like), helm with 5 rules and with the large policy (10,000), strace -f, and
 * the seccomp supervisor. A variant that cannot run gets a row saying why.
 */
export async function measureOps(o: OpsOptions): Promise<Row[]> {
  const rows: Row[] = [];
  const noStrace = straceMissing();
  for (const op of o.ops) {
    o.say(`operations: ${op}`);
    const variants: Variant[] = [
      variant(op, o.layout, 'baseline', { kind: 'plain' }, o.cgroups.base),
      variant(op, o.layout, 'baseline-2', { kind: 'plain' }, o.cgroups.base),
    ];
    const helm = o.cgroups.helm;
    if ('g5' in helm) {
      variants.push(variant(op, o.layout, 'helm-5', { kind: 'cgroup', dir: helm.g5 }));
      variants.push(variant(op, o.layout, 'helm-large', { kind: 'cgroup', dir: helm.gLarge }));
    }
    if (!noStrace) variants.push(variant(op, o.layout, 'strace', { kind: 'strace' }, o.cgroups.base));
    variants.push(variant(op, o.layout, 'seccomp', { kind: 'seccomp' }, o.cgroups.base));

    const out = await interleave(variants, planFor(op, o.env, o.smoke));
    const base = out.get('baseline');
    const baseFigure = base && 'figure' in base ? base.figure : undefined;
    const unhooked = NET_OPS.includes(op as never) && !o.netHooked;
    for (const v of variants) {
      const r = out.get(v.name)!;
      const governed = v.name.startsWith('helm-');
      const note = governed && unhooked ? 'not hooked: helm makes no decision on this path yet' : undefined;
      const row: Row = { section: 'ops', env: o.env, op, variant: v.name, note };
      if ('error' in r) row.couldNotRun = r.error;
      else {
        row.time = r.figure;
        if (v.name !== 'baseline' && baseFigure) row.baseline = baseFigure;
      }
      rows.push(row);
    }
    if ('reason' in helm) {
      for (const name of ['helm-5', 'helm-large']) rows.push({ section: 'ops', env: o.env, op, variant: name, couldNotRun: helm.reason });
    }
    if (noStrace) rows.push({ section: 'ops', env: o.env, op, variant: 'strace', couldNotRun: noStrace });
  }
  return rows;
}
