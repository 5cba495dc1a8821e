// Contextual conditions on exe, label and uid, enforced by the kernel: agents attached with
// labels run processes as different uids (setpriv) and through different executables (cat and
// net-probe, and copies of them in other directories); a contextual rule allows exactly when
// its `when` holds, for file reads, writes and connects, and the audit trail names the deciding
// rule with the uid and executable the kernel saw. Attempts to pass a condition one does not
// hold: a symlink to a program, or a process renamed (argv[0]), in the directory an exe condition
// names; a setuid program (its effective uid is not the uid the condition sees); an agent
// relabelling itself through helmctl. Then a kernel/evaluator differential with random conditions. Everything stays on the VM's loopback (nothing listens on the ports used:
// a connect the kernel lets through fails with ECONNREFUSED).
import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { HELMCTL, ROOT, RUNTIME_RULE, auditLines, helmctl, requireBpfLsm, startHelmd, type AuditLine, type Daemon } from './harness';
import { loadPolicies } from '../../daemon/policy/parse';
import { evaluateOperation, type Operation, type Outcome } from '../../daemon/policy/evaluate';
import type { Policy } from '../../daemon/policy/types';
import { kernelDecision } from '../support/network-differential';
import { LABEL_PAIRS, randomWhen } from '../support/conditions';
import { Rng } from '../rng';
import { cgroup2Mount } from '../../daemon/control/cgroups';

t.setTimeout(1_200_000);

const T = '/srv/helm-cond';
const DATA = `${T}/data`;
const OUT = `${T}/out`;
const CAT = '/usr/bin/cat';
const MY_CAT = `${T}/bin/cat`; // a copy in the directory the exe conditions name
const OTHER_CAT = `${T}/other/cat`; // the same program elsewhere
const MY_PROBE = `${T}/bin/net-probe`;
const OTHER_PROBE = `${T}/other/net-probe`;
const LINK_CAT = `${T}/bin/link-cat`; // a symlink to CAT in the directory the exe conditions name
const SUID_CAT = `${T}/suid/cat`; // a copy of cat, setuid to uid 1000
const SH = fs.realpathSync('/bin/sh'); // what the kernel names as the shell's executable
const SOCKETS = `${T}/sock`; // unix sockets the test listens on
const PORT = 18990;

interface AddrLine extends AuditLine {
  addr?: string;
  port?: number;
  detail?: string;
}

/**
 * One operation by one process of an agent: `setpriv` runs EXE as UID (real and effective) and
 * the operation happens in EXE. read: EXE is a cat and the target the file; write: EXE is the
 * shell and the target the file it creates; connect (ADDR:PORT), unix (a socket path) and raw (a
 * protocol number): EXE is a net-probe. EXE is the executable the kernel sees (what the
 * evaluator and the audit line get); CMD, when given, is what is run instead (a symlink to EXE),
 * and ARGV0 the name a read's process is given (bash's exec -a).
 */
interface Case {
  id: string;
  kind: 'read' | 'write' | 'connect' | 'unix' | 'raw';
  uid: number;
  exe: string;
  target: string;
  cmd?: string;
  argv0?: string;
}

// Runs in the agent: prints "CASE <id> ok" or "CASE <id> denied <error>" (net-probe prints its own).
const RUNNER = `
for c in "$@"; do
  id=\${c%%|*}; rest=\${c#*|}; kind=\${rest%%|*}; rest=\${rest#*|}
  uid=\${rest%%|*}; rest=\${rest#*|}; exe=\${rest%%|*}; rest=\${rest#*|}
  argv0=\${rest%%|*}; arg=\${rest#*|}
  as="setpriv --reuid=$uid --regid=$uid --clear-groups"
  case $kind in
    read)    if [ -n "$argv0" ]; then out=$($as bash -c 'exec -a "$0" "$1" "$2"' "$argv0" "$exe" "$arg" 2>&1 >/dev/null)
             else out=$($as "$exe" "$arg" 2>&1 >/dev/null); fi ;;
    write)   out=$($as "$exe" -c 'echo x > "$1"' sh "$arg" 2>&1) ;;
    connect) $as "$exe" "$id=tcp:$arg"; continue ;;
    unix)    $as "$exe" "$id=unix:$arg:0"; continue ;;
    raw)     $as "$exe" "$id=raw:$arg:0"; continue ;;
  esac
  if [ $? -eq 0 ]; then echo "CASE $id ok"; else echo "CASE $id denied $out"; fi
done
`;

// Runs in an agent labelled team: ops: tries to relabel itself, then reads a team: pay file.
const RELABEL = `
h=$1; sock=$2; cg=$3; cat=$4; file=$5
"$h" attach --socket "$sock" --cgroup "$cg" --role cond --name relabelled --label team=pay 2>&1 | sed 's/^/ATTACH /'
"$h" run --socket "$sock" --cgroup-parent "\${cg%/*}" --role cond --name nested --label team=pay -- "$cat" "$file" 2>&1 | sed 's/^/RUN /'
if "$cat" "$file" >/dev/null 2>&1; then echo "READ ok"; else echo "READ denied"; fi
`;

function run(d: Daemon, agent: string, labels: Record<string, string>, cases: Case[]): Map<string, string> {
  const args = cases.map((c) => `${c.id}|${c.kind}|${c.uid}|${c.cmd ?? c.exe}|${c.argv0 ?? ''}|${c.target}`);
  const labelArgs = Object.entries(labels).flatMap(([k, v]) => ['--label', `${k}=${v}`]);
  const r = helmctl(['run', '--socket', d.socket, '--role', 'cond', '--name', agent, ...labelArgs, '--', 'sh', '-c', RUNNER, 'runner', ...args]);
  if (r.status !== 0) throw new Error(`helmctl run failed (${r.status}): ${r.stderr}`);
  const out = new Map<string, string>();
  for (const line of r.stdout.split('\n')) {
    const m = /^CASE (\S+) ?(.*)$/.exec(line);
    if (m) out.set(m[1], m[2]);
  }
  return out;
}

/** The evaluator's decision for a case, with what the kernel knows of the process. */
function expected(policies: Policy[], c: Case, labels: Record<string, string>): Outcome {
  const ctx = { role: 'cond', exe: c.exe, uid: c.uid, labels };
  let op: Operation;
  if (c.kind === 'connect') {
    const [addr, port] = c.target.split(':');
    op = { ...ctx, verb: 'connect', addr, port: Number(port) };
  } else if (c.kind === 'unix') {
    op = { ...ctx, verb: 'connect', port: 0, socket: { family: 'unix', path: c.target } };
  } else if (c.kind === 'raw') {
    op = { ...ctx, verb: 'connect', port: 0, socket: { family: 'raw', protocol: Number(c.target) } };
  } else {
    op = { ...ctx, verb: c.kind, path: c.target };
  }
  return evaluateOperation(policies, op);
}

/** Did the kernel let it through? (A would_deny lets it through too.) */
function passed(c: Case, got: string | undefined): boolean | undefined {
  if (got === undefined) return undefined;
  if (c.kind === 'read' || c.kind === 'write') return got === 'ok';
  return kernelDecision(got) === 'passed';
}

/** The audit line of a case's denial: same agent, verb, object, uid and executable. */
function lineOf(lines: AddrLine[], agent: string, c: Case): AddrLine | undefined {
  return lines.find((l) => {
    if (l.agent !== agent || l.uid !== c.uid || l.exe !== c.exe) return false;
    if (c.kind === 'connect') return l.op === 'connect' && `${l.addr}:${l.port}` === c.target;
    if (c.kind === 'unix') return l.op === 'connect' && l.detail === 'unix' && l.path === c.target;
    if (c.kind === 'raw') return l.op === 'connect' && l.detail === 'raw';
    return l.op === c.kind && l.path === c.target;
  });
}

function setUpTree(): void {
  fs.rmSync(T, { recursive: true, force: true });
  for (const d of [DATA, `${DATA}/sub`, `${T}/bin`, `${T}/other`, `${T}/suid`, SOCKETS, `${T}-audit`]) fs.mkdirSync(d, { recursive: true, mode: 0o755 });
  fs.mkdirSync(OUT, { mode: 0o777 });
  fs.chmodSync(OUT, 0o1777); // any uid may create files here: only the policy decides
  for (const f of ['exe.txt', 'uid.txt', 'label.txt', 'all.txt', 'plain.txt', 'a.txt', 'ab.txt', 'sub/c.txt', 'sub/d.txt']) fs.writeFileSync(`${DATA}/${f}`, 'x\n', { mode: 0o644 });
  for (const [from, to] of [
    [CAT, MY_CAT],
    [CAT, OTHER_CAT],
    [path.join(ROOT, 'build', 'net-probe'), MY_PROBE],
    [path.join(ROOT, 'build', 'net-probe'), OTHER_PROBE],
    [CAT, SUID_CAT],
  ]) {
    fs.copyFileSync(from, to);
    fs.chmodSync(to, 0o755);
  }
  fs.symlinkSync(CAT, LINK_CAT);
  // Readable by uid 1000 alone: the setuid cat reads them with effective uid 1000.
  for (const f of [`${DATA}/suid.txt`, `${DATA}/owner-1000.txt`]) {
    fs.writeFileSync(f, 'x\n', { mode: 0o400 });
    fs.chownSync(f, 1000, 1000);
  }
  fs.chownSync(SUID_CAT, 1000, 1000);
  fs.chmodSync(SUID_CAT, 0o4755);
}

/** What every process of the test needs: the runtime, setpriv, the shell, the copies. */
const TOOLS_RULE = `${RUNTIME_RULE}\n    - { id: tools, exec: [${T}/bin/, ${T}/other/, ${T}/suid/], read: [${T}/bin/, ${T}/other/, ${T}/suid/, /etc/] }`;

const POLICY = `apiVersion: helm/v1
kind: Policy
metadata: { name: cond }
spec:
  roles: [cond]
  allow:
${TOOLS_RULE}
    - { id: checkout, read: [${ROOT}/], exec: [${ROOT}/] }
    - { id: all-data, read: [${DATA}/] }
    - { id: app-sockets, connect: ["unix:${SOCKETS}/"] }
  contextual:
    - id: by-exe
      read: [${DATA}/exe.txt]
      when: { exe: ${T}/bin/ }
    - id: by-uid
      read: [${DATA}/uid.txt]
      when: { uid: [1000] }
    - id: by-label
      read: [${DATA}/label.txt]
      when: { label: { team: pay } }
    - id: by-all
      read: [${DATA}/all.txt]
      when: { role: cond, exe: ${CAT}, uid: 1000, label: { team: pay, env: prod } }
    - id: by-uid-suid
      read: [${DATA}/suid.txt]
      when: { uid: [1000] }
    - id: write-by-uid
      write: [${OUT}/]
      when: { uid: [1000, 1001], exe: ${SH} }
    - id: net-by-exe
      connect: ["127.0.0.2:${PORT}"]
      when: { exe: ${MY_PROBE}, uid: [0, 1000] }
    - id: net-by-label
      connect: ["127.0.0.3:${PORT}"]
      when: { label: { env: prod } }
    - id: admin-by-exe
      connect: ["unix:${SOCKETS}/admin.sock"]
      when: { exe: ${MY_PROBE} }
    - id: raw-by-label
      connect: ["raw:icmp"]
      when: { label: { env: prod } }
`;

const PAY = { team: 'pay', env: 'prod' };
const OPS = { team: 'ops' };

/** [case, agent labels, expected: allow or the rule that denies]. */
const SCENARIO: [Case, Record<string, string>, string][] = [
  [{ id: 'exe-mine', kind: 'read', uid: 0, exe: MY_CAT, target: `${DATA}/exe.txt` }, PAY, 'allow'],
  [{ id: 'exe-system', kind: 'read', uid: 0, exe: CAT, target: `${DATA}/exe.txt` }, PAY, 'by-exe'],
  [{ id: 'exe-copy-elsewhere', kind: 'read', uid: 0, exe: OTHER_CAT, target: `${DATA}/exe.txt` }, PAY, 'by-exe'],
  [{ id: 'uid-1000', kind: 'read', uid: 1000, exe: CAT, target: `${DATA}/uid.txt` }, PAY, 'allow'],
  [{ id: 'uid-1001', kind: 'read', uid: 1001, exe: CAT, target: `${DATA}/uid.txt` }, PAY, 'by-uid'],
  [{ id: 'uid-root', kind: 'read', uid: 0, exe: MY_CAT, target: `${DATA}/uid.txt` }, PAY, 'by-uid'],
  [{ id: 'label-pay', kind: 'read', uid: 0, exe: CAT, target: `${DATA}/label.txt` }, PAY, 'allow'],
  [{ id: 'label-ops', kind: 'read', uid: 0, exe: CAT, target: `${DATA}/label.txt` }, OPS, 'by-label'],
  [{ id: 'all-hold', kind: 'read', uid: 1000, exe: CAT, target: `${DATA}/all.txt` }, PAY, 'allow'],
  [{ id: 'all-but-exe', kind: 'read', uid: 1000, exe: MY_CAT, target: `${DATA}/all.txt` }, PAY, 'by-all'],
  [{ id: 'all-but-uid', kind: 'read', uid: 1001, exe: CAT, target: `${DATA}/all.txt` }, PAY, 'by-all'],
  [{ id: 'all-but-labels', kind: 'read', uid: 1000, exe: CAT, target: `${DATA}/all.txt` }, OPS, 'by-all'],
  [{ id: 'plain-ops', kind: 'read', uid: 1001, exe: OTHER_CAT, target: `${DATA}/plain.txt` }, OPS, 'allow'],
  [{ id: 'write-1000', kind: 'write', uid: 1000, exe: SH, target: `${OUT}/by-1000` }, OPS, 'allow'],
  [{ id: 'write-root', kind: 'write', uid: 0, exe: SH, target: `${OUT}/by-root` }, OPS, 'write-by-uid'],
  [{ id: 'net-mine-1000', kind: 'connect', uid: 1000, exe: MY_PROBE, target: `127.0.0.2:${PORT}` }, OPS, 'allow'],
  [{ id: 'net-mine-1001', kind: 'connect', uid: 1001, exe: MY_PROBE, target: `127.0.0.2:${PORT}` }, OPS, 'net-by-exe'],
  [{ id: 'net-other-probe', kind: 'connect', uid: 0, exe: OTHER_PROBE, target: `127.0.0.2:${PORT}` }, OPS, 'net-by-exe'],
  [{ id: 'net-label-prod', kind: 'connect', uid: 1001, exe: OTHER_PROBE, target: `127.0.0.3:${PORT}` }, PAY, 'allow'],
  [{ id: 'net-label-ops', kind: 'connect', uid: 0, exe: MY_PROBE, target: `127.0.0.3:${PORT}` }, OPS, 'net-by-label'],
  [{ id: 'net-default', kind: 'connect', uid: 0, exe: MY_PROBE, target: `127.0.0.4:${PORT}` }, PAY, 'default'],
  [{ id: 'unix-admin-mine', kind: 'unix', uid: 0, exe: MY_PROBE, target: `${SOCKETS}/admin.sock` }, OPS, 'allow'],
  [{ id: 'unix-admin-other', kind: 'unix', uid: 0, exe: OTHER_PROBE, target: `${SOCKETS}/admin.sock` }, OPS, 'admin-by-exe'],
  [{ id: 'unix-api', kind: 'unix', uid: 0, exe: OTHER_PROBE, target: `${SOCKETS}/api.sock` }, OPS, 'allow'],
  [{ id: 'raw-prod', kind: 'raw', uid: 0, exe: MY_PROBE, target: '1' }, PAY, 'allow'],
  [{ id: 'raw-ops', kind: 'raw', uid: 0, exe: MY_PROBE, target: '1' }, OPS, 'raw-by-label'],
  // Passing for a program the condition names: the kernel sees the executable, not its names.
  [{ id: 'exe-via-symlink', kind: 'read', uid: 0, exe: CAT, cmd: LINK_CAT, target: `${DATA}/exe.txt` }, PAY, 'by-exe'],
  [{ id: 'exe-renamed-argv0', kind: 'read', uid: 0, exe: CAT, argv0: MY_CAT, target: `${DATA}/exe.txt` }, PAY, 'by-exe'],
  [{ id: 'exe-dir-planted', kind: 'write', uid: 0, exe: SH, target: `${T}/bin/planted` }, PAY, 'default'],
  // A setuid program: its effective uid is 1000 (it can read a file only uid 1000 may), but the
  // uid conditions see (and the audit line shows) the real uid of whoever ran it.
  [{ id: 'suid-effective-1000', kind: 'read', uid: 1001, exe: SUID_CAT, target: `${DATA}/owner-1000.txt` }, OPS, 'allow'],
  [{ id: 'suid-by-1001', kind: 'read', uid: 1001, exe: SUID_CAT, target: `${DATA}/suid.txt` }, OPS, 'by-uid-suid'],
  [{ id: 'suid-by-1000', kind: 'read', uid: 1000, exe: SUID_CAT, target: `${DATA}/suid.txt` }, OPS, 'allow'],
];

// ---------------------------------------------------------------------------------------------
// The differential: random policies over the data files and three loopback addresses.

// A fixed default, so that CI runs the same cases every time (HELM_COND_SEED explores others).
const SEED = Number(process.env.HELM_COND_SEED ?? 53);
const READ_TARGETS = [`${DATA}/`, `${DATA}/a.txt`, `${DATA}/ab.txt`, `${DATA}/sub/`, `${DATA}/sub/c.txt`];
const READ_FILES = [`${DATA}/a.txt`, `${DATA}/ab.txt`, `${DATA}/sub/c.txt`, `${DATA}/sub/d.txt`];
const NET_TARGETS = [`127.0.0.2:${PORT}`, `127.0.0.3:${PORT}`, `127.0.0.2:${PORT + 1}`, `127.0.0.0/30:${PORT}-${PORT + 1}`, `127.0.0.4:*`];
const EXE_TARGETS = [CAT, '/usr/bin/', `${T}/bin/`, MY_CAT, MY_PROBE, `${T}/other/`, '/'];

function randomPolicies(rng: Rng): string {
  const rule = (kind: string, i: number) => {
    const body: string[] = [];
    if (rng.chance(0.7)) body.push(`read: ${JSON.stringify(rng.subset(READ_TARGETS))}`);
    if (rng.chance(0.5) || body.length === 0) body.push(`connect: ${JSON.stringify(rng.subset(NET_TARGETS))}`);
    const when = kind === 'contextual' ? `, when: ${JSON.stringify(randomWhen(rng, ['cond'], 0.2, EXE_TARGETS))}` : '';
    return `    - { id: ${kind}-${i}, ${body.join(', ')}${when} }`;
  };
  const list = (kind: string, n: number) => Array.from({ length: n }, (_, i) => rule(kind, i)).join('\n');
  const section = (kind: string, n: number, extra = '') => (n || extra ? `  ${kind}:\n${extra}${extra && n ? '\n' : ''}${list(kind, n)}\n` : '');
  return (
    `apiVersion: helm/v1\nkind: Policy\nmetadata: { name: diff-enforce }\nspec:\n  roles: [cond]\n` +
    section('allow', 1 + rng.int(3), TOOLS_RULE) +
    section('block', rng.int(2)) +
    section('contextual', 2 + rng.int(3)) +
    `---\napiVersion: helm/v1\nkind: Policy\nmetadata: { name: diff-dry }\nspec:\n  roles: [cond]\n  mode: dry-run\n` +
    section('allow', rng.int(2)) +
    section('block', rng.chance(0.3) ? 1 : 0) +
    section('contextual', rng.int(3))
  );
}

function randomCases(rng: Rng, prefix: string, n: number): Case[] {
  return Array.from({ length: n }, (_, i) => {
    const uid = rng.pick([0, 1000, 1001]);
    if (rng.chance(0.65)) return { id: `${prefix}${i}`, kind: 'read', uid, exe: rng.pick([CAT, MY_CAT, OTHER_CAT]), target: rng.pick(READ_FILES) };
    return { id: `${prefix}${i}`, kind: 'connect', uid, exe: rng.pick([MY_PROBE, OTHER_PROBE]), target: `127.0.0.${2 + rng.int(3)}:${PORT + rng.int(2)}` };
  });
}

function randomLabels(rng: Rng): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const [k, v] of LABEL_PAIRS) if (rng.chance(0.5)) labels[k] = v;
  return labels;
}

async function main(): Promise<void> {
  const why = requireBpfLsm();
  if (why) {
    t.fail(`VM suite cannot run: ${why}`);
    return;
  }
  setUpTree();
  // Unix sockets to connect to (a connect completes into the backlog: nothing needs to accept).
  const listeners = await Promise.all(
    ['admin.sock', 'api.sock'].map(
      (name) =>
        new Promise<net.Server>((resolve, reject) => {
          const srv = net.createServer((c) => c.end());
          srv.once('error', reject);
          srv.listen(path.join(SOCKETS, name), () => resolve(srv));
        }),
    ),
  );
  t.teardown(() => {
    for (const l of listeners) l.close();
    fs.rmSync(T, { recursive: true, force: true });
  });

  await t.test('contextual rules allow exactly when exe, label and uid hold (files and network)', async (t) => {
    const file = `${T}-audit/cond.yaml`;
    fs.writeFileSync(file, POLICY);
    const policies = loadPolicies([file]).policies;
    const d = await startHelmd({ policy: [file], audit: `${T}-audit/cond.jsonl`, socket: `${T}-audit/cond.sock` });
    try {
      const byLabels = new Map<string, [Case, string][]>();
      for (const [c, labels, want] of SCENARIO) {
        const key = JSON.stringify(labels);
        byLabels.set(key, [...(byLabels.get(key) ?? []), [c, want]]);
      }
      const results = new Map<string, { got?: string; agent: string }>();
      let n = 0;
      for (const [key, cases] of byLabels) {
        const agent = `cond-${n++}`;
        const got = run(d, agent, JSON.parse(key), cases.map(([c]) => c));
        for (const [c] of cases) results.set(c.id, { got: got.get(c.id), agent });
      }
      const denials = SCENARIO.filter(([, , want]) => want !== 'allow').length;
      const lines = (await auditLines(d.audit, (ls) => ls.filter((l) => l.agent?.startsWith('cond-')).length >= denials)) as AddrLine[];
      for (const [c, labels, want] of SCENARIO) {
        const { got, agent } = results.get(c.id)!;
        const ev = expected(policies, c, labels);
        const what = `${c.id}: ${c.kind} ${c.target} by ${c.exe} as uid ${c.uid}, labels ${JSON.stringify(labels)}`;
        t.equal(ev.decision === 'allow' ? 'allow' : (ev.rule ?? 'default'), want, `${what}: the evaluator says ${want}`);
        t.equal(passed(c, got), want === 'allow', `${what}: kernel ${got}`);
        const line = lineOf(lines, agent, c);
        if (want === 'allow') t.notOk(line, `${what}: not in the audit trail`);
        else t.match(line, { decision: 'deny', rule: want, uid: c.uid, exe: c.exe, role: 'cond' }, `${what}: audited, naming ${want}`);
      }
      t.ok(fs.existsSync(`${OUT}/by-1000`) && !fs.existsSync(`${OUT}/by-root`), 'the allowed write happened, the denied one did not');
      t.notOk(fs.existsSync(`${T}/bin/planted`), 'nothing was planted in the directory an exe condition names');

      // An agent cannot give itself labels: helmd's socket and cgroupfs are out of its reach.
      const cgroup = path.join(cgroup2Mount()!, 'helm', 'cond-self');
      const self = helmctl(['run', '--socket', d.socket, '--role', 'cond', '--name', 'cond-self', '--label', 'team=ops', '--', 'sh', '-c', RELABEL, 'relabel', HELMCTL, d.socket, cgroup, CAT, `${DATA}/label.txt`]);
      t.equal(self.status, 0, `the agent ran: ${self.stderr}`);
      t.match(self.stdout, /^ATTACH .*the kernel refused the connection/m, 'helmctl attach --label from inside the agent: refused by the kernel');
      t.match(self.stdout, /^RUN .*cannot create cgroup .*(EPERM|not permitted)/m, 'helmctl run --label from inside the agent: no cgroup for it');
      t.match(self.stdout, /^READ denied$/m, 'and the agent still lacks team: pay');
      const after = await auditLines(d.audit, (ls) => ls.some((l) => l.agent === 'cond-self' && l.path === `${DATA}/label.txt`));
      t.match(
        after.find((l) => l.agent === 'cond-self' && l.path === `${DATA}/label.txt`),
        { decision: 'deny', rule: 'by-label', exe: CAT },
        'the read is denied by the label rule',
      );
      t.notOk(
        after.some((l) => (l as { type?: string }).type === 'control' && ['relabelled', 'nested'].includes(((l as { subject?: { agent?: string } }).subject ?? {}).agent ?? '')),
        'helmd attached nothing the agent asked for',
      );
    } finally {
      await d.stop();
    }
  });

  await t.test(`differential: kernel = reference evaluator with random conditions (seed ${SEED})`, async (t) => {
    const rng = new Rng(SEED);
    let total = 0;
    const tally = new Map<string, number>();
    for (let round = 0; round < 2; round++) {
      const text = randomPolicies(rng);
      const file = `${T}-audit/random-${round}.yaml`;
      fs.writeFileSync(file, text);
      const policies = loadPolicies([file]).policies;
      const d = await startHelmd({ policy: [file], audit: `${T}-audit/random-${round}.jsonl`, socket: `${T}-audit/r${round}.sock` });
      try {
        const agents = Array.from({ length: 3 }, (_, i) => ({ name: `rand-${round}-${i}`, labels: randomLabels(rng), cases: randomCases(rng, `r${round}a${i}c`, 35) }));
        const got = new Map<string, string | undefined>();
        for (const a of agents) {
          const out = run(d, a.name, a.labels, a.cases);
          for (const c of a.cases) got.set(c.id, out.get(c.id));
        }
        const wants = agents.flatMap((a) => a.cases.map((c) => ({ a, c, want: expected(policies, c, a.labels) })));
        const audited = wants.filter((w) => w.want.decision !== 'allow').length;
        const lines = (await auditLines(d.audit, (ls) => ls.filter((l) => l.agent?.startsWith(`rand-${round}-`)).length >= audited)) as AddrLine[];
        let bad = 0;
        for (const { a, c, want } of wants) {
          const k = passed(c, got.get(c.id));
          const line = lineOf(lines, a.name, c);
          const ok =
            k === (want.decision !== 'deny') &&
            (want.decision === 'allow' ? line === undefined : line?.rule === (want.rule ?? 'default') && line?.decision === want.decision);
          tally.set(want.decision, (tally.get(want.decision) ?? 0) + 1);
          if (!ok) {
            bad++;
            t.fail(`${c.kind} ${c.target} by ${c.exe} uid ${c.uid} labels ${JSON.stringify(a.labels)}: evaluator ${want.decision} ${want.rule ?? 'default'}, kernel ${got.get(c.id)}, audit ${JSON.stringify(line && { decision: line.decision, rule: line.rule })}`);
          }
        }
        total += wants.length;
        t.equal(bad, 0, `round ${round}: ${wants.length} operations agree`);
        if (bad) t.comment(`policies of round ${round}:\n${text}`);
      } finally {
        await d.stop();
      }
    }
    t.comment(`${total} operations: ${[...tally].map(([k, v]) => `${v} ${k}`).join(', ')} (replay with HELM_COND_SEED=${SEED})`);
    for (const k of ['allow', 'deny', 'would_deny']) t.ok((tally.get(k) ?? 0) > 0, `${k} occurred`);
  });
}

void main();
