// What one benchmark run produces: rows, each a measured figure or the reason
// it could not be measured, and the facts about the machine it ran on.
import type { Figure } from './stats';

/** Where a figure was measured: this machine's kernel, or the QEMU (TCG) VM's. */
export type Env = 'native' | 'vm';

export type Section = 'ops' | 'ungoverned' | 'evaluator' | 'compile' | 'apply' | 'audit' | 'helmd';

export interface Row {
  section: Section;
  env: Env;
  /** What is measured: an operation name ('read', 'get', ...) or a figure's name. */
  op: string;
  /** How: 'baseline', 'helm-5', 'helm-large', 'strace', 'seccomp', ... */
  variant: string;
  /** Time per operation, in nanoseconds. */
  time?: Figure;
  /** The baseline measured in the same run that `time` is compared with. */
  baseline?: Figure;
  /** A figure that is not a time per operation (events/s, MB, % CPU). */
  quantity?: { value: number; unit: string };
  couldNotRun?: string;
  note?: string;
}

export interface Meta {
  date: string;
  smoke: boolean;
  commit: string;
  cpu: string;
  cores: number;
  node: string;
  host: { kernel: string; tmpfs: string };
  vm?: { kernel: string; cpu: string; accel: string };
  /** Rules in the large policy; policy sizes apply-to-live was measured at. */
  sizes: { large: number; apply: number[] };
  /** --scale: the rounds of every measurement times this (absent: 1). */
  scale?: number;
  /** Which helm hooks the governed network figures went through (or why none). */
  network: { native: string; vm: string };
}

export interface Results {
  meta: Meta;
  rows: Row[];
}

/** Every row has a number or says why not: what the smoke test checks. */
export function rowProblem(r: Row): string | undefined {
  const has = r.time !== undefined || r.quantity !== undefined;
  if (has && r.couldNotRun) return 'has both a figure and a reason it could not run';
  if (!has && !r.couldNotRun) return 'has neither a figure nor a reason it could not run';
  if (r.time && !(Number.isFinite(r.time.median) && Number.isFinite(r.time.p99) && r.time.n > 0)) return 'has a time that is not a number';
  if (r.quantity && !Number.isFinite(r.quantity.value)) return 'has a quantity that is not a number';
  return undefined;
}
