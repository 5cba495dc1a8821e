// Workers (bench/driver.c in worker mode) and the interleaved comparison.
//
// A worker is started once in the context it measures (a cgroup, under strace,
// under the seccomp supervisor) and then given batches of operations: it times
// each operation with clock_gettime and keeps the samples until the end. The
// comparison hands every variant a batch in turn, round after round, in a new
// (seeded) order each round, so that whatever else the machine does in the
// meantime falls on all of them alike, and no variant always follows the same
// other one (a strace'd batch leaves the caches in another state than a plain
// one).
import { spawn, type ChildProcess } from 'node:child_process';
import { figure, type Figure } from './stats';
import { Rng } from '../test/rng';

export class WorkerFailed extends Error {}

export class Worker {
  private readonly proc: ChildProcess;
  private buffered = '';
  private readonly lines: string[] = [];
  private waiting?: () => void;
  private stderr = '';
  private exited = false;
  /** Each recorded batch: its label and size, in order (the driver returns one list). */
  private readonly batches: { label: string; n: number }[] = [];

  constructor(readonly name: string, argv: string[], env: NodeJS.ProcessEnv = process.env) {
    this.proc = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env });
    this.proc.stdout!.setEncoding('utf8');
    this.proc.stdout!.on('data', (d: string) => {
      this.buffered += d;
      let i: number;
      while ((i = this.buffered.indexOf('\n')) >= 0) {
        this.lines.push(this.buffered.slice(0, i));
        this.buffered = this.buffered.slice(i + 1);
      }
      this.waiting?.();
    });
    this.proc.stderr!.on('data', (d) => (this.stderr += d));
    // 'close', not 'exit': it comes after the last of stdout has been read.
    this.proc.on('close', () => {
      this.exited = true;
      this.waiting?.();
    });
    this.proc.stdin!.on('error', () => {}); // a worker that died: reported by the next command
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  private async line(timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (this.lines.length === 0) {
      if (this.exited) {
        throw new WorkerFailed(`${this.name}: the worker exited${this.stderr ? `: ${this.stderr.trim().split('\n').slice(-3).join(' | ')}` : ''}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new WorkerFailed(`${this.name}: no answer within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiting = () => {
          clearTimeout(t);
          r();
        };
      });
      this.waiting = undefined;
    }
    return this.lines.shift()!;
  }

  private async command(cmd: string, timeoutMs: number): Promise<string> {
    this.proc.stdin!.write(`${cmd}\n`);
    const answer = await this.line(timeoutMs);
    if (!answer.startsWith('ok')) {
      const m = /^err (\d+) (.*)$/.exec(answer);
      throw new WorkerFailed(`${this.name}: ${m ? m[2] : answer}`);
    }
    return answer;
  }

  async warm(n: number, timeoutMs = 600_000): Promise<void> {
    await this.command(`w ${n}`, timeoutMs);
  }

  async run(n: number, label = this.name, timeoutMs = 600_000): Promise<void> {
    await this.command(`r ${n}`, timeoutMs);
    this.batches.push({ label, n });
  }

  /** Operations done in `ms` milliseconds, untimed. */
  async runFor(ms: number): Promise<number> {
    const answer = await this.command(`d ${ms}`, ms + 600_000);
    return Number(answer.split(' ')[1]);
  }

  /** Ends the worker; its samples by batch label. */
  async finish(timeoutMs = 120_000): Promise<Map<string, number[]>> {
    this.proc.stdin!.write('q\n');
    const head = await this.line(timeoutMs);
    const m = /^samples (\d+)$/.exec(head);
    if (!m) throw new WorkerFailed(`${this.name}: unexpected answer ${JSON.stringify(head)}`);
    const all: number[] = [];
    for (let i = 0; i < Number(m[1]); i++) all.push(Number(await this.line(timeoutMs)));
    const out = new Map<string, number[]>();
    let at = 0;
    for (const b of this.batches) {
      const list = out.get(b.label) ?? [];
      list.push(...all.slice(at, at + b.n));
      out.set(b.label, list);
      at += b.n;
    }
    return out;
  }

  kill(): void {
    if (!this.exited) this.proc.kill('SIGKILL');
  }
}

export interface Variant {
  name: string;
  /** The command that starts a worker in this variant's context. */
  argv: string[];
}

export interface Plan {
  warmup: number;
  rounds: number;
  batch: number;
}

export type Outcome = { figure: Figure; samples: number[] } | { error: string };

/**
 * Every variant measured in the same run, interleaved. A variant whose worker
 * cannot start or whose operation fails is reported with the reason; the
 * others go on without it.
 */
export async function interleave(variants: Variant[], plan: Plan): Promise<Map<string, Outcome>> {
  const out = new Map<string, Outcome>();
  const live: Worker[] = [];
  for (const v of variants) {
    const w = new Worker(v.name, v.argv);
    try {
      await w.warm(plan.warmup);
      live.push(w);
    } catch (e) {
      w.kill();
      out.set(v.name, { error: (e as Error).message.replace(`${v.name}: `, '') });
    }
  }
  const rng = new Rng(0xbe7c4);
  try {
    for (let r = 0; r < plan.rounds; r++) {
      for (const w of rng.shuffle(live)) {
        if (out.has(w.name)) continue;
        try {
          await w.run(plan.batch);
        } catch (e) {
          out.set(w.name, { error: (e as Error).message.replace(`${w.name}: `, '') });
        }
      }
    }
    for (const w of live) {
      if (out.has(w.name)) continue;
      const samples = (await w.finish()).get(w.name) ?? [];
      out.set(w.name, { figure: figure(samples), samples });
    }
  } finally {
    for (const w of live) w.kill();
  }
  return out;
}
