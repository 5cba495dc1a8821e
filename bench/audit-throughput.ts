// Audit throughput: how many decisions per second helmd carries from the kernel
// to disk, sustained, and the memory it takes doing it. Not a test: it asserts
// nothing and prints what it measured, as JSON and as a Markdown table row.
//
//   node dist/bench/audit-throughput.js [--seconds N] [--fsync every-batch|interval:MS|none] [--no-vm]
//
// Needs root and a kernel that runs BPF LSM programs; elsewhere it runs itself
// inside the bundled VM (scripts/vm/run.sh), unless --no-vm.
//
// What it does: one governed agent opens a blocked file as fast as it can for N
// seconds (every open a denial, every denial an event on the deny ring), while
// helmd drains. Sustained rate = decisions written / time from the first to the
// moment the last one was on disk. Two baselines measured in the same run give
// it meaning: the rate the agent produced denials at (the kernel's side, where
// the drain must keep up), and the rate this machine appends lines of the same
// size to a file of the same filesystem with plain write(2)+fdatasync batches
// (the disk's side, without decoding, JSON or hashing).
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { call } from '../daemon/control/client';
import { cgroup2Mount } from '../daemon/control/cgroups';

const ROOT = path.resolve(__dirname, '..', '..');
const HELMD = path.join(ROOT, 'bin', 'helmd');
const HELM_ENTER = path.join(ROOT, 'build', 'helm-enter');
const DIR = '/srv/helm-bench-audit';
const SOCK = '/run/helm/bench-audit.sock';

interface Options {
  seconds: number;
  fsync: string;
  noVm: boolean;
  inVm: boolean;
}

function options(): Options {
  const a = process.argv.slice(2);
  const val = (name: string, dflt: string) => (a.includes(name) ? a[a.indexOf(name) + 1] : dflt);
  const seconds = Number(val('--seconds', '10'));
  if (!Number.isFinite(seconds) || seconds <= 0) throw new Error('--seconds takes a number above 0');
  return { seconds, fsync: val('--fsync', 'every-batch'), noVm: a.includes('--no-vm'), inVm: a.includes('--in-vm') };
}

function bpfLsmUsable(): boolean {
  // The host kernel may list bpf as an LSM and still refuse its programs: ask helmctl doctor.
  const r = spawnSync(path.join(ROOT, 'bin', 'helmctl'), ['doctor', '--json'], { encoding: 'utf8' });
  try {
    return (JSON.parse(r.stdout) as { ok: boolean }[]).every((c) => c.ok);
  } catch {
    return false;
  }
}

function rssKb(pid: number): { rss: number; hwm: number } {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN);
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

interface Status {
  events_written: string;
  events_lost: string;
  audit: { lines_written: string };
}

/** Lines of about `bytes` each, written in batches of `batch` with write(2), each batch followed by fdatasync unless `sync` is false. */
function rawAppendRate(file: string, lines: number, bytes: number, batch: number, sync: boolean): number {
  const line = Buffer.from(`${'x'.repeat(Math.max(1, bytes - 1))}\n`);
  const chunk = Buffer.concat(Array.from({ length: batch }, () => line));
  const fd = fs.openSync(file, 'a');
  const t0 = process.hrtime.bigint();
  for (let n = 0; n < lines; n += batch) {
    fs.writeSync(fd, chunk);
    if (sync) fs.fdatasyncSync(fd);
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  fs.closeSync(fd);
  fs.rmSync(file);
  return lines / s;
}

async function measure(o: Options): Promise<Record<string, unknown>> {
  fs.rmSync(DIR, { recursive: true, force: true });
  fs.mkdirSync(`${DIR}/trail`, { recursive: true });
  fs.writeFileSync(`${DIR}/secret.txt`, 'secret\n');
  fs.writeFileSync(
    `${DIR}/policy.yaml`,
    `apiVersion: helm/v1\nkind: Policy\nmetadata: { name: bench }\nspec:\n  roles: [bench]\n  allow:\n    - { id: runtime, exec: [/usr/bin/, /usr/lib/], read: [/usr/, /etc/ld.so.cache, /dev/null] }\n  block:\n    - { id: secret, read: [${DIR}/secret.txt] }\n`,
  );
  const audit = `${DIR}/trail/audit.jsonl`;
  let log = '';
  const helmd = spawn(HELMD, ['--policy', `${DIR}/policy.yaml`, '--audit-log', audit, '--socket', SOCK, '--audit-fsync', o.fsync], { stdio: ['ignore', 'pipe', 'pipe'] });
  helmd.stdout!.on('data', (d) => (log += d));
  helmd.stderr!.on('data', (d) => (log += d));
  const cg = `${cgroup2Mount()}/helm-bench-audit`;
  try {
    const deadline = Date.now() + 600_000;
    while (!/helmd enforcing/.test(log)) {
      if (helmd.exitCode !== null || Date.now() > deadline) throw new Error(`helmd did not start:\n${log}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    if (fs.existsSync(cg)) fs.rmdirSync(cg);
    fs.mkdirSync(cg);
    await call(SOCK, 'AgentService', 'Attach', { cgroup_path: cg, role: 'bench', name: 'bench', dry_run: false, labels: {} });
    await new Promise((r) => setTimeout(r, 2000));
    const idle = rssKb(helmd.pid!);
    const before = await call<Status>(SOCK, 'SystemService', 'Status', {});

    // The agent: denied opens for N seconds, as fast as it can.
    const prog = `use Time::HiRes qw(time); my $end = time + ${o.seconds}; my $n = 0; while (time < $end) { for (1..100) { open(my $f, '<', '${DIR}/secret.txt'); $n++ } } print "$n\\n"`;
    const t0 = process.hrtime.bigint();
    let peak = idle.rss;
    const sampler = setInterval(() => (peak = Math.max(peak, rssKb(helmd.pid!).rss)), 200);
    const agent = spawnSync(HELM_ENTER, [cg, '--', 'perl', '-e', prog], { encoding: 'utf8' });
    const produceS = Number(process.hrtime.bigint() - t0) / 1e9;
    const produced = Number(agent.stdout.trim());
    if (!(produced > 0)) throw new Error(`the agent did not run: ${agent.stderr}`);

    // Until every denial is on disk or counted lost.
    let after = before;
    const want = Number(before.events_written) + Number(before.events_lost) + produced;
    let doneAt = process.hrtime.bigint();
    for (const end = Date.now() + 600_000; Date.now() < end; ) {
      after = await call<Status>(SOCK, 'SystemService', 'Status', {}, 60_000);
      doneAt = process.hrtime.bigint();
      if (Number(after.events_written) + Number(after.events_lost) >= want) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    clearInterval(sampler);
    const drainS = Number(doneAt - t0) / 1e9;
    const written = Number(after.events_written) - Number(before.events_written);
    const lost = Number(after.events_lost) - Number(before.events_lost);
    const end = rssKb(helmd.pid!);
    const lines = fs.readFileSync(audit, 'utf8').trim().split('\n');
    const avgBytes = Math.round(lines.slice(-1000).reduce((n, l) => n + l.length + 1, 0) / Math.min(1000, lines.length));
    const raw = rawAppendRate(`${DIR}/trail/raw.bench`, Math.min(200_000, Math.max(20_000, written)), avgBytes, 256, o.fsync !== 'none');
    const sustained = written / drainS;
    const producedPerS = produced / produceS;
    return {
      bench: 'audit-throughput',
      date: new Date().toISOString(),
      kernel: fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
      fsync: o.fsync,
      seconds: o.seconds,
      produced,
      produced_per_s: Math.round(producedPerS),
      written,
      lost,
      drain_seconds: Number(drainS.toFixed(2)),
      written_per_s: Math.round(sustained),
      line_bytes: avgBytes,
      raw_append_per_s: Math.round(raw),
      ratio_vs_producer: Number((sustained / producedPerS).toFixed(3)),
      ratio_vs_raw_append: Number((sustained / raw).toFixed(3)),
      rss_idle_kb: idle.rss,
      rss_peak_kb: Math.max(peak, end.hwm),
      rss_after_kb: end.rss,
    };
  } finally {
    await call(SOCK, 'AgentService', 'Detach', { cgroup_path: cg, force: true }).catch(() => undefined);
    if (fs.existsSync(cg)) fs.rmdirSync(cg);
    helmd.kill('SIGTERM');
    await new Promise((r) => (helmd.exitCode !== null ? r(undefined) : helmd.on('exit', r)));
  }
}

function markdownRow(r: Record<string, unknown>): string {
  const mb = (kb: unknown) => `${(Number(kb) / 1024).toFixed(0)} MB`;
  const n = (v: unknown) => Number(v).toLocaleString('en-US');
  return [
    '| audit kernel→disk | fsync | decisions/s written | agent produced/s | ratio to producer | raw append/s | ratio to raw append | lost | helmd RSS idle → peak |',
    '|---|---|---|---|---|---|---|---|---|',
    `| ${r.kernel} | ${r.fsync} | ${n(r.written_per_s)} | ${n(r.produced_per_s)} | ${r.ratio_vs_producer}× | ${n(r.raw_append_per_s)} | ${r.ratio_vs_raw_append}× | ${n(r.lost)} | ${mb(r.rss_idle_kb)} → ${mb(r.rss_peak_kb)} |`,
  ].join('\n');
}

async function main(): Promise<number> {
  const o = options();
  if (process.getuid?.() !== 0) {
    console.error('audit-throughput: must run as root (it starts helmd and governs a cgroup)');
    return 2;
  }
  if (!o.inVm && !bpfLsmUsable()) {
    if (o.noVm) {
      console.error('audit-throughput: this kernel does not run BPF LSM programs (helmctl doctor), and --no-vm was given');
      return 2;
    }
    console.error('audit-throughput: this kernel does not run BPF LSM programs; measuring inside the VM (software-emulated: far slower than hardware)');
    const args = ['--timeout', '3000', '--', 'node', path.join(ROOT, 'dist', 'bench', 'audit-throughput.js'), '--in-vm', '--seconds', String(o.seconds), '--fsync', o.fsync];
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
