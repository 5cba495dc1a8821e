// Live policy swaps under load, in a kernel with BPF LSM. One governed process
// opens and executes files, and connects to loopback servers, that version A
// allows and B denies, that B allows and A denies, that both allow and that
// neither allows — over and over — while the test swaps the policy between A and
// B hundreds of times over gRPC (each swap rewriting tables the kernel held an
// older generation in). Every single
// operation must come out as one of the two versions decides it: never the
// default deny because of a swap, never an allow that neither version gives. An
// operation that fell entirely between two swaps must match the version then in
// force exactly, and every denial in the audit trail must be one that its
// generation's version makes.
//
// Probes are data (kind, target): R reads and X executes a file (the LSM hooks
// decide), C connects to an address (the cgroup connect4 hook decides, from the
// same generation).
import t from 'tap';
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import { requireBpfLsm, startHelmd, auditLines, helmctl, ROOT, RUNTIME_RULE, type Daemon, type AuditLine } from './harness';
import { call, client, controlError, ControlError } from '../../daemon/control/client';
import type * as grpc from '@grpc/grpc-js';
import { parsePolicySource } from '../../daemon/policy/parse';
import { evaluateOperation } from '../../daemon/policy/evaluate';
import net from 'node:net';
import type { FileVerb, Policy } from '../../daemon/policy/types';
import { Rng } from '../rng';

t.setTimeout(1_500_000);

const T = '/srv/helm-swap';
const SOCK = '/run/helm/swap.sock';
const AUDIT = `${T}/audit/audit.jsonl`;
const SWAPS = Number(process.env.HELM_SWAPS ?? 200);
const ROLE = 'swapper';

// Two flavours of each kind of file: in d/ the versions differ by block rules (the
// inode table swaps too), in e/ by exact allows (the default deny decides the rest).
const KINDS = ['a-only', 'b-only', 'both', 'none'] as const;
const FILES = KINDS.flatMap((k) => [`${T}/d/${k}`, `${T}/e/${k}`]);
// The same for connects: in 127.0.20.0/24 the versions differ by block rules under
// one CIDR allow, in 127.0.21.0/24 by exact address allows. A server listens on each.
const PORT = 8000;
const ADDR = (net: 20 | 21, k: (typeof KINDS)[number]) => `127.0.${net}.${KINDS.indexOf(k) + 1}`;
const ADDRS = KINDS.flatMap((k) => [`${ADDR(20, k)}:${PORT}`, `${ADDR(21, k)}:${PORT}`]);

function version(name: 'A' | 'B'): string {
  const mine = name === 'A' ? 'a-only' : 'b-only';
  const theirs = name === 'A' ? 'b-only' : 'a-only';
  const list = (xs: string[]) => `[${xs.join(', ')}]`;
  const dAllowed = list([`${T}/d/`]);
  const dBlocked = list([`${T}/d/${theirs}`, `${T}/d/none`]);
  const eAllowed = list([`${T}/e/${mine}`, `${T}/e/both`]);
  const cAllowed = list([`127.0.20.0/24:${PORT}`]);
  const cBlocked = list([`${ADDR(20, theirs)}:${PORT}`, `${ADDR(20, 'none')}:${PORT}`]);
  const c21Allowed = list([`${ADDR(21, mine)}:${PORT}`, `${ADDR(21, 'both')}:${PORT}`]);
  return `apiVersion: helm/v1
kind: Policy
metadata: { name: swap }
spec:
  roles: [${ROLE}]
  allow:
${RUNTIME_RULE}
    - { id: checkout, read: [${ROOT}/, /etc/ssl/], exec: [${ROOT}/] }
    - { id: d-${name}, read: ${dAllowed}, exec: ${dAllowed}, connect: ${cAllowed} }
    - { id: e-${name}, read: ${eAllowed}, exec: ${eAllowed}, connect: ${c21Allowed} }
  block:
    - { id: d-block-${name}, read: ${dBlocked}, exec: ${dBlocked}, connect: ${cBlocked} }
`;
}
const SOURCES = { A: version('A'), B: version('B') };

/** a-only, b-only, both or none: a file's name, an address's last byte. */
const kindOf = (target: string): string => (target.startsWith('/') ? target.slice(target.lastIndexOf('/') + 1) : KINDS[Number(target.split(':')[0].split('.')[3]) - 1]);
/** The probes the agent runs each round, and their targets. */
const PROBES: [kind: string, target: string][] = [...FILES.flatMap((f) => [['R', f], ['X', f]] as [string, string][]), ...ADDRS.map((a) => ['C', a] as [string, string])];
/** What each file probe asks the kernel, as the reference evaluator's verb. */
const FILE_VERBS: Record<string, FileVerb> = { R: 'read', X: 'exec' };

// The agent: one long-running perl process (a node start-up costs seconds here).
// For each probe "KIND:TARGET": R opens a file for reading, X forks and executes
// it, C connects a TCP socket to ADDR:PORT; each prints "KIND TARGET T0 T1 STATUS"
// with CLOCK_MONOTONIC seconds around the operation and 0 for success (else the
// errno). Stops at EOF on stdin. First it tries helmd's control socket.
const AGENT = String.raw`
use strict; use warnings;
use Time::HiRes qw(clock_gettime CLOCK_MONOTONIC);
use POSIX ();
use IO::Select;
use IO::Socket::UNIX;
use Socket qw(PF_INET SOCK_STREAM pack_sockaddr_in inet_aton);
my ($sock, @probes) = @ARGV;
my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $sock);
print "SOCKET ", ($s ? "connected" : ($! + 0)), "\n";
print "READY\n";
STDOUT->flush();
my $stdin = IO::Select->new(\*STDIN);
my %probe = (
  R => sub { my $f = shift; open(my $fh, '<', $f) or return $! + 0; close $fh; 0 },
  X => sub {
    my $f = shift;
    my $pid = fork();
    return 1000 + ($! + 0) unless defined $pid;
    if ($pid == 0) { no warnings; exec { $f } $f; POSIX::_exit(100 + ($! + 0)); }
    waitpid($pid, 0);
    $?
  },
  C => sub {
    my ($host, $port) = split /:/, shift;
    socket(my $s, PF_INET, SOCK_STREAM, 0) or return 1000 + ($! + 0);
    my $st = connect($s, pack_sockaddr_in($port, inet_aton($host))) ? 0 : $! + 0;
    close $s;
    $st
  },
);
while (1) {
  for my $p (@probes) {
    my ($kind, $target) = split /:/, $p, 2;
    my $t0 = clock_gettime(CLOCK_MONOTONIC);
    my $st = $probe{$kind}->($target);
    my $t1 = clock_gettime(CLOCK_MONOTONIC);
    print "$kind $target $t0 $t1 $st\n";
  }
  if ($stdin->can_read(0)) { my $b; last unless sysread(STDIN, $b, 1); }
}
print "DONE\n";
`;

interface Op {
  kind: string;
  target: string; // a file, or ADDR:PORT

  t0: number; // ns, CLOCK_MONOTONIC
  t1: number;
  ok: boolean;
  status: string;
}

interface Swap {
  version: 'A' | 'B';
  generation: number;
  sent: number; // ns
  done: number;
}

const missing = requireBpfLsm();
if (missing) {
  t.fail(`VM suite cannot run: ${missing}`);
} else {
  t.before(() => {
    fs.rmSync(T, { recursive: true, force: true });
    for (const d of ['d', 'e', 'policy', 'audit']) fs.mkdirSync(`${T}/${d}`, { recursive: true });
    for (const f of FILES) {
      fs.copyFileSync('/usr/bin/true', f);
      fs.chmodSync(f, 0o755);
    }
    fs.writeFileSync(`${T}/policy/swap.yaml`, SOURCES.A);
  });

  t.test('every operation during hundreds of swaps is decided by A or by B, never by neither', async (t) => {
    const policies: Record<'A' | 'B', Policy[]> = { A: parsePolicySource(SOURCES.A, 'a.yaml'), B: parsePolicySource(SOURCES.B, 'b.yaml') };
    const allows = (v: 'A' | 'B', kind: string, target: string) => {
      if (kind !== 'C') return evaluateOperation(policies[v], { role: ROLE, verb: FILE_VERBS[kind], path: target }).decision === 'allow';
      const [addr, port] = target.split(':');
      return evaluateOperation(policies[v], { role: ROLE, verb: 'connect', addr, port: Number(port) }).decision === 'allow';
    };
    // The test is only as good as its versions: check they differ where they should.
    for (const kind of ['R', 'X', 'C']) {
      for (const dir of ['d', 'e']) {
        const at = (k: (typeof KINDS)[number]) => (kind === 'C' ? `${ADDR(dir === 'd' ? 20 : 21, k)}:${PORT}` : `${T}/${dir}/${k}`);
        t.same(
          KINDS.map((k) => [allows('A', kind, at(k)), allows('B', kind, at(k))]),
          [
            [true, false],
            [false, true],
            [true, true],
            [false, false],
          ],
          `${kind} in ${dir}/: a-only, b-only, both, none`,
        );
      }
    }

    // The servers the agent connects to: accept and close (the test process is not governed).
    const servers = await Promise.all(
      ADDRS.map(
        (a) =>
          new Promise<net.Server>((resolve, reject) => {
            const [host, port] = a.split(':');
            const srv = net.createServer((c) => c.destroy());
            srv.once('error', reject);
            srv.listen({ host, port: Number(port), backlog: 511 }, () => resolve(srv));
          }),
      ),
    );
    t.teardown(() => servers.forEach((s) => s.close()));

    const d: Daemon = await startHelmd({ policy: [`${T}/policy`], audit: AUDIT, socket: SOCK, extra: ['--no-watch'] });
    t.teardown(async () => {
      if (d.proc.exitCode === null) await d.stop();
    });

    const agent = spawn(ROOT + '/bin/helmctl', ['run', '--socket', SOCK, '--role', ROLE, '--name', 'swapper', '--', 'perl', '-e', AGENT, SOCK, ...PROBES.map(([k, x]) => `${k}:${x}`)], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    agent.stdout.on('data', (b) => (out += b));
    agent.stderr.on('data', (b) => (err += b));
    const exited = new Promise<number | null>((r) => agent.on('exit', (code) => r(code)));
    const deadline = Date.now() + 180_000;
    while (!out.includes('READY\n')) {
      if (agent.exitCode !== null || Date.now() > deadline) throw new Error(`the agent did not start: ${out}\n${err}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    t.match(out, /^SOCKET 1$/m, "the governed agent cannot connect to helmd's socket (EPERM)");

    // Swap: A is generation 1; then B, A, A, B, A, B, B, A, ... (versionOf): three
    // applies in four change the version in force, and every generation differs from
    // the one four before it, whose slot of the kernel's tables it takes: each apply
    // rewrites those tables in place (helmd writes only what differs from what the slot
    // held). Pauses between some swaps leave stretches where one version alone is in force.
    const versionOf = (generation: number): 'A' | 'B' => ((generation + (generation >> 2)) & 1 ? 'A' : 'B');
    const rng = new Rng(0x5a4b);
    // One connection for every apply, as a control plane would keep (a new one costs here).
    const policyClient = client('PolicyService', SOCK);
    t.teardown(() => policyClient.close());
    const apply = (req: object) =>
      new Promise<{ generation: number }>((resolve, reject) =>
        policyClient.Apply(req, { deadline: Date.now() + 120_000 }, (e: grpc.ServiceError | null, r: { generation: number }) => (e ? reject(controlError(e, { socket: SOCK })) : resolve(r))),
      );
    const swaps: Swap[] = [{ version: 'A', generation: 1, sent: 0, done: 0 }];
    let aborted = 0;
    const started = Date.now();
    while (swaps.length <= SWAPS) {
      const prev = swaps[swaps.length - 1];
      const next = versionOf(prev.generation + 1);
      const sent = Number(process.hrtime.bigint());
      try {
        const r = await apply({ sources: [{ file: `${next}.yaml`, content: SOURCES[next] }], expected_generation: prev.generation });
        swaps.push({ version: next, generation: r.generation, sent, done: Number(process.hrtime.bigint()) });
      } catch (e) {
        if (!(e instanceof ControlError)) throw e;
        aborted++;
        t.fail(`apply ${swaps.length} failed: ${e.message}`);
        break;
      }
      // Execs take a while here: the pauses must outlast some of them.
      const pause = rng.chance(1 / 4) ? 200 + rng.int(500) : 0;
      if (pause) await new Promise((r) => setTimeout(r, pause));
    }
    const swapSeconds = (Date.now() - started) / 1000;
    agent.stdin.end();
    const code = await exited;
    t.equal(code, 0, 'the agent ran to the end');
    if (code !== 0) t.comment(err.slice(-4000));
    t.equal(aborted, 0, 'every apply went through');
    const rpcMs = swaps.slice(1).map((x) => (x.done - x.sent) / 1e6).sort((a, b) => a - b);
    t.equal(swaps.length - 1, SWAPS, `${SWAPS} swaps in ${swapSeconds.toFixed(1)} s (Apply answered in ${rpcMs[rpcMs.length >> 1]?.toFixed(0)} ms at the median)`);
    t.ok(
      swaps.every((s, i) => i === 0 || s.generation === swaps[i - 1].generation + 1),
      'generations are consecutive: nothing else applied in between',
    );

    const ops: Op[] = [];
    for (const line of out.split('\n')) {
      const m = /^([A-Z]) (\S+) (\S+) (\S+) (\d+)$/.exec(line);
      if (m) ops.push({ kind: m[1], target: m[2], t0: Number(m[3]) * 1e9, t1: Number(m[4]) * 1e9, ok: m[5] === '0', status: m[5] });
    }
    t.match(out, /^DONE$/m);
    const during = ops.filter((o) => o.t1 >= swaps[1].sent && o.t0 <= swaps[swaps.length - 1].done);
    t.ok(during.length >= 200, `${during.length} operations ran while policies were being swapped (${ops.length} in all)`);

    // Which versions may have been in force at some instant of [t0, t1]: version k from
    // its apply being sent until the next apply's answer.
    const versionsDuring = (o: Op): Set<'A' | 'B'> => {
      const vs = new Set<'A' | 'B'>();
      for (let k = 0; k < swaps.length; k++) {
        const from = k === 0 ? -Infinity : swaps[k].sent;
        const to = k + 1 < swaps.length ? swaps[k + 1].done : Infinity;
        if (o.t1 >= from && o.t0 <= to) vs.add(swaps[k].version);
      }
      return vs;
    };
    const wrong: string[] = [];
    let exact = 0;
    const exactOutcomes = new Set<string>();
    for (const o of ops) {
      const vs = versionsDuring(o);
      const fits = [...vs].some((v) => allows(v, o.kind, o.target) === o.ok);
      if (!fits) wrong.push(`${o.kind} ${o.target} status ${o.status} at [${o.t0}, ${o.t1}] (versions in force: ${[...vs].join(',')})`);
      if (vs.size === 1) {
        exact++;
        if (kindOf(o.target).endsWith('-only')) exactOutcomes.add(`${[...vs][0]} ${o.kind} ${o.target} ${o.ok}`);
      }
    }
    t.same(wrong.slice(0, 20), [], `every operation matches a version in force (${wrong.length} do not)`);
    for (const [probe, what] of [['R', 'files'], ['X', 'executables'], ['C', 'addresses']]) {
      const byKind = (kind: string) => ops.filter((o) => o.kind === probe && kindOf(o.target) === kind);
      t.ok(byKind('both').length > 0 && byKind('both').every((o) => o.ok), `${what} both versions allow were never denied (${byKind('both').length} operations)`);
      t.ok(byKind('none').length > 0 && byKind('none').every((o) => !o.ok), `${what} neither version allows were never allowed (${byKind('none').length} operations)`);
    }
    // A refused connect is the kernel's EPERM, not a server that was not there.
    const notEperm = ops.filter((o) => o.kind === 'C' && !o.ok && o.status !== '1');
    t.same(notEperm.slice(0, 5), [], `every failed connect failed with EPERM (${notEperm.length} did not)`);
    t.ok(exact >= 100, `${exact} operations fell between two swaps and were checked against that one version`);
    t.ok(exactOutcomes.size >= 12, `both versions were seen deciding both ways on the targets where they differ (${exactOutcomes.size} of 24 combinations)`);
    const exactConnects = [...exactOutcomes].filter((x) => x.split(' ')[1] === 'C');
    t.ok(exactConnects.length >= 4, `connects among them (${exactConnects.length} of 8)`);

    // The audit trail: every denial of this agent is one its generation's version makes.
    const versionByGeneration = new Map(swaps.map((s) => [s.generation, s.version]));
    const failedReads = ops.filter((o) => o.kind === 'R' && !o.ok).length;
    const failedConnects = ops.filter((o) => o.kind === 'C' && !o.ok).length;
    type NetLine = AuditLine & { addr?: string; port?: number; detail?: string };
    const isProbeConnect = (l: NetLine) => l.op === 'connect' && ADDRS.includes(`${l.addr}:${l.port}`);
    const lines = (await auditLines(
      AUDIT,
      (ls) =>
        ls.filter((l) => l.agent === 'swapper' && l.op === 'read' && FILES.includes(l.path ?? '')).length >= failedReads &&
        ls.filter((l) => l.agent === 'swapper' && isProbeConnect(l)).length >= failedConnects,
      60_000,
    )) as NetLine[];
    const mine = lines.filter((l) => l.type === 'decision' && l.agent === 'swapper');
    const lost = lines.filter((l) => l.type === 'lost');
    const badAudit: string[] = [];
    for (const l of mine) {
      if (l.op === 'control') continue; // the socket probe: self-protection, not policy
      const v = versionByGeneration.get(l.generation);
      if (!v) {
        badAudit.push(`generation ${l.generation} is not one the test applied: ${JSON.stringify(l)}`);
        continue;
      }
      if (l.reason === 'no-table' || l.reason === 'no-policy') badAudit.push(`${l.reason}: ${l.path}`);
      if (isProbeConnect(l) && allows(v, 'C', `${l.addr}:${l.port}`)) {
        badAudit.push(`generation ${l.generation} (${v}) denied connect ${l.addr}:${l.port}, which ${v} allows`);
      }
      const verb = l.op as FileVerb;
      if (l.path && ['read', 'write', 'exec'].includes(verb) && evaluateOperation(policies[v], { role: ROLE, verb, path: l.path }).decision === 'allow') {
        badAudit.push(`generation ${l.generation} (${v}) denied ${verb} ${l.path}, which ${v} allows`);
      }
    }
    t.same(badAudit.slice(0, 20), [], `every audited denial is one its generation's version makes (${mine.length} denials, ${badAudit.length} not)`);
    const auditedReads = mine.filter((l) => l.op === 'read' && l.detail === 'open' && FILES.includes(l.path ?? '')).length;
    const auditedConnects = mine.filter(isProbeConnect).length;
    if (lost.length === 0) {
      t.equal(auditedReads, failedReads, `every denied read is in the trail, once (${failedReads})`);
      t.equal(auditedConnects, failedConnects, `every denied connect is in the trail, once (${failedConnects})`);
    } else {
      t.ok(auditedReads <= failedReads, `with events lost, no more read denials than failures (${auditedReads} ≤ ${failedReads})`);
      t.ok(auditedConnects <= failedConnects, `with events lost, no more connect denials than failures (${auditedConnects} ≤ ${failedConnects})`);
    }
    t.ok(mine.some((l) => l.op === 'control' && l.reason === 'self-protection'), 'the connection to the socket is audited as self-protection');
    const applied = lines.filter((l) => l.type === 'control' && (l as unknown as { action: string }).action === 'apply');
    t.equal(applied.length, SWAPS + 1, 'every apply is in the trail (and the start-up)');

    // Only the retired generations are gone: the kernel holds the active one alone.
    const status = await call<{ generation: number; live_generations: number[] }>(SOCK, 'SystemService', 'Status', {});
    t.same(status.live_generations, [status.generation], 'superseded generations were freed');

    // SIGHUP re-reads the policy files: a good one is applied, a broken one changes nothing.
    const hup = async (text: string) => {
      fs.writeFileSync(`${T}/policy/swap.yaml`, text);
      const before = (await auditLines(AUDIT)).filter((l) => l.type === 'control').length;
      d.proc.kill('SIGHUP');
      await auditLines(AUDIT, (ls) => ls.filter((l) => l.type === 'control').length > before);
      return call<{ generation: number; last_apply: { ok: boolean; source: string; error: string } }>(SOCK, 'SystemService', 'Status', {});
    };
    const last = swaps[swaps.length - 1].generation;
    const good = await hup(SOURCES.B);
    t.match(good, { generation: last + 1, last_apply: { ok: true, source: 'sighup' } }, 'SIGHUP applies the policy files');
    const bad = await hup(SOURCES.A.replace('allow:', 'alow:'));
    t.match(bad, { generation: last + 1, last_apply: { ok: false, source: 'sighup', error: /swap\.yaml:\d+:\d+: / } }, 'a broken file on SIGHUP is rejected, located, and the running policy stays');

    // The real client, governed: refused by the kernel, and it says so.
    const inside = helmctl(['run', '--socket', SOCK, '--role', ROLE, '--name', 'ctl-inside', '--', `${ROOT}/bin/helmctl`, 'status', '--socket', SOCK]);
    t.not(inside.status, 0, 'helmctl run inside a governed agent cannot reach helmd');
    t.match(inside.stderr, /the kernel refused the connection \(a process governed by helm cannot use helmd's control socket\)/, 'and says the kernel refused it');
  });
}
