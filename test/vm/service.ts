// helmd started the way systemd starts it, for the VM (whose init is a script):
// the installed unit's ExecStart, under its CapabilityBoundingSet and UMask, with
// its directories made first and NOTIFY_SOCKET pointing at a listener that plays
// systemd's part (build/test/notify-listen): the service is up when READY=1 arrives.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { ROOT } from './harness';

const NOTIFY_LISTEN = path.join(ROOT, 'build', 'test', 'notify-listen');
/** systemd's default PATH for services. */
const SERVICE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const CAP_NUMBERS: Record<string, number> = {
  CAP_CHOWN: 0, CAP_DAC_OVERRIDE: 1, CAP_DAC_READ_SEARCH: 2, CAP_FOWNER: 3, CAP_KILL: 5, CAP_NET_ADMIN: 12,
  CAP_SYS_MODULE: 16, CAP_SYS_PTRACE: 19, CAP_SYS_ADMIN: 21, CAP_SYS_RESOURCE: 24, CAP_PERFMON: 38, CAP_BPF: 39,
};

export interface Unit {
  execStart: string[];
  caps: string[];
  umask: string;
  /** What systemd creates before starting it: [path, mode]. */
  directories: [string, number][];
}

export function readUnit(file: string): Unit {
  const text = fs.readFileSync(file, 'utf8');
  const value = (key: string) => text.split('\n').find((l) => l.startsWith(`${key}=`))?.slice(key.length + 1);
  const dir = (key: string, base: string): [string, number][] => {
    const name = value(key);
    return name ? [[path.join(base, name), parseInt(value(`${key}Mode`) ?? '0755', 8)]] : [];
  };
  return {
    execStart: (value('ExecStart') ?? '').split(/\s+/).filter(Boolean),
    caps: (value('CapabilityBoundingSet') ?? '').split(/\s+/).filter(Boolean),
    umask: value('UMask') ?? '0022',
    directories: [...dir('RuntimeDirectory', '/run'), ...dir('StateDirectory', '/var/lib'), ...dir('LogsDirectory', '/var/log')],
  };
}

/** The CapEff mask a process limited to these capabilities has. */
export function capMask(caps: string[]): bigint {
  return caps.reduce((m, c) => {
    if (!(c in CAP_NUMBERS)) throw new Error(`capability ${c} not in the test's table`);
    return m | (1n << BigInt(CAP_NUMBERS[c]));
  }, 0n);
}

export interface Service {
  proc: ChildProcess;
  pid: number;
  /** Everything it printed (pino JSON lines and stderr). */
  log: () => string;
  /** What it told "systemd", one message a line. */
  notifications: string[];
  exited: Promise<number | null>;
  /** systemctl stop: SIGTERM, then the exit status. */
  stop: () => Promise<number | null>;
}

/**
 * Starts the unit's ExecStart as systemd would; resolves once READY=1 arrived (throws if it exits first).
 * The bound is the harness's: loading and verifying the programs takes minutes in a TCG VM on a loaded machine.
 */
export async function startService(unitFile: string, timeoutMs = 600_000): Promise<Service> {
  const unit = readUnit(unitFile);
  for (const [d, mode] of unit.directories) {
    fs.mkdirSync(d, { recursive: true });
    fs.chmodSync(d, mode);
  }
  const notifySocket = `/run/helm-test-notify-${crypto.randomBytes(4).toString('hex')}.sock`;
  const listener = spawn(NOTIFY_LISTEN, [notifySocket, String(Math.ceil(timeoutMs / 1000))], { stdio: ['ignore', 'pipe', 'inherit'] });
  let heard = '';
  listener.stdout!.on('data', (d) => (heard += d));
  const listened = new Promise<number | null>((r) => listener.on('exit', (code) => r(code)));
  while (!heard.includes('LISTENING')) {
    if (listener.exitCode !== null) throw new Error('notify-listen did not start');
    await new Promise((r) => setTimeout(r, 20));
  }
  const bounding = ['-all', ...unit.caps.map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`)].join(',');
  // umask, then the bounding set, then ExecStart: each exec keeps the pid (NotifyAccess=main).
  const proc = spawn('/bin/sh', ['-c', `umask ${unit.umask} && exec "$@"`, 'sh', '/usr/bin/setpriv', '--bounding-set', bounding, '--', ...unit.execStart], {
    cwd: '/',
    env: { PATH: SERVICE_PATH, NOTIFY_SOCKET: notifySocket, INVOCATION_ID: crypto.randomBytes(16).toString('hex') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  proc.stdout!.on('data', (d) => (output += d));
  proc.stderr!.on('data', (d) => (output += d));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  const ready = await Promise.race([listened.then((code) => (code === 0 ? 'ready' : 'silent')), exited.then(() => 'exited')]);
  fs.rmSync(notifySocket, { force: true });
  if (ready !== 'ready') {
    listener.kill();
    proc.kill('SIGKILL');
    throw new Error(`helmd did not report READY=1 (${ready}):\n${output}`);
  }
  return {
    proc,
    pid: proc.pid!,
    log: () => output,
    notifications: heard.split('\n').filter((l) => l && l !== 'LISTENING'),
    exited,
    stop: async () => {
      proc.kill('SIGTERM');
      return exited;
    },
  };
}

/** The effective capabilities of a process, as /proc says. */
export function capEff(pid: number): bigint {
  const line = fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('CapEff:'))!;
  return BigInt(`0x${line.split(/\s+/)[1]}`);
}

/** helm's attached programs: link id → program name, from bpftool. */
export function helmLinks(): Map<number, string> {
  const progs = JSON.parse(spawnSync('bpftool', ['-j', 'prog', 'show'], { encoding: 'utf8' }).stdout || '[]') as { id: number; name?: string }[];
  const names = new Map(progs.map((p) => [p.id, p.name ?? '']));
  const links = JSON.parse(spawnSync('bpftool', ['-j', 'link', 'show'], { encoding: 'utf8' }).stdout || '[]') as { id: number; prog_id: number }[];
  const out = new Map<number, string>();
  for (const l of links) {
    const name = names.get(l.prog_id) ?? '';
    if (name.startsWith('helm_')) out.set(l.id, name);
  }
  return out;
}
