// helmctl audit query, report and tail, and helmctl policy suggest, over trails
// written by the real writer (rotated and compressed): every number a report
// gives equals a direct count of the lines; every filter selects exactly what a
// plain reading of its meaning selects; the follower sees every line once across
// rotations; a suggested policy lints and admits every operation it was drafted
// from, per the reference evaluator.
import t, { type Test } from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { AuditTrail } from '../../daemon/audit/writer';
import { readLines, trailFiles } from '../../daemon/audit/files';
import { compileFilter, parseTime, type AuditLineData, type LineFilter } from '../../daemon/audit/filter';
import { queryTrail } from '../../daemon/audit/query';
import { buildReport, ruleKey } from '../../daemon/audit/report';
import { followTrail } from '../../daemon/audit/follow';
import { suggestPolicy } from '../../daemon/policy/suggest';
import { parsePolicySource } from '../../daemon/policy/parse';
import { lintPolicies } from '../../daemon/policy/lint';
import { evaluateOperation } from '../../daemon/policy/evaluate';
import { Rng } from '../rng';
import { trailOptions } from '../audit-fixtures';

const HELMCTL = path.resolve(__dirname, '..', '..', '..', 'bin', 'helmctl');

function tmpdir(t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'helm-tools-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const AGENTS = ['alpha', 'beta', 'gamma'];
const ROLES: Record<string, string> = { alpha: 'payments', beta: 'payments', gamma: 'analyst' };
const PATHS = ['/srv/data/a.csv', '/srv/data/b.csv', '/srv/data/sub/c.csv', '/etc/shadow', '/etc/hostname', '/usr/bin/python3', '/home/x/.ssh/id_rsa'];
const ADDRS = ['10.0.0.5', '10.1.2.3', '192.168.1.9', '2001:db8::1'];
const T0 = Date.parse('2026-11-28T22:00:00Z');

/** A random trail over three days: decisions (file and network), counters, lost, policy and agent lines. */
async function randomTrail(dir: string, seed: number, n: number): Promise<void> {
  const rng = new Rng(seed);
  let ms = T0;
  // The writer's own lines (each file's first) take the same clock as the records.
  const w = await AuditTrail.open(trailOptions(path.join(dir, 'audit.jsonl'), { rotation: { maxBytes: 16 * 1024, maxAgeMs: 0, compress: true }, now: () => new Date(ms) }));
  const ts = () => new Date(ms).toISOString().replace('Z', '000000Z');
  const head = (type: string) => ({ v: 1, ts: ts(), seq: 0, type });
  w.append([{ ...head('control'), action: 'apply', source: 'startup', generation: 1, previous_generation: 0, digest: 'd1', policies: ['base'] }]);
  for (let i = 0; i < n; i++) {
    ms += rng.int(3 * 60_000);
    const agent = rng.pick(AGENTS);
    const r = rng.next();
    if (r < 0.8) {
      const net = rng.chance(0.2);
      const decision = rng.pick(['allow', 'deny', 'deny', 'would_deny']);
      const rule = decision === 'allow' ? 'runtime' : rng.pick(['default', 'secrets', 'no-home']);
      w.append([
        {
          ...head('decision'),
          decision,
          op: net ? rng.pick(['connect', 'bind']) : rng.pick(['read', 'write', 'exec']),
          ...(net ? { path: null, addr: rng.pick(ADDRS), port: rng.pick([443, 8080]), proto: 'tcp', ...(rng.chance(0.5) ? { host: 'api.example.com' } : {}) } : { path: rng.pick(PATHS) }),
          agent,
          role: ROLES[agent],
          policy: rule === 'default' ? null : 'base',
          rule,
          mode: decision === 'would_deny' ? 'dry-run' : 'enforce',
          reason: rule === 'default' ? 'default' : 'rule',
          generation: rng.chance(0.9) ? 1 : 2,
        },
      ]);
    } else if (r < 0.9) {
      const c = { allowed: rng.int(50), allow_unlogged: 0, allow_lost: rng.int(2), denied: rng.int(9), would_deny: rng.int(3), deny_lost: 0 };
      c.allow_unlogged = Math.max(0, c.allowed - c.allow_lost - rng.int(5));
      w.append([{ ...head('counters'), reason: 'interval', agent, role: ROLES[agent], since: ts(), ...c, allow_logged: c.allowed - c.allow_unlogged - c.allow_lost }]);
    } else if (r < 0.95) {
      w.append([{ ...head('lost'), source: rng.pick(['deny-ring', 'allow-ring', 'disk']), count: String(1 + rng.int(40)), total: '0', since: ts() }]);
    } else if (r < 0.97) {
      w.append([{ ...head('control'), action: 'apply', source: 'api', generation: 2 + i, previous_generation: 1 + i, digest: `d${i}`, policies: ['base', 'extra'] }]);
    } else if (r < 0.98) {
      w.append([{ ...head('control'), action: 'mode', target: 'policy', subject: { policy: 'base' }, mode: 'dry-run', previous_mode: 'enforce', generation: 5000 + i }]);
    } else {
      w.append([{ ...head('control'), action: rng.pick(['attach', 'detach']), subject: { agent, role: ROLES[agent] } }]);
    }
    if (i % 25 === 0) await w.flush();
  }
  await w.close();
}

async function allLines(dir: string): Promise<AuditLineData[]> {
  const out: AuditLineData[] = [];
  for (const g of trailFiles([dir])) for (const f of g.files) await readLines(f, (l) => void out.push(JSON.parse(l.text)));
  return out;
}

t.test('query: every filter selects exactly what it says, over rotated and compressed files', async (t) => {
  const dir = tmpdir(t);
  await randomTrail(dir, 11, 900);
  t.ok(fs.readdirSync(dir).filter((n) => n.endsWith('.gz')).length >= 3, 'the trail spans several compressed files');
  const lines = await allLines(dir);
  const day = (s: string) => Date.parse(s);
  const filters: [string, LineFilter, (l: AuditLineData) => boolean][] = [
    ['agent', { agent: ['alpha'] }, (l) => l.agent === 'alpha'],
    ['two agents', { agent: ['alpha', 'gamma'] }, (l) => l.agent === 'alpha' || l.agent === 'gamma'],
    ['role', { role: ['analyst'] }, (l) => l.role === 'analyst'],
    ['decision', { decision: ['would_deny'] }, (l) => l.decision === 'would_deny'],
    ['op', { op: ['write', 'connect'] }, (l) => l.op === 'write' || l.op === 'connect'],
    ['path prefix', { prefix: ['/srv/data/'] }, (l) => typeof l.path === 'string' && l.path.startsWith('/srv/data/')],
    ['CIDR', { prefix: ['10.0.0.0/8'] }, (l) => typeof l.addr === 'string' && l.addr.startsWith('10.')],
    ['IPv6 CIDR', { prefix: ['[2001:db8::/32]'] }, (l) => l.addr === '2001:db8::1'],
    ['host prefix', { prefix: ['api.'] }, (l) => l.host === 'api.example.com'],
    ['since', { since: day('2026-11-29T12:00:00Z') }, (l) => day(l.ts!) >= day('2026-11-29T12:00:00Z')],
    ['range', { since: day('2026-11-29T00:00:00Z'), until: day('2026-11-30T00:00:00Z') }, (l) => day(l.ts!) >= day('2026-11-29T00:00:00Z') && day(l.ts!) < day('2026-11-30T00:00:00Z')],
    ['type', { type: ['lost', 'counters'] }, (l) => l.type === 'lost' || l.type === 'counters'],
    ['all at once', { agent: ['beta'], decision: ['deny'], op: ['read'], prefix: ['/etc/'], type: ['decision'] }, (l) => l.type === 'decision' && l.agent === 'beta' && l.decision === 'deny' && l.op === 'read' && !!l.path?.startsWith('/etc/')],
  ];
  for (const [what, f, direct] of filters) {
    const want = lines.filter(direct).map((l) => l.seq);
    const got: number[] = [];
    const r = await queryTrail([dir], f, (l) => void got.push(l.seq!));
    t.same(got, want, `${what}: ${want.length} lines`);
    t.ok(want.length > 0, `${what}: the trail has such lines (the test can fail)`);
    t.equal(r.read, lines.length, `${what}: every line read`);
  }
  // The same through helmctl, JSON lines exactly as in the trail.
  const cli = spawnSync(HELMCTL, ['audit', 'query', dir, '--json', '--agent', 'beta', '--decision', 'deny', '--since', '2026-11-29', '--until', '2026-11-30T00:00:00Z'], { encoding: 'utf8', maxBuffer: 1 << 26 });
  t.equal(cli.status, 0, cli.stderr);
  const want = lines.filter((l) => l.type === 'decision' && l.agent === 'beta' && l.decision === 'deny' && day(l.ts!) >= day('2026-11-29') && day(l.ts!) < day('2026-11-30'));
  t.same(cli.stdout.trim().split('\n').map((l) => JSON.parse(l).seq), want.map((l) => l.seq), 'helmctl audit query --json');
  t.match(cli.stderr, new RegExp(`^${want.length} of ${lines.length} lines matched`));
  const table = spawnSync(HELMCTL, ['audit', 'query', dir, '--agent', 'gamma', '--limit', '3'], { encoding: 'utf8' });
  const rows = table.stdout.trim().split('\n');
  t.match(rows[0], /^ts\s+seq\s+type\s+decision\s+op\s+agent\s+role\s+rule\s+target\s+exe$/, 'a table with a header');
  t.equal(rows.length, 4, '--limit 3: three rows');
  t.ok(rows.slice(1).every((r) => /\bgamma\b/.test(r)));
  const bad = spawnSync(HELMCTL, ['audit', 'query', dir, '--since', 'yesterday-ish'], { encoding: 'utf8' });
  t.equal(bad.status, 1, 'a time it cannot read is an error');
  t.match(bad.stderr, /time "yesterday-ish": expected RFC 3339/);
  const badDecision = spawnSync(HELMCTL, ['audit', 'query', dir, '--decision', 'maybe'], { encoding: 'utf8' });
  t.match(badDecision.stderr, /--decision "maybe": expected one of allow, deny, would_deny/);
  t.throws(() => parseTime('2026-13-45'), /expected RFC 3339/);
  t.equal(parseTime('2h', 10_000_000), 10_000_000 - 7_200_000, 'a span is that long ago');
  t.equal(parseTime('2026-11-30T10:00'), Date.parse('2026-11-30T10:00:00Z'), 'no zone: UTC');
});

t.test('report: every number equals a direct count of the lines', async (t) => {
  const dir = tmpdir(t);
  await randomTrail(dir, 23, 1200);
  const lines = await allLines(dir);
  const dayOf = (l: AuditLineData) => l.ts!.slice(0, 10);
  for (const period of ['day', 'all'] as const) {
    const r = await buildReport([dir], { period, filter: {}, top: 5 });
    t.equal(r.lines, lines.length, `${period}: every line read`);
    const keyOf = (l: AuditLineData) => (period === 'all' ? 'all' : dayOf(l));
    const keys = [...new Set(lines.map(keyOf))];
    t.same(r.periods.map((p) => p.period), keys, `${period}: one section per period, in order`);
    for (const p of r.periods) {
      const mine = lines.filter((l) => keyOf(l) === p.period);
      const dec = mine.filter((l) => l.type === 'decision');
      const n = (f: (l: AuditLineData) => boolean, d: string) => dec.filter((l) => f(l) && l.decision === d).length;
      const tally = (f: (l: AuditLineData) => boolean) => ({ allow: n(f, 'allow'), deny: n(f, 'deny'), would_deny: n(f, 'would_deny') });
      t.same(p.decisions, tally(() => true), `${p.period}: decisions`);
      for (const a of AGENTS) if (dec.some((l) => l.agent === a)) t.same(p.by_agent[a], tally((l) => l.agent === a), `${p.period}: agent ${a}`);
      for (const role of ['payments', 'analyst']) if (dec.some((l) => l.role === role)) t.same(p.by_role[role], tally((l) => l.role === role), `${p.period}: role ${role}`);
      for (const rule of new Set(dec.map(ruleKey))) t.same(p.by_rule[rule], tally((l) => ruleKey(l) === rule), `${p.period}: rule ${rule}`);
      for (const op of new Set(dec.map((l) => l.op!))) t.same(p.by_op[op], tally((l) => l.op === op), `${p.period}: op ${op}`);
      t.equal(Object.keys(p.by_agent).length, new Set(dec.map((l) => l.agent)).size, `${p.period}: no other agent`);
      // most denied targets: the top counts, as counted here
      const counts = new Map<string, number>();
      for (const l of dec.filter((l) => l.decision === 'deny' && l.path)) counts.set(`${l.op} ${l.path}`, (counts.get(`${l.op} ${l.path}`) ?? 0) + 1);
      const top = [...counts.values()].sort((a, b) => b - a).slice(0, 5);
      t.same(p.top_denied.filter((x) => x.target.startsWith('/')).map((x) => x.count), top.slice(0, p.top_denied.filter((x) => x.target.startsWith('/')).length), `${p.period}: top denied counts`);
      for (const x of p.top_denied.filter((x) => x.target.startsWith('/'))) t.equal(x.count, counts.get(`${x.op} ${x.target}`), `${p.period}: ${x.op} ${x.target}`);
      t.equal(p.would_deny.total, n(() => true, 'would_deny'), `${p.period}: would-denials`);
      for (const src of ['deny-ring', 'allow-ring', 'disk']) {
        const want = mine.filter((l) => l.type === 'lost' && l.source === src).reduce((s, l) => s + Number(l.count), 0);
        t.equal(p.lost[src] ?? 0, want, `${p.period}: lost ${src}`);
      }
      for (const a of AGENTS) {
        const cs = mine.filter((l) => l.type === 'counters' && l.agent === a);
        if (!cs.length) continue;
        const sum = (k: string) => cs.reduce((s, l) => s + (l[k] as number), 0);
        t.same(p.counters[a], { allowed: sum('allowed'), allow_logged: sum('allow_logged'), allow_unlogged: sum('allow_unlogged'), allow_lost: sum('allow_lost'), denied: sum('denied'), would_deny: sum('would_deny'), deny_lost: sum('deny_lost') }, `${p.period}: counters of ${a}`);
      }
      // generations in force: the last installed before the period's first line, and those installed within it
      const times = mine.map((l) => Date.parse(l.ts!));
      const first = Math.min(...times);
      const last = Math.max(...times);
      const switches = lines.filter((l) => l.type === 'control' && (l.action === 'apply' || (l.action === 'mode' && l.target === 'policy')));
      const before = switches.filter((l) => Date.parse(l.ts!) <= first).slice(-1);
      const during = switches.filter((l) => Date.parse(l.ts!) > first && Date.parse(l.ts!) <= last);
      t.same(p.generations.map((g) => g.generation), [...before, ...during].map((l) => l.generation), `${p.period}: generations in force`);
      t.equal(p.agents.attached, mine.filter((l) => l.type === 'control' && l.action === 'attach').length, `${p.period}: agents attached`);
    }
  }
  const filtered = await buildReport([dir], { period: 'all', filter: { agent: ['gamma'] }, top: 5 });
  t.same(Object.keys(filtered.periods[0].by_agent), ['gamma'], 'an agent filter keeps that agent only');
  t.ok(Object.keys(filtered.periods[0].lost).length > 0, 'and keeps the lines that belong to no agent (losses)');
  const md = spawnSync(HELMCTL, ['audit', 'report', dir, '--period', 'week'], { encoding: 'utf8' });
  t.equal(md.status, 0, md.stderr);
  t.match(md.stdout, /^# helm audit report\n/);
  t.match(md.stdout, /## week of 2026-11-23\n[\s\S]*## week of 2026-11-30\n/, 'weeks begin on Monday');
  t.match(md.stdout, /### Most denied targets\n\n\| target \| op \| denials \|\n\|---\|---\|---\|\n\| /, 'Markdown tables');
  const json = spawnSync(HELMCTL, ['audit', 'report', dir, '--format', 'json', '--period', 'all'], { encoding: 'utf8' });
  t.same(JSON.parse(json.stdout).periods[0].decisions, (await buildReport([dir], { period: 'all', filter: {}, top: 10 })).periods[0].decisions, 'JSON output');
});

t.test('tail: follows the active file across rotations, every line once, with filters', async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'audit.jsonl');
  const w = await AuditTrail.open(trailOptions(file, { rotation: { maxBytes: 4096, maxAgeMs: 0, compress: true } }));
  w.append([{ v: 1, ts: new Date().toISOString(), seq: 0, type: 'decision', agent: 'early', decision: 'deny' }]);
  await w.flush();
  const abort = new AbortController();
  const seen: number[] = [];
  const betas: number[] = [];
  const notes: string[] = [];
  const following = followTrail(dir, { backlog: Infinity, follow: true, filter: {}, pollMs: 20, signal: abort.signal, each: (l) => void seen.push(l.seq!), onNote: (m) => notes.push(m) });
  const filtered = followTrail(file, { backlog: 0, follow: true, filter: { agent: ['beta'] }, pollMs: 35, signal: abort.signal, each: (l) => void betas.push(l.seq!) });
  const N = 600;
  for (let i = 0; i < N; i++) {
    w.append([{ v: 1, ts: new Date().toISOString(), seq: 0, type: 'decision', agent: i % 3 ? 'alpha' : 'beta', n: i }]);
    if (i % 7 === 0) await new Promise((r) => setTimeout(r, 2));
  }
  await w.close();
  const total = (await allLines(dir)).length;
  const deadline = Date.now() + 20_000;
  while (seen.length < total && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 200));
  abort.abort();
  await Promise.all([following, filtered]);
  t.ok(notes.length >= 5, `it followed ${notes.length} rotations`);
  t.same(seen, Array.from({ length: total }, (_, i) => i + 1), 'every line of every file, once, in order');
  const all = await allLines(dir);
  t.same(betas, all.filter((l) => l.agent === 'beta').map((l) => l.seq), 'a filter while following');
  // Without --follow: the last N matching lines, then stop.
  const last = spawnSync(HELMCTL, ['audit', 'tail', file, '-n', '2', '--json'], { encoding: 'utf8' });
  t.equal(last.status, 0, last.stderr);
  const fileLines = fs.readFileSync(file, 'utf8').trim().split('\n');
  t.same(last.stdout.trim().split('\n'), fileLines.slice(-2), 'the last two lines as they are in the file');
  const two = spawnSync(HELMCTL, ['audit', 'tail', dir, dir], { encoding: 'utf8' });
  t.not(two.status, 0, 'one file to follow');
  const none = spawnSync(HELMCTL, ['audit', 'tail', '--socket', path.join(dir, 'no.sock')], { encoding: 'utf8' });
  t.equal(none.status, 1, 'without a file it reads from helmd');
  t.match(none.stderr, /cannot reach helmd/);
  const fileOnly = spawnSync(HELMCTL, ['audit', 'tail', '--prefix', '/srv/', '--socket', path.join(dir, 'no.sock')], { encoding: 'utf8' });
  t.match(fileOnly.stderr, /--prefix read files/, 'the file-only filters say so');
});

/** would_deny lines of a dry-run agent, as the kernel would report them. */
function wouldDeny(role: string, op: string, target: Record<string, unknown>, reason = 'default', rule = 'default', policy: string | null = null): AuditLineData {
  return { v: 1, ts: '2026-11-30T00:00:00Z', seq: 0, type: 'decision', decision: 'would_deny', op, ...target, agent: 'trial', role, policy, rule, mode: 'dry-run', reason };
}

t.test('suggest: a draft that lints, admits every operation it was drafted from, groups sensibly, never to /', async (t) => {
  const dir = tmpdir(t);
  const role = 'coder';
  const lines: AuditLineData[] = [];
  const files = (d: string, n: number) => Array.from({ length: n }, (_, i) => `${d}/f${i}.txt`);
  for (const p of files('/srv/repo/src', 7)) lines.push(wouldDeny(role, 'read', { path: p }), wouldDeny(role, 'read', { path: p }));
  for (const p of files('/srv/repo/docs', 3)) lines.push(wouldDeny(role, 'read', { path: p }));
  for (const sub of ['a', 'b', 'c', 'd', 'e']) for (const p of files(`/srv/cache/${sub}`, 5)) lines.push(wouldDeny(role, 'write', { path: p }));
  lines.push(wouldDeny(role, 'read', { path: '/srv/repo/src', dir: true }));
  for (const top of ['/alpha', '/beta', '/gamma', '/delta', '/epsilon', '/zeta']) lines.push(wouldDeny(role, 'read', { path: top }));
  lines.push(wouldDeny(role, 'exec', { path: '/opt/tool/bin/run', argv: ['run', '-x'] }));
  lines.push(wouldDeny(role, 'exec', { path: '/opt/tool/lib/libx.so', detail: 'mmap-exec' }));
  lines.push(wouldDeny(role, 'connect', { path: null, addr: '203.0.113.7', port: 443, proto: 'tcp', host: 'API.Example.com' }));
  lines.push(wouldDeny(role, 'connect', { path: null, addr: '2001:db8::5', port: 8443, proto: 'tcp' }));
  lines.push(wouldDeny(role, 'read', { path: '/etc/shadow' }, 'rule', 'secrets', 'base'));
  lines.push(wouldDeny(role, 'read', { path: '/srv/linked' }, 'inode-rule', 'secrets', 'base'));
  lines.push(wouldDeny(role, 'read', { path: null }, 'path-error'));
  lines.push(wouldDeny('other-role', 'read', { path: '/srv/other' }));
  lines.push({ ...wouldDeny(role, 'read', { path: '/srv/repo/x' }), decision: 'deny' });
  lines.push({ ...wouldDeny(role, 'signal', { path: null, arg: 9 }), reason: 'self-protection' });

  const s = suggestPolicy(lines, { role, threshold: 5, sources: ['audit.jsonl'] });
  const policies = parsePolicySource(s.yaml, 'suggested.yaml');
  t.equal(policies.length, 1, 'one policy');
  t.hasStrict(policies[0], { name: 'suggested-coder', roles: [role], mode: 'dry-run' });
  const f = path.join(dir, 'suggested.yaml');
  fs.writeFileSync(f, s.yaml);
  const lint = lintPolicies([f], { kernel: false });
  t.same(lint.errors, [], 'it lints (the language; network rules included)');
  const fileOnly = suggestPolicy(lines.filter((l) => l.op !== 'connect'), { role, threshold: 5, sources: ['x'] });
  fs.writeFileSync(f, fileOnly.yaml);
  t.same(lintPolicies([f]).errors, [], 'without network rules it compiles for this helmd too');

  const targets = (verb: string) => s.rules.find((r) => r.verb === verb)?.targets.map((x) => x.target) ?? [];
  t.same(targets('read'), ['/alpha', '/beta', '/delta', '/epsilon', '/gamma', '/srv/repo/docs/f0.txt', '/srv/repo/docs/f1.txt', '/srv/repo/docs/f2.txt', '/srv/repo/src/', '/zeta'], 'seven files (and the directory itself) become src/; three stay exact; nothing becomes /');
  t.same(targets('write'), ['/srv/cache/'], 'five directories of five files: each a subtree, then their parent');
  t.same(targets('exec'), ['/opt/tool/bin/run', '/opt/tool/lib/libx.so']);
  t.same(targets('connect'), ['[2001:db8::5]:8443', 'api.example.com:443'], 'a known host name, else the address');
  t.same(s.refused.map((r) => `${r.verb} ${r.target} ${r.rule}`), ['read (unnamed) path-error', 'read /etc/shadow base/secrets', 'read /srv/linked base/secrets'], 'what an allow cannot admit is listed');
  t.match(s.yaml, /# Not suggested: [\s\S]*#   read \/etc\/shadow — base\/secrets \(1 line\)/);
  t.equal(s.skipped, 1, 'self-protection is not a policy matter');
  t.notMatch(s.yaml, /\/srv\/other|\/srv\/repo\/x/, 'other roles, and enforced denials, are not drafted from');

  // Every operation the draft was made from is admitted, alone and next to a policy that blocks other things.
  const base = parsePolicySource(`apiVersion: helm/v1\nkind: Policy\nmetadata: { name: base }\nspec:\n  roles: [${role}]\n  mode: dry-run\n  block:\n    - { id: secrets, read: [/etc/shadow] }\n`, 'base.yaml');
  let admitted = 0;
  for (const r of s.rules) {
    for (const x of r.targets) {
      for (const c of x.covers) {
        const out = evaluateOperation([...base, ...policies], c.operation);
        t.equal(out.decision, 'allow', `${r.verb} ${JSON.stringify(c.operation)} is admitted (by ${out.policy}/${out.rule})`);
        admitted += c.count;
      }
    }
  }
  t.equal(admitted, lines.filter((l) => l.role === role && l.decision === 'would_deny' && l.reason === 'default').length, 'every default would_deny line is covered');
  t.equal(evaluateOperation([...base, ...policies], { role, verb: 'read', path: '/etc/shadow' }).decision, 'would_deny', 'and the block still holds');

  // The threshold: four files stay four exact paths; and helmctl does the same from files.
  const four = suggestPolicy(files('/srv/four', 4).map((p) => wouldDeny(role, 'read', { path: p })), { role, threshold: 5, sources: [] });
  t.same(four.rules[0].targets.map((x) => x.target), files('/srv/four', 4));
  const trailFile = path.join(dir, 'audit.jsonl');
  fs.writeFileSync(trailFile, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
  const cli = spawnSync(HELMCTL, ['policy', 'suggest', '--from', trailFile, '--role', role], { encoding: 'utf8' });
  t.equal(cli.status, 0, cli.stderr);
  t.equal(cli.stdout, suggestPolicy(lines, { role, threshold: 5, sources: [trailFile] }).yaml, 'helmctl prints the draft');
  const none = spawnSync(HELMCTL, ['policy', 'suggest', '--from', trailFile, '--role', 'nobody'], { encoding: 'utf8' });
  t.match(none.stderr, /no would_deny lines for role nobody/);
  t.throws(() => suggestPolicy([], { role, threshold: 1, sources: [] }), /threshold/);
});

t.test('a filter compiles once and is a plain predicate', async (t) => {
  const f = compileFilter({ prefix: ['10.0.0.0/8', '/srv/'] });
  t.ok(f({ addr: '10.9.9.9' }));
  t.ok(f({ addr: '::ffff:10.1.1.1' }), 'an IPv4-mapped address is its IPv4 address');
  t.notOk(f({ addr: '11.0.0.1' }));
  t.ok(f({ path: '/srv/x' }));
  t.notOk(f({ path: '/srvx' }));
  t.notOk(f({}));
});
