// Audit throughput: how many decisions per second helmd carries from the kernel
// to disk, sustained, and the memory and CPU it takes doing it. Not a test: it
// asserts nothing and prints what it measured, as JSON and as a Markdown table.
//
//   node dist/bench/audit-throughput.js [--seconds N] [--workers N]
//       [--fsync every-batch|interval:MS|none] [--dir DIR] [--verify]
//       [--load denied-connect|denied-open] [--vm] [--in-vm] [--profile DIR]
//
// The load: governed workers (bench/driver.c) make denials as fast as they can
// for N seconds; every denial is an event on the deny ring, and a line in the
// trail. Two loads:
// - denied-connect: a TCP connect to a loopback port no rule allows. helm's
//   connect hook is a cgroup program, which kernels that refuse BPF LSM still
//   run: helmd runs --network-only and the whole path — kernel, ring, drain,
//   trail, disk — is this machine's own, without emulation. The default here.
// - denied-open: an open of a file no rule allows, through the LSM hook. Needs
//   a kernel that runs BPF LSM programs; on one that does not, --vm runs the
//   whole benchmark inside the bundled VM (scripts/vm/run.sh: QEMU TCG,
//   software emulated, far slower than hardware).
//
// Sustained rate = decision lines on disk / time from the first denial to the
// moment the last one was written (fsync'd, with the default policy) or counted
// lost. Two baselines measured in the same run give it meaning: the rate the
// workers made denials at (the kernel's side, what the drain must keep up with),
// and the rate this machine appends the trail's own lines to a file of the same
// filesystem with plain write(2) + fdatasync in batches of helmd's largest
// batch (the disk's side, without draining, decoding, JSON or hashing).
// --verify then checks the trail's hash chain (helmctl audit verify).
// --profile DIR: helmd's CPU profile during the flood and the drain, written to
// DIR (bench/cpu-profile.ts; open it in Chrome's DevTools).
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { call } from '../daemon/control/client';
import { type ProcSample, BenchCgroups, attach, cpuPercent, procSample, startHelmd, type RunningHelmd } from './helmd-process';
import { DRIVER, HELM_ENTER, ROOT } from './ops';
import { Worker } from './worker';
import { MAX_BATCH } from '../daemon/audit/writer';

const HELMCTL = path.join(ROOT, 'bin', 'helmctl');
/** The raw baseline writes as many lines per write as helmd's largest batch. */
const RAW_BATCH = MAX_BATCH;

type Load = 'denied-connect' | 'denied-open';

interface Options {
  seconds: number;
  workers: number;
  fsync: string;
  dir: string;
  load: Load;
  verify: boolean;
  vm: boolean;
  inVm: boolean;
  profile?: string;
}

function options(): Options {
  const a = process.argv.slice(2);
  const val = (name: string, dflt: string) => (a.includes(name) ? a[a.indexOf(name) + 1] : dflt);
  const seconds = Number(val('--seconds', '10'));
  if (!Number.isFinite(seconds) || seconds <= 0) throw new Error('--seconds takes a number above 0');
  const workers = Number(val('--workers', '1'));
  if (!Number.isInteger(workers) || workers < 1) throw new Error('--workers takes a whole number above 0');
  const inVm = a.includes('--in-vm');
  const vm = a.includes('--vm');
  const load = val('--load', inVm || vm ? 'denied-open' : 'denied-connect');
  if (load !== 'denied-connect' && load !== 'denied-open') throw new Error('--load is denied-connect or denied-open');
  return { seconds, workers, fsync: val('--fsync', 'every-batch'), dir: val('--dir', '/srv/helm-bench-audit'), load, verify: a.includes('--verify'), vm, inVm, profile: a.includes('--profile') ? path.resolve(val('--profile', '')) : undefined };
}

function bpfLsmUsable(): boolean {
  // The host kernel may list bpf as an LSM and still refuse its programs: ask helmctl doctor.
  const r = spawnSync(HELMCTL, ['doctor', '--json'], { encoding: 'utf8' });
  try {
    return (JSON.parse(r.stdout) as { ok: boolean }[]).every((c) => c.ok);
  } catch {
    return false;
  }
}

interface Status {
  events_written: string;
  events_lost: string;
  audit: { lines_written: string; backlog: string; rotations: number };
}

/**
 * `lines` (the trail's own) appended to `file` with write(2) in batches of
 * RAW_BATCH, each batch followed by fdatasync unless `sync` is false, until
 * `total` lines are written. Lines per second.
 */
function rawAppendRate(file: string, lines: string[], total: number, sync: boolean): number {
  const batches: Buffer[] = [];
  for (let i = 0; i < lines.length; i += RAW_BATCH) {
    const some = lines.slice(i, i + RAW_BATCH);
    while (some.length < RAW_BATCH) some.push(...lines.slice(0, RAW_BATCH - some.length));
    batches.push(Buffer.from(`${some.join('\n')}\n`));
  }
  const fd = fs.openSync(file, 'a');
  const t0 = process.hrtime.bigint();
  let n = 0;
  for (let b = 0; n < total; b = (b + 1) % batches.length, n += RAW_BATCH) {
    fs.writeSync(fd, batches[b]);
    if (sync) fs.fdatasyncSync(fd);
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  fs.closeSync(fd);
  fs.rmSync(file);
  return n / s;
}

/** The last `n` decision lines of the trail (its active file), read from the end. */
function lastDecisionLines(file: string, n: number): string[] {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    const want = Math.min(size, n * 4096);
    const buf = Buffer.alloc(want);
    fs.readSync(fd, buf, 0, want, size - want);
    return buf
      .toString('utf8')
      .split('\n')
      .slice(1)
      .filter((l) => l.includes('"type":"decision"'))
      .slice(-n);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Resident kB of helmd's mappings of BPF maps: the audit rings, which helmd
 * maps whole (their data pages once: native/helm_shim.c copies a record that
 * wraps around in two pieces): kernel memory counted in helmd's RSS.
 */
function ringRssKb(pid: number): number {
  let kb = 0;
  let inMap = false;
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inMap = line.includes('anon_inode:bpf-map');
    else if (inMap && line.startsWith('Rss:')) kb += Number(/(\d+)/.exec(line)![1]);
  }
  return kb;
}

function fsType(dir: string): string {
  const r = spawnSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : 'unknown';
}

function policy(o: Options, secret: string): string {
  // The workers' own binary and the loader may run; the denial each makes is the only thing they do.
  const allow = [`    - { id: runtime, exec: [${DRIVER}, /usr/lib/, /usr/lib64/], read: [/usr/lib/, /usr/lib64/, /etc/ld.so.cache] }`];
  // Connects: one port is allowed (so the role has network rules); the workers connect to another.
  if (o.load === 'denied-connect') allow.push('    - { id: elsewhere, connect: ["127.0.0.1:9"] }');
  return [
    'apiVersion: helm/v1',
    'kind: Policy',
    'metadata: { name: bench-audit }',
    'spec:',
    '  roles: [bench]',
    '  allow:',
    ...allow,
    '  block:',
    `    - { id: secret, read: [${secret}] }`,
    '',
  ].join('\n');
}

async function measure(o: Options): Promise<Record<string, unknown>> {
  fs.rmSync(o.dir, { recursive: true, force: true });
  fs.mkdirSync(`${o.dir}/trail`, { recursive: true });
  const secret = `${o.dir}/secret.txt`;
  fs.writeFileSync(secret, 'secret\n');
  fs.writeFileSync(`${o.dir}/policy.yaml`, policy(o, secret));
  const audit = `${o.dir}/trail/audit.jsonl`;
  // Rotation is on the measured path (every 256 MiB); compression is not (gzip of
  // this much would take the CPU the drain is measured with: it runs in the background).
  const extra = ['--audit-fsync', o.fsync, '--audit-rotate-size', '256M', '--no-audit-compress'];
  if (o.load === 'denied-connect') extra.push('--network-only');
  if (o.profile) {
    fs.mkdirSync(o.profile, { recursive: true });
    process.env.HELM_CPU_PROFILE_DIR = o.profile;
  }
  const helmd: RunningHelmd = await startHelmd({ policy: `${o.dir}/policy.yaml`, audit, socket: `${o.dir}/helmd.sock`, extra, nodeArgs: o.profile ? ['-r', path.join(__dirname, 'cpu-profile.js')] : undefined });
  const cgroups = new BenchCgroups();
  const workers: Worker[] = [];
  try {
    const cg = cgroups.make('agent');
    await attach(helmd.socket, cg, 'bench');
    const loadArgs = o.load === 'denied-connect' ? ['--op', 'denied-connect', '--port', '9999'] : ['--op', 'denied-open', '--file', secret];
    for (let i = 0; i < o.workers; i++) workers.push(new Worker(`deny-${i}`, [HELM_ENTER, cg, '--', DRIVER, 'worker', ...loadArgs]));
    // Each worker proves its load is denied (and warms up) before anything is measured.
    await Promise.all(workers.map((w) => w.warm(100)));
    await new Promise((r) => setTimeout(r, 1000));
    const stat = () => call<Status>(helmd.socket, 'SystemService', 'Status', {}, 120_000);
    const before = await stat();
    const idle = procSample(helmd.pid);

    let peakKb = idle.rssKb;
    const sampler = setInterval(() => (peakKb = Math.max(peakKb, procSample(helmd.pid).rssKb)), 100);
    if (o.profile) process.kill(helmd.pid, 'SIGUSR2');
    const t0 = performance.now();
    const cpu0 = procSample(helmd.pid);
    const counts = await Promise.all(workers.map((w) => w.runFor(o.seconds * 1000)));
    const produceS = (performance.now() - t0) / 1000;
    const produced = counts.reduce((x, y) => x + y, 0);

    // Until every denial is on disk or counted lost (helmd reads the loss counters once a second).
    let after = before;
    let doneAt = performance.now();
    let cpu1: ProcSample = cpu0;
    const deadline = Date.now() + 600_000;
    for (;;) {
      after = await stat();
      doneAt = performance.now();
      cpu1 = procSample(helmd.pid);
      const accounted = Number(after.events_written) - Number(before.events_written) + Number(after.events_lost) - Number(before.events_lost);
      if (accounted >= produced && Number(after.audit.backlog) === 0) break;
      if (Date.now() > deadline) throw new Error(`only ${accounted} of ${produced} denials reached the trail or the lost count within 10 minutes`);
      await new Promise((r) => setTimeout(r, 20));
    }
    clearInterval(sampler);
    if (o.profile) process.kill(helmd.pid, 'SIGUSR2');
    const drainS = (doneAt - t0) / 1000;
    const written = Number(after.events_written) - Number(before.events_written);
    const lost = Number(after.events_lost) - Number(before.events_lost);
    const end = procSample(helmd.pid);
    const rings = ringRssKb(helmd.pid);
    const sample = lastDecisionLines(audit, 4096);
    const lineBytes = Math.round(sample.reduce((n, l) => n + l.length + 1, 0) / Math.max(1, sample.length));
    const raw = rawAppendRate(`${o.dir}/trail/raw.bench`, sample, Math.min(2_000_000, Math.max(100_000, written)), o.fsync !== 'none');
    const sustained = written / drainS;
    const producedPerS = produced / produceS;
    let verify: string | undefined;
    if (o.verify) {
      await helmd.stop();
      const v = spawnSync(HELMCTL, ['audit', 'verify', path.dirname(audit)], { encoding: 'utf8', maxBuffer: 64 << 20 });
      verify = v.status === 0 ? 'ok' : `FAILED: ${(v.stdout + v.stderr).trim().split('\n').slice(-2).join(' | ')}`;
    }
    return {
      bench: 'audit-throughput',
      date: new Date().toISOString(),
      kernel: fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
      load: o.load,
      workers: o.workers,
      fsync: o.fsync,
      trail_fs: fsType(path.dirname(audit)),
      seconds: o.seconds,
      produced,
      produced_per_s: Math.round(producedPerS),
      written,
      lost,
      drain_seconds: Number(drainS.toFixed(2)),
      written_per_s: Math.round(sustained),
      line_bytes: lineBytes,
      rotations: after.audit.rotations - before.audit.rotations,
      raw_append_per_s: Math.round(raw),
      ratio_vs_producer: Number((sustained / producedPerS).toFixed(3)),
      ratio_vs_raw_append: Number((sustained / raw).toFixed(3)),
      disk: diskVerdict(raw, sustained, o.fsync),
      helmd_cpu_percent: Math.round(cpuPercent(cpu0, cpu1)),
      // helmd's CPU time (every thread) per event written: what the machine's load does not change much.
      helmd_cpu_us_per_event: Number((((cpu1.ticks - cpu0.ticks) / 100 / Math.max(1, written)) * 1e6).toFixed(2)),
      rss_idle_kb: idle.rssKb,
      rss_peak_kb: Math.max(peakKb, end.hwmKb),
      rss_after_kb: end.rssKb,
      rss_rings_kb: rings,
      ...(verify ? { verify } : {}),
    };
  } finally {
    workers.forEach((w) => w.kill());
    await call(helmd.socket, 'AgentService', 'Detach', { cgroup_path: path.join(cgroups.base, 'agent'), force: true }).catch(() => undefined);
    await cgroups.cleanup();
    await helmd.stop();
    fs.rmSync(o.dir, { recursive: true, force: true });
  }
}

/** The 200,000 events/s target against what this disk takes at all: said plainly, in the output. */
const TARGET_PER_S = 200_000;
function diskVerdict(raw: number, sustained: number, fsync: string): string {
  const n = (v: number) => Math.round(v).toLocaleString('en-US');
  const how = fsync === 'none' ? 'without fsync' : `with fdatasync after every ${RAW_BATCH}-line batch`;
  const helmd = `helmd wrote ${n(sustained)}/s, ${(sustained / raw).toFixed(2)}× of that`;
  if (raw < TARGET_PER_S) {
    return `this disk appends only ${n(raw)} lines/s of this size ${how}, with nothing else to do (no draining, JSON or hashing): ${n(TARGET_PER_S)} events/s to this trail is out of reach here whatever helmd does; ${helmd}`;
  }
  return `this disk appends ${n(raw)} lines/s of this size ${how}: ${n(TARGET_PER_S)} events/s is within its reach; ${helmd}`;
}

function markdownRow(r: Record<string, unknown>): string {
  const mb = (kb: unknown) => `${(Number(kb) / 1024).toFixed(0)} MB`;
  const n = (v: unknown) => Number(v).toLocaleString('en-US');
  return [
    '| audit kernel→disk | load | fsync | decisions/s written | workers made/s | ratio to workers | raw append/s | ratio to raw append | lost | helmd CPU | CPU per event | helmd RSS idle → peak (rings) |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
    `| ${r.kernel} (${r.trail_fs}) | ${r.load} ×${r.workers} | ${r.fsync} | ${n(r.written_per_s)} | ${n(r.produced_per_s)} | ${r.ratio_vs_producer}× | ${n(r.raw_append_per_s)} | ${r.ratio_vs_raw_append}× | ${n(r.lost)} | ${r.helmd_cpu_percent} % | ${r.helmd_cpu_us_per_event} µs | ${mb(r.rss_idle_kb)} → ${mb(r.rss_peak_kb)} (${mb(r.rss_rings_kb)}) |`,
    '',
    `Disk: ${r.disk}.`,
  ].join('\n');
}

async function main(): Promise<number> {
  const o = options();
  if (process.getuid?.() !== 0) {
    console.error('audit-throughput: must run as root (it starts helmd and governs a cgroup)');
    return 2;
  }
  if (o.load === 'denied-open' && !o.inVm && !bpfLsmUsable()) {
    if (!o.vm) {
      console.error('audit-throughput: this kernel does not run BPF LSM programs (helmctl doctor): --load denied-connect measures natively, --vm in the VM');
      return 2;
    }
    console.error('audit-throughput: measuring inside the VM (software-emulated: far slower than hardware)');
    const pass = process.argv.slice(2).filter((x) => x !== '--vm');
    const args = ['--timeout', '3000', '--', 'node', path.join(ROOT, 'dist', 'bench', 'audit-throughput.js'), '--in-vm', ...pass];
    const r = spawnSync('bash', [path.join(ROOT, 'scripts', 'vm', 'run.sh'), ...args], { cwd: ROOT, stdio: 'inherit' });
    return r.status ?? 1;
  }
  const r = await measure(o);
  process.stdout.write(`${JSON.stringify(r)}\n\n${markdownRow(r)}\n`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`audit-throughput: ${(e as Error).stack ?? e}`);
    process.exit(1);
  },
);
