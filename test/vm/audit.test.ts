// The audit trail end to end, in a kernel with BPF LSM: nothing lost silently
// (denials on their own ring, every loss counted exactly), allow logging levels
// whose kernel counters add up to the operations performed, exec arguments,
// parent executable and labels, rotation under load, a full disk, verify on a
// real trail (and on tampered copies of it), report numbers against a direct
// count, and policy suggest's draft admitting what a dry-run agent did.
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { spawn, spawnSync } from 'node:child_process';
import { requireBpfLsm, startHelmd, helmctl, sh, HELM_ENTER, HELMCTL, RUNTIME_RULE, type Daemon } from './harness';
import { cgroup2Mount } from '../../daemon/control/cgroups';

t.setTimeout(3_000_000);

const T = '/srv/helm-audit';
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Line = Record<string, any>;

const POLICY = `
apiVersion: helm/v1
kind: Policy
metadata: { name: audited }
spec:
  roles: [worker]
  allow:
${RUNTIME_RULE}
    - { id: ok, read: [${T}/ok/] }
  block:
    - { id: secret, read: [${T}/secret.txt] }
`;

/** Every complete line of every trail file in `dir` (rotated, compressed, active), in trail order. */
function trail(dir: string): Line[] {
  const files = fs.readdirSync(dir).filter((n) => n.endsWith('.jsonl') || n.endsWith('.jsonl.gz'));
  const index = (n: string) => Number(/\.(\d{6,})\./.exec(n)?.[1] ?? Number.MAX_SAFE_INTEGER);
  files.sort((a, b) => index(a) - index(b));
  const out: Line[] = [];
  for (const f of files) {
    const raw = fs.readFileSync(path.join(dir, f));
    const text = f.endsWith('.gz') ? zlib.gunzipSync(raw).toString('utf8') : raw.toString('utf8');
    for (const l of text.slice(0, text.lastIndexOf('\n') + 1).split('\n').filter(Boolean)) out.push(JSON.parse(l));
  }
  return out;
}

async function until(dir: string, done: (ls: Line[]) => boolean, timeoutMs = 300_000): Promise<Line[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ls = fs.existsSync(dir) ? trail(dir) : [];
    if (done(ls) || Date.now() > deadline) return ls;
    await new Promise((r) => setTimeout(r, 500));
  }
}

const lostIn = (ls: Line[], source: string) => ls.filter((l) => l.type === 'lost' && l.source === source).reduce((n, l) => n + Number(l.count), 0);
/** The agent's last counters line (written at detach); an empty line when there is none yet. */
const counters = (ls: Line[], agent: string): Line => ls.find((l) => l.type === 'counters' && l.agent === agent && l.reason === 'detach') ?? {};

/**
 * The agent is detached and every decision line the kernel sent for it has been
 * drained: its last counters line says how many there are.
 */
function settled(ls: Line[], agent: string): boolean {
  const c = counters(ls, agent).total;
  if (!c) return false;
  const lines = ls.filter((l) => l.type === 'decision' && l.agent === agent).length;
  return lines >= c.allow_logged + c.denied + c.would_deny - c.deny_lost;
}

/** A cgroup governed by `d` for as long as the test runs. */
function agentCgroup(t: Test, d: Daemon, name: string, extra: string[] = []): string {
  const cg = `${cgroup2Mount()}/helm-audit-${name}`;
  if (fs.existsSync(cg)) fs.rmdirSync(cg);
  fs.mkdirSync(cg);
  t.teardown(() => {
    helmctl(['detach', '--socket', d.socket, '--cgroup', cg]);
    if (fs.existsSync(cg)) fs.rmdirSync(cg);
  });
  const r = helmctl(['attach', '--socket', d.socket, '--cgroup', cg, '--role', 'worker', '--name', name, ...extra]);
  if (r.status !== 0) throw new Error(`attach ${name}: ${r.stderr}`);
  return cg;
}

/** perl in the cgroup: `denied` opens of the blocked file, `allowed` opens of an allowed one; prints how many failed. */
function flood(cg: string, denied: number, allowed: number): { failed: number; status: number | null; stderr: string } {
  const prog = `my $n = 0; for (1..${denied}) { open(my $f, '<', '${T}/secret.txt') or $n++ } for (1..${allowed}) { open(my $f, '<', '${T}/ok/file.txt') or die "allowed open failed: $!" } print "$n\\n"`;
  const r = spawnSync(HELM_ENTER, [cg, '--', 'perl', '-e', prog], { encoding: 'utf8' });
  return { failed: Number(r.stdout.trim()), status: r.status, stderr: r.stderr };
}

function detach(d: Daemon, cg: string): void {
  const r = helmctl(['detach', '--socket', d.socket, '--cgroup', cg]);
  if (r.status !== 0) throw new Error(`detach ${cg}: ${r.stderr}`);
}

async function daemon(t: Test, name: string, extra: string[]): Promise<{ d: Daemon; dir: string }> {
  const dir = `${T}/${name}`;
  const d = await startHelmd({ policy: [`${T}/policy.yaml`], audit: `${dir}/audit.jsonl`, socket: `/run/helm/audit-${name}.sock`, extra });
  t.teardown(async () => {
    d.proc.kill('SIGCONT');
    if (d.proc.exitCode === null) await d.stop();
  });
  return { d, dir };
}

const missing = requireBpfLsm();
if (missing) {
  t.fail(`VM suite cannot run: ${missing}`);
} else {
  t.before(() => {
    fs.rmSync(T, { recursive: true, force: true });
    fs.mkdirSync(`${T}/ok`, { recursive: true });
    fs.mkdirSync(`${T}/bin`, { recursive: true });
    fs.writeFileSync(`${T}/secret.txt`, 'secret\n');
    fs.writeFileSync(`${T}/ok/file.txt`, 'ok\n');
    fs.copyFileSync('/usr/bin/true', `${T}/bin/unlisted`);
    fs.chmodSync(`${T}/bin/unlisted`, 0o755);
    fs.writeFileSync(`${T}/policy.yaml`, POLICY);
  });

  t.test('a frozen helmd: denials have their own ring, and every loss is counted exactly', async (t) => {
    // Small rings keep the emulated VM quick: 897 denials fit, 224 allows (the defaults hold 28728 and 7182).
    const { d, dir } = await daemon(t, 'frozen', ['--audit-allows', 'all', '--audit-deny-ring', '1M', '--audit-allow-ring', '256K']);
    const start = trail(dir).find((l) => l.type === 'start')!;
    t.hasStrict(start.rings, { deny_bytes: 1 << 20, deny_records: 897, allow_bytes: 1 << 18, allow_records: 224 }, 'the start line records the rings and what they hold');

    // 1. Allows overflow their ring while denials, on theirs, all arrive.
    const cg = agentCgroup(t, d, 'both');
    const DENIED = 800;
    const ALLOWED = 1_000;
    d.proc.kill('SIGSTOP');
    const r = flood(cg, DENIED, ALLOWED);
    d.proc.kill('SIGCONT');
    t.equal(r.status, 0, `the flood ran: ${r.stderr}`);
    t.equal(r.failed, DENIED, 'every blocked open was denied while helmd was frozen, every allowed one allowed');
    detach(d, cg);
    let ls = await until(dir, (ls) => settled(ls, 'both') && ls.some((l) => l.type === 'lost' && l.source === 'allow-ring'));
    const mine = (ls: Line[], decision: string) => ls.filter((l) => l.type === 'decision' && l.agent === 'both' && l.decision === decision);
    const c = counters(ls, 'both');
    t.ok(c.total, 'the agent has a last counters line at detach');
    t.equal(mine(ls, 'deny').filter((l) => l.path === `${T}/secret.txt`).length, DENIED, 'every denial of the blocked file is in the trail');
    t.equal(lostIn(ls, 'deny-ring'), 0, 'no denial was lost');
    t.ok(lostIn(ls, 'allow-ring') > 0, `allows did not fit in their ring (${lostIn(ls, 'allow-ring')} lost), and that cost no denial`);
    t.equal(c.total.denied, mine(ls, 'deny').length, 'the kernel counted as many denials as there are deny lines');
    t.equal(c.total.allow_lost, lostIn(ls, 'allow-ring'), "the agent's lost allows are the allow ring's loss");
    t.equal(c.total.allowed, mine(ls, 'allow').length + c.total.allow_lost, 'allowed = allow lines + allows lost');
    t.ok(c.total.allowed >= ALLOWED, 'and covers every allowed open');
    t.equal(c.total.allow_unlogged, 0, 'with --audit-allows all nothing is left unlogged on purpose');

    // 2. A burst beyond the deny ring: what did not fit is counted, exactly.
    const cg2 = agentCgroup(t, d, 'burst');
    const one = flood(cg2, 1, 0);
    t.equal(one.failed, 1, 'calibration run');
    ls = await until(dir, (ls) => ls.some((l) => l.agent === 'burst' && l.path === `${T}/secret.txt`));
    const before = ls.filter((l) => l.type === 'decision' && l.agent === 'burst' && l.decision !== 'allow').length;
    const lostBefore = lostIn(ls, 'deny-ring');
    const N = 3_000;
    d.proc.kill('SIGSTOP');
    const big = flood(cg2, N, 0);
    d.proc.kill('SIGCONT');
    t.equal(big.failed, N, 'every open was denied, with or without a reader');
    const extra = before - 1; // what else perl is denied on start-up, measured by the calibration run
    const want = N + extra;
    ls = await until(dir, (ls) => ls.filter((l) => l.type === 'decision' && l.agent === 'burst' && l.decision !== 'allow').length - before + lostIn(ls, 'deny-ring') - lostBefore >= want);
    const audited = ls.filter((l) => l.type === 'decision' && l.agent === 'burst' && l.decision !== 'allow').length - before;
    const lost = lostIn(ls, 'deny-ring') - lostBefore;
    t.ok(lost > 0, `some denials did not fit while helmd was frozen (lost ${lost})`);
    t.ok(audited >= 890, `the deny ring's contents reached the trail (${audited})`);
    t.equal(audited + lost, want, 'audited + counted lost = every denial');
    const line = ls.find((l) => l.type === 'lost' && l.source === 'deny-ring');
    t.match(line, { count: /^\d+$/, total: /^\d+$/, since: /Z$/, ts: /Z$/ }, 'the lost line carries count, total and the interval');
    const status = JSON.parse(helmctl(['status', '--socket', d.socket]).stdout);
    t.equal(status.audit.lost_deny_ring, String(lostIn(ls, 'deny-ring')), 'helmctl status reports the same loss');
    detach(d, cg2);
    ls = await until(dir, (ls) => settled(ls, 'burst'));
    t.equal(counters(ls, 'burst').total.deny_lost, lost, "the agent's counters say how many of its denials were lost");
  });

  t.test('allow logging levels: line counts, and counters that add up to the operations performed', async (t) => {
    const K = 300;
    for (const level of ['none', 'sampled', 'all'] as const) {
      const extra = level === 'sampled' ? ['--audit-allows', 'sampled', '--audit-sample-rate', '5', '--audit-sample-burst', '10'] : ['--audit-allows', level];
      const { d, dir } = await daemon(t, `level-${level}`, extra);
      // The same program with no allowed opens of its own, then with K: the difference is exactly K.
      const runs: Record<string, Line> = {};
      for (const [name, n] of [[`${level}-0`, 0], [`${level}-k`, K]] as const) {
        const cg = agentCgroup(t, d, name);
        const r = flood(cg, 0, n);
        t.equal(r.status, 0, `${name} ran: ${r.stderr}`);
        detach(d, cg);
        const ls = await until(dir, (ls) => settled(ls, name));
        runs[name] = counters(ls, name);
      }
      await d.stop(); // one helmd at a time: the emulated VM has two slow CPUs
      const ls = trail(dir);
      const zero = runs[`${level}-0`].total;
      const k = runs[`${level}-k`].total;
      t.equal(k.allowed - zero.allowed, K, `${level}: the kernel counted exactly the ${K} extra allowed opens`);
      const lines = ls.filter((l) => l.type === 'decision' && l.decision === 'allow' && l.agent === `${level}-k`);
      t.equal(k.allowed, k.allow_logged + k.allow_unlogged + k.allow_lost, `${level}: allowed = logged + unlogged + lost`);
      t.equal(lines.length, k.allow_logged, `${level}: as many allow lines as the kernel says it logged`);
      if (level === 'none') {
        t.equal(lines.length, 0, 'none: no allow line');
        t.equal(k.allow_unlogged, k.allowed, 'none: every allow counted as unlogged');
      } else if (level === 'all') {
        t.equal(k.allow_lost, 0, 'all: nothing lost at this rate');
        t.equal(lines.filter((l) => l.path === `${T}/ok/file.txt`).length, K, `all: one line per allowed open of the file`);
        t.ok(lines.every((l) => !l.sampled), 'all: no line is marked as a sample');
      } else {
        const attach = ls.find((l) => l.type === 'control' && l.action === 'attach' && l.subject?.agent === `${level}-k`)!;
        const detachLine = ls.find((l) => l.type === 'control' && l.action === 'detach' && l.subject?.agent === `${level}-k`)!;
        const seconds = (Date.parse(detachLine.ts) - Date.parse(attach.ts)) / 1000;
        t.ok(lines.length >= 10, `sampled: the burst is logged (${lines.length})`);
        t.ok(lines.length <= 10 + Math.ceil(5 * seconds) + 1, `sampled: at most burst + rate x ${seconds.toFixed(1)} s (${lines.length})`);
        t.ok(k.allow_unlogged > 0, `sampled: the rest is counted as unlogged (${k.allow_unlogged})`);
        t.ok(lines.every((l) => l.sampled === true), 'sampled: every allow line says it is a sample');
      }
    }
  });

  t.test('exec arguments, the parent executable and agent labels', async (t) => {
    const { d, dir } = await daemon(t, 'exec', ['--audit-allows', 'all']);
    const many = Array.from({ length: 200 }, (_, i) => `arg${i}`).join(' ');
    const r = helmctl(['run', '--socket', d.socket, '--role', 'worker', '--name', 'execer', '--label', 'team=audit', '--label', 'ticket=T-1', '--', 'sh', '-c', `/usr/bin/env true one 'two words'; ${T}/bin/unlisted a b; /usr/bin/true ${many}; cat ${T}/secret.txt; exit 0`]);
    t.equal(r.status, 0, r.stderr);
    const ls = await until(dir, (ls) => settled(ls, 'execer'));
    const mine = ls.filter((l) => l.type === 'decision' && l.agent === 'execer');
    const execOf = (p: string, decision: string) => mine.find((l) => l.op === 'exec' && l.detail === 'open' && l.path === p && l.decision === decision);
    t.same(execOf('/usr/bin/true', 'allow')?.argv, ['true', 'one', 'two words'], 'an allowed exec carries its argv as the kernel read it');
    t.same(execOf(`${T}/bin/unlisted`, 'deny')?.argv, [`${T}/bin/unlisted`, 'a', 'b'], 'a denied exec too');
    const long = mine.find((l) => l.op === 'exec' && l.path === '/usr/bin/true' && l.argv_truncated);
    t.ok(long, 'a long argv is cut short, and says so');
    t.same(long?.argv.slice(0, 3), ['/usr/bin/true', 'arg0', 'arg1'], 'from its start');
    const sh0 = fs.realpathSync('/bin/sh');
    const cat = mine.find((l) => l.op === 'read' && l.path === `${T}/secret.txt`);
    t.hasStrict(cat, { decision: 'deny', exe: '/usr/bin/cat', parent_exe: sh0 }, 'the parent executable is the shell that started cat');
    t.ok(mine.length > 0 && mine.every((l) => l.labels?.team === 'audit' && l.labels?.ticket === 'T-1'), 'every line of the agent carries its labels');
    t.notOk(mine.some((l) => l.op !== 'exec' && 'argv' in l), 'only exec lines carry argv');
    const bad = helmctl(['attach', '--socket', d.socket, '--cgroup', `${cgroup2Mount()}`, '--role', 'worker', '--label', 'bad key=x']);
    t.not(bad.status, 0, 'a malformed label is refused');
    t.match(bad.stderr, /label key/);
  });

  t.test('rotation under load keeps every line exactly once, the chain through every file', async (t) => {
    const { d, dir } = await daemon(t, 'rotate', ['--audit-rotate-size', '64K']);
    const cg = agentCgroup(t, d, 'rotator');
    const N = 3000;
    const r = flood(cg, N, 0);
    t.equal(r.failed, N);
    detach(d, cg);
    await until(dir, (ls) => settled(ls, 'rotator'));
    await d.stop();
    const names = fs.readdirSync(dir);
    const gz = names.filter((n) => n.endsWith('.jsonl.gz'));
    t.ok(gz.length >= 3, `rotated and compressed files (${gz.length}): ${names.join(' ')}`);
    t.notOk(names.some((n) => n.endsWith('.tmp') || /\.\d{6}\.\d{8}T\d{6}Z\.jsonl$/.test(n)), 'no half-compressed or uncompressed rotated file left');
    const ls = trail(dir);
    const seqs = ls.map((l) => l.seq);
    t.same(seqs, Array.from({ length: ls.length }, (_, i) => i + 1), 'seq runs 1..N through all files: no line lost, none repeated');
    t.equal(ls.filter((l) => l.agent === 'rotator' && l.path === `${T}/secret.txt`).length, N, 'every denial exactly once');
    t.equal(ls.filter((l) => l.type === 'file').length, gz.length + 1, 'each file starts with its file line');
    const v = helmctl(['audit', 'verify', dir]);
    t.equal(v.status, 0, `helmctl audit verify accepts the whole rotated trail: ${v.stderr}`);
    t.match(v.stdout, new RegExp(`ok, ${ls.length} lines chained`));

    // Tampered copies of it: each is refused, naming the first broken line.
    const copy = (name: string) => {
      const to = `${T}/tamper-${name}`;
      fs.rmSync(to, { recursive: true, force: true });
      fs.cpSync(dir, to, { recursive: true });
      return to;
    };
    const sorted = gz.sort();
    const editGz = (file: string, edit: (lines: string[]) => string[]) => {
      const lines = zlib.gunzipSync(fs.readFileSync(file)).toString('utf8').split('\n');
      fs.writeFileSync(file, zlib.gzipSync(edit(lines).join('\n')));
    };
    const cases: [string, (to: string) => void, RegExp][] = [
      ['edited', (to) => editGz(`${to}/${sorted[1]}`, (ls) => ls.map((l, i) => (i === 5 ? l.replace('"deny"', '"allow"') : l))), new RegExp(`${sorted[1]}:6: the chain is broken`)],
      ['removed', (to) => editGz(`${to}/${sorted[1]}`, (ls) => ls.filter((_, i) => i !== 5)), new RegExp(`${sorted[1]}:6: `)],
      ['reordered', (to) => editGz(`${to}/${sorted[0]}`, (ls) => [...ls.slice(0, 3), ls[4], ls[3], ...ls.slice(5)]), new RegExp(`${sorted[0]}:4: `)],
      ['truncated', (to) => fs.truncateSync(`${to}/audit.jsonl`, fs.statSync(`${to}/audit.jsonl`).size - 40), /audit\.jsonl:\d+: the last line is cut short/],
      ['file-removed', (to) => fs.rmSync(`${to}/${sorted[1]}`), new RegExp(`${sorted[2]}:1: this file continues a different chain`)],
    ];
    for (const [name, tamper, want] of cases) {
      const to = copy(name);
      tamper(to);
      const bad = helmctl(['audit', 'verify', to]);
      t.equal(bad.status, 1, `${name}: refused`);
      t.match(bad.stderr, want, `${name}: ${bad.stderr.trim()}`);
    }

    // The report's numbers are a count of the lines.
    const rep = helmctl(['audit', 'report', dir, '--format', 'json', '--period', 'all']);
    t.equal(rep.status, 0, rep.stderr);
    const report = JSON.parse(rep.stdout);
    const decisions = ls.filter((l) => l.type === 'decision');
    const p = report.periods[0];
    t.equal(p.decisions.deny, decisions.filter((l) => l.decision === 'deny').length, 'report: denials');
    t.equal(p.by_agent.rotator.deny, decisions.filter((l) => l.agent === 'rotator' && l.decision === 'deny').length, 'report: denials by agent');
    t.equal(p.by_rule['audited/secret'].deny, decisions.filter((l) => l.rule === 'secret').length, 'report: by rule');
    t.same(p.top_denied[0], { target: `${T}/secret.txt`, op: 'read', count: N }, 'report: the most denied target');
    t.equal(p.counters.rotator.denied, counters(ls, 'rotator').total.denied, 'report: the kernel counters');
    t.equal(p.generations.length, 1, 'report: one policy generation in force');
    const md = helmctl(['audit', 'report', dir, '--period', 'day']);
    t.match(md.stdout, /# helm audit report[\s\S]*### Decisions by agent[\s\S]*\| rotator \| 0 \| \d+ \| 0 \|/, 'report: Markdown');
    const q = helmctl(['audit', 'query', dir, '--json', '--agent', 'rotator', '--prefix', `${T}/secret`]);
    t.equal(q.stdout.trim().split('\n').length, N, 'query reads the rotated, compressed files too');
  });

  t.test('a full disk: enforcement goes on, the loss is counted and said loudly, then recorded', async (t) => {
    const dir = `${T}/full`;
    fs.mkdirSync(dir, { recursive: true });
    sh(`mount -t tmpfs -o size=256k tmpfs ${dir}`);
    const { d } = await daemon(t, 'full', []);
    t.teardown(async () => {
      if (d.proc.exitCode === null) await d.stop();
      spawnSync('umount', [dir]);
    });
    const cg = agentCgroup(t, d, 'filler');
    spawnSync('dd', ['if=/dev/zero', `of=${dir}/filler`, 'bs=4k'], { encoding: 'utf8' }); // until ENOSPC
    // Denials keep coming while the disk is full (a small line might still fit in the file's last page; a batch does not).
    const STOP = `${T}/stop-flood`;
    fs.rmSync(STOP, { force: true });
    const prog = `my $n = 0; my $d = 0; until (-e '${STOP}') { for (1..50) { open(my $f, '<', '${T}/secret.txt') or $d++; $n++ } select(undef, undef, undef, 0.05) } print "$d $n\n"`;
    const flooding = spawn(HELM_ENTER, [cg, '--', 'perl', '-e', prog], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    flooding.stdout!.on('data', (b) => (out += b));
    const ended = new Promise((r) => flooding.on('exit', r));
    const deadline = Date.now() + 120_000;
    let status: Line = {};
    while (Date.now() < deadline) {
      status = JSON.parse(helmctl(['status', '--socket', d.socket]).stdout);
      if (status.audit.state === 'failing' && Number(status.audit.lost_disk) > 0) break;
      await new Promise((res) => setTimeout(res, 500));
    }
    t.equal(status.audit.state, 'failing', 'helmctl status says the trail is failing');
    t.match(status.audit.error, /ENOSPC/, 'and why');
    t.ok(Number(status.audit.lost_disk) > 0, `lines counted as lost (${status.audit.lost_disk})`);
    // helmd's log is written asynchronously (pino): give the line a moment to arrive.
    for (const end = Date.now() + 30_000; !/AUDIT WRITE FAILED/.test(d.log()) && Date.now() < end; ) await new Promise((res) => setTimeout(res, 250));
    t.match(d.log(), /AUDIT WRITE FAILED/, 'the log says so loudly');
    fs.writeFileSync(STOP, '');
    await ended;
    const [denied, tried] = out.trim().split(' ').map(Number);
    t.ok(tried > 0 && denied === tried, `every blocked open was still denied with the trail unwritable (${denied} of ${tried})`);
    fs.rmSync(`${dir}/filler`);
    let ls = await until(dir, (ls) => ls.some((l) => l.type === 'lost' && l.source === 'disk'), 60_000);
    t.ok(ls.some((l) => l.type === 'lost' && l.source === 'disk'), 'once there is room again, a lost line records the loss');
    // Batches that failed after the first lost line was made are recorded by later ones: the
    // lines add up to the count status reports once the backlog is written.
    const lostDisk = () => Number(JSON.parse(helmctl(['status', '--socket', d.socket]).stdout).audit.lost_disk);
    ls = await until(dir, (ls) => lostIn(ls, 'disk') === lostDisk(), 60_000);
    const after = JSON.parse(helmctl(['status', '--socket', d.socket]).stdout);
    t.equal(lostIn(ls, 'disk'), Number(after.audit.lost_disk), 'with the count status reported');
    t.equal(after.audit.state, 'ok', 'and the trail is ok again');
    detach(d, cg);
    const done = await until(dir, (ls) => !!counters(ls, 'filler').total, 120_000);
    const c = counters(done, 'filler').total;
    const lines = done.filter((l) => l.type === 'decision' && l.agent === 'filler').length;
    t.ok(lines < c.denied, `not every denial reached the trail (${lines} of ${c.denied})`);
    t.ok(lines + lostIn(done, 'disk') >= c.denied, 'but each is in the trail or among the lines counted as lost');
    t.equal(helmctl(['audit', 'verify', dir]).status, 0, 'no torn or half-written line: the chain verifies');
  });

  t.test('policy suggest drafts rules that admit what a dry-run agent did', async (t) => {
    const data = `${T}/data`;
    fs.mkdirSync(`${data}/many`, { recursive: true });
    for (let i = 0; i < 6; i++) fs.writeFileSync(`${data}/many/f${i}.txt`, `${i}\n`);
    fs.writeFileSync(`${data}/one.txt`, '1\n');
    fs.mkdirSync(`${T}/out2`, { recursive: true });
    const work = `cat ${data}/many/* ${data}/one.txt > /dev/null; echo x > ${T}/out2/result.txt; ${T}/bin/unlisted; cat ${T}/secret.txt > /dev/null; exit 0`;
    const { d, dir } = await daemon(t, 'suggest', []);
    const r = helmctl(['run', '--socket', d.socket, '--role', 'worker', '--name', 'trial', '--dry-run', '--', 'sh', '-c', work]);
    t.equal(r.status, 0, `the dry-run agent did its work: ${r.stderr}`);
    await until(dir, (ls) => settled(ls, 'trial'));
    await d.stop();
    const s = spawnSync(HELMCTL, ['policy', 'suggest', '--from', dir, '--role', 'worker', '--policy', `${T}/policy.yaml`], { encoding: 'utf8' });
    t.equal(s.status, 0, `suggest: every suggested operation is admitted with the draft (${s.stderr})`);
    const draft = `${T}/suggested.yaml`;
    fs.writeFileSync(draft, s.stdout);
    t.match(s.stdout, new RegExp(`- ${data}/many/ `), 'six files in one directory become its subtree');
    t.match(s.stdout, new RegExp(`- ${data}/one.txt `), 'a single file stays exact');
    t.match(s.stdout, /#\s+read .*secret\.txt — audited\/secret/, 'the blocked read is listed as not suggestable');
    const lint = helmctl(['policy', 'lint', `${T}/policy.yaml`, draft]);
    t.equal(lint.status, 0, `the draft lints with the policy in force: ${lint.stderr}`);
    // Enforced, in the kernel: the same work now succeeds but for the blocked read.
    fs.writeFileSync(draft, s.stdout.replace('mode: dry-run', 'mode: enforce'));
    const e = await startHelmd({ policy: [`${T}/policy.yaml`, draft], audit: `${T}/suggest2/audit.jsonl`, socket: '/run/helm/audit-suggest2.sock' });
    t.teardown(async () => {
      if (e.proc.exitCode === null) await e.stop();
    });
    const again = helmctl(['run', '--socket', e.socket, '--role', 'worker', '--name', 'enforced', '--', 'sh', '-c', work.replace('exit 0', 'echo DONE')]);
    t.match(again.stdout, /DONE/);
    const ls = await until(`${T}/suggest2`, (ls) => settled(ls, 'enforced'));
    const denied = ls.filter((l) => l.type === 'decision' && l.agent === 'enforced' && l.decision === 'deny');
    t.same(denied.map((l) => `${l.op} ${l.path}`), [`read ${T}/secret.txt`], 'the kernel now denies only what an allow could not admit');
  });
}
