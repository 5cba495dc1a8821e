// What helm costs processes it does not govern: the same ungoverned workers,
// batch after batch, with helm loaded and not loaded in turn.
import { figure } from './stats';
import type { Env, Row } from './model';
import { type Layout, type Op, planFor, workerArgv } from './ops';
import { Worker } from './worker';

export type HelmState = 'loaded' | 'unloaded';

export interface UngovernedOptions {
  env: Env;
  ops: readonly Op[];
  layout: Layout;
  /** An ungoverned cgroup of the same depth as governed ones. */
  cgroup: string;
  smoke: boolean;
}

/** Workers kept alive across helm's loads and unloads; batch() measures the current state. */
export class UngovernedSession {
  private readonly workers = new Map<Op, Worker>();
  private readonly failed = new Map<Op, string>();

  constructor(private readonly o: UngovernedOptions) {
    for (const op of o.ops) this.workers.set(op, new Worker(op, workerArgv(op, o.layout, `free-${op}`, { kind: 'plain' }, o.cgroup)));
  }

  private fail(op: Op, e: unknown): void {
    if (!this.failed.has(op)) this.failed.set(op, (e as Error).message.replace(`${op}: `, ''));
  }

  async warm(): Promise<void> {
    for (const [op, w] of this.workers) await w.warm(planFor(op, this.o.env, this.o.smoke).warmup).catch((e) => this.fail(op, e));
  }

  /** One batch per operation, labelled with helm's state now. */
  async batch(state: HelmState): Promise<void> {
    for (const [op, w] of this.workers) {
      if (this.failed.has(op)) continue;
      // Twice a comparison batch: fewer loads of helm for as many samples.
      const n = this.o.smoke ? 5 : planFor(op, this.o.env, false).batch * 2;
      await w.run(n, state).catch((e) => this.fail(op, e));
    }
  }

  /** Rows comparing the loaded batches with the unloaded ones; `why` if helm itself could not be loaded. */
  async finish(why?: string): Promise<Row[]> {
    const rows: Row[] = [];
    for (const [op, w] of this.workers) {
      const row: Row = { section: 'ungoverned', env: this.o.env, op, variant: 'helm-loaded' };
      try {
        if (why) throw new Error(why);
        if (this.failed.has(op)) throw new Error(this.failed.get(op));
        const by = await w.finish();
        const loaded = by.get('loaded');
        const unloaded = by.get('unloaded');
        if (!loaded || !unloaded) throw new Error('helm was not both loaded and not loaded during the run');
        row.time = figure(loaded);
        row.baseline = figure(unloaded);
      } catch (e) {
        row.couldNotRun = (e as Error).message;
      }
      rows.push(row);
    }
    this.kill();
    return rows;
  }

  kill(): void {
    for (const w of this.workers.values()) w.kill();
  }
}

/**
 * Rounds of: a batch with helm not loaded, a batch with it loaded (the order
 * alternating between rounds, so a drift over time favours neither state).
 */
export async function alternate(session: UngovernedSession, rounds: number, load: () => Promise<{ stop: () => Promise<void> }>, say: (s: string) => void): Promise<void> {
  for (let r = 0; r < rounds; r++) {
    say(`ungoverned: round ${r + 1}/${rounds}`);
    for (const state of (r % 2 === 0 ? ['unloaded', 'loaded'] : ['loaded', 'unloaded']) as HelmState[]) {
      if (state === 'unloaded') {
        await session.batch('unloaded');
        continue;
      }
      const helm = await load();
      try {
        await session.batch('loaded');
      } finally {
        await helm.stop();
      }
    }
  }
}
