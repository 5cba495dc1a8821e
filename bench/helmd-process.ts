// helmd as the benchmark runs it (started the way the README starts it), the
// cgroups its workers run in, and what /proc says helmd costs.
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { call } from '../daemon/control/client';
import { cgroup2Mount } from '../daemon/control/cgroups';
import { HELMD, ROOT } from './ops';
import { scratchPins } from '../test/support/scratch-pins';

export interface RunningHelmd {
  proc: ChildProcess;
  pid: number;
  socket: string;
  audit: string;
  log: () => string;
  stop: () => Promise<void>;
}

/** `nodeArgs`: helmd's bundle run by this node with these options first (e.g. --cpu-prof), instead of bin/helmd (whose own V8 option is kept). */
export async function startHelmd(args: { policy: string; audit: string; socket: string; extra?: string[]; nodeArgs?: string[] }): Promise<RunningHelmd> {
  let output = '';
  // Its own pins, removed when it stops: the benchmark leaves no enforcement behind.
  const pins = scratchPins('bench');
  const helmdArgs = ['--policy', args.policy, '--audit-log', args.audit, '--socket', args.socket, ...pins.args, ...(args.extra ?? [])];
  const proc = args.nodeArgs
    ? // bin/helmd's node options and environment (keep them in step), then these.
      spawn(process.execPath, ['--max-semi-space-size=2', ...args.nodeArgs, path.join(ROOT, 'dist', 'bundle', 'helmd.js'), ...helmdArgs], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, MALLOC_MMAP_THRESHOLD_: '131072' },
      })
    : spawn(HELMD, helmdArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout!.on('data', (d) => (output += d));
  proc.stderr!.on('data', (d) => (output += d));
  const exited = new Promise<void>((r) => proc.on('exit', () => r()));
  const deadline = Date.now() + 300_000;
  while (!/helmd enforcing|helmd running in DRY-RUN/.test(output)) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill('SIGKILL');
      await exited;
      pins.remove(args.audit);
      throw new Error(`helmd did not start: ${whyNotStarted(output)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    proc,
    pid: proc.pid!,
    socket: args.socket,
    audit: args.audit,
    log: () => output,
    stop: async () => {
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 60_000);
      await exited;
      clearTimeout(t);
      pins.remove(args.audit);
    },
  };
}

/** helmd's own one-line reason ("NOT ENFORCING — ..."), else its last lines. */
export function whyNotStarted(output: string): string {
  const m = /NOT ENFORCING — (.*)/.exec(output);
  if (m) return m[1].trim();
  return output.trim().split('\n').slice(-3).join(' | ') || 'no output';
}

export async function attach(socket: string, cgroupDir: string, role: string): Promise<void> {
  await call(socket, 'AgentService', 'Attach', { cgroup_path: cgroupDir, role, dry_run: false, name: path.basename(cgroupDir), labels: {} }, 120_000);
}

export async function status(socket: string): Promise<{ events_written: string; events_lost: string }> {
  return call(socket, 'SystemService', 'Status', {}, 120_000);
}

/** Sibling cgroups of one depth under <cgroup2>/helm-bench-<pid>/, removed by cleanup(). */
export class BenchCgroups {
  readonly base: string;
  private readonly made: string[] = [];

  constructor() {
    const mount = cgroup2Mount();
    if (!mount) throw new Error('no cgroup v2 hierarchy is mounted');
    this.base = path.join(mount, `helm-bench-${process.pid}`);
    fs.mkdirSync(this.base);
  }

  make(name: string): string {
    const dir = path.join(this.base, name);
    fs.mkdirSync(dir);
    this.made.push(dir);
    return dir;
  }

  /**
   * Removes the cgroups. Whatever still runs in them is the benchmark's own
   * (a worker's tracee outliving its killed strace, say): killed first.
   */
  async cleanup(): Promise<void> {
    for (const dir of [...[...this.made].reverse(), this.base]) {
      for (let i = 0; i < 100; i++) {
        try {
          fs.rmdirSync(dir);
          break;
        } catch {
          if (i === 0) killAll(dir);
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    }
  }
}

function killAll(dir: string): void {
  try {
    if (fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').trim()) fs.writeFileSync(path.join(dir, 'cgroup.kill'), '1');
  } catch {
    // gone already, or a kernel without cgroup.kill: the retries wait for the processes to end
  }
}

/** CPU time (user + system, in clock ticks) and memory (kB) of a process. */
export interface ProcSample {
  at: number;
  ticks: number;
  rssKb: number;
  hwmKb: number;
}

export function procSample(pid: number): ProcSample {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of stat)
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { at: performance.now(), ticks, rssKb: kb('VmRSS'), hwmKb: kb('VmHWM') };
}

/** % of one CPU between two samples (clock ticks are 100 a second on Linux). */
export function cpuPercent(a: ProcSample, b: ProcSample): number {
  const seconds = (b.at - a.at) / 1000;
  return seconds > 0 ? ((b.ticks - a.ticks) / 100 / seconds) * 100 : NaN;
}
