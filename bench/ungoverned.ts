// What helm costs processes it does not govern: the same ungoverned workers,
// batch after batch, with helmd stopped and running in turn.
import { figure } from './stats';
import type { Env, Row } from './model';
import { type Layout, type Op, planFor, workerArgv } from './ops';
import { Worker } from './worker';

export interface UngovernedOptions {
  env: Env;
  ops: readonly Op[];
  layout: Layout;
  /** An ungoverned cgroup of the same depth as governed ones. */
  cgroup: string;
  /** Loads helm (a policy in force, governing nothing the workers are in); stop() unloads it. */
  start: () => Promise<{ stop: () => Promise<void> }>;
  rounds: number;
  smoke: boolean;
  say: (s: string) => void;
}

export async function measureUngoverned(o: UngovernedOptions): Promise<Row[]> {
  const rows: Row[] = [];
  const workers = new Map<Op, Worker>();
  const failed = new Map<Op, string>();
  for (const op of o.ops) workers.set(op, new Worker(op, workerArgv(op, o.layout, `free-${op}`, { kind: 'plain' }, o.cgroup)));
  // Twice a comparison batch per state: fewer helmd restarts for as many samples.
  const batch = (op: Op) => (o.smoke ? 5 : planFor(op, o.env, false).batch * 2);
  const runAll = async (label: string) => {
    for (const [op, w] of workers) {
      if (failed.has(op)) continue;
      await w.run(batch(op), label).catch((e) => failed.set(op, (e as Error).message.replace(`${op}: `, '')));
    }
  };
  let helmd: { stop: () => Promise<void> } | undefined;
  try {
    for (const [op, w] of workers) {
      await w.warm(planFor(op, o.env, o.smoke).warmup).catch((e) => failed.set(op, (e as Error).message.replace(`${op}: `, '')));
    }
    for (let r = 0; r < o.rounds; r++) {
      o.say(`ungoverned: round ${r + 1}/${o.rounds}`);
      // Alternate which state goes first, so a drift over time favours neither.
      for (const loaded of r % 2 === 0 ? [false, true] : [true, false]) {
        if (loaded) helmd = await o.start();
        await runAll(loaded ? 'loaded' : 'unloaded');
        if (loaded) {
          await helmd!.stop();
          helmd = undefined;
        }
      }
    }
    for (const [op, w] of workers) {
      if (failed.has(op)) {
        rows.push({ section: 'ungoverned', env: o.env, op, variant: 'helm-loaded', couldNotRun: failed.get(op) });
        continue;
      }
      const by = await w.finish();
      rows.push({ section: 'ungoverned', env: o.env, op, variant: 'helm-loaded', time: figure(by.get('loaded')!), baseline: figure(by.get('unloaded')!) });
    }
  } catch (e) {
    // helmd itself would not start: no comparison at all
    for (const op of o.ops) {
      if (!rows.some((r) => r.op === op)) rows.push({ section: 'ungoverned', env: o.env, op, variant: 'helm-loaded', couldNotRun: (e as Error).message });
    }
  } finally {
    for (const w of workers.values()) w.kill();
    await helmd?.stop();
  }
  return rows;
}
