// The kernel and the reference evaluator implement one algorithm: random trees,
// random policies, random operations — every outcome in the real kernel must be
// the evaluator's, deciding rule included. A difference is a bug in one of them.
import t from 'tap';
import { Rng } from '../rng';
import fs from 'node:fs';
import path from 'node:path';
import { requireBpfLsm, startHelmd, probe, auditLines, type Daemon, RUNTIME_RULE } from './harness';
import { parsePolicySource } from '../../daemon/policy/parse';
import { evaluateOperation, type FileOperation } from '../../daemon/policy/evaluate';

t.setTimeout(900_000);

const T = '/srv/helm-diff';
const SOCK = '/run/helm/diff.sock';
const AUDIT = `${T}-audit/audit.jsonl`;

const SEED = Number(process.env.HELM_DIFF_SEED ?? 20261130);
const rng = new Rng(SEED);
const rand = () => rng.next();
const pick = <X>(xs: X[]): X => xs[Math.floor(rand() * xs.length)];

// A tree whose names are prefixes of each other as strings (a, ab, a.b): the traps of prefix matching.
const NAMES = ['a', 'ab', 'a.b', 'b'];
const dirs: string[] = [T];
const files: string[] = [];
function grow(dir: string, depth: number): void {
  for (const n of NAMES) {
    if (rand() < 0.6) {
      const f = path.join(dir, `${n}.txt`);
      files.push(f);
    }
    if (depth < 3 && rand() < 0.5) {
      const d = path.join(dir, n);
      dirs.push(d);
      grow(d, depth + 1);
    }
  }
}
grow(T, 0);

function target(): string {
  return rand() < 0.5 ? `${pick(dirs)}/` : pick(files.length ? files : dirs);
}

function randomPolicy(): string {
  const rule = (kind: string, i: number) => {
    const verbs = rand() < 0.5 ? ['read'] : rand() < 0.5 ? ['write'] : ['read', 'write'];
    const body = verbs.map((v) => `${v}: [${target()}${rand() < 0.3 ? `, ${target()}` : ''}]`).join(', ');
    return `    - { id: ${kind}-${i}, ${body} }`;
  };
  const list = (kind: string, n: number) => Array.from({ length: n }, (_, i) => rule(kind, i)).join('\n');
  return `apiVersion: helm/v1
kind: Policy
metadata: { name: diff-enforce }
spec:
  roles: [differ]
  allow:
${RUNTIME_RULE}
${list('allow', 6)}
  block:
${list('block', 3)}
---
apiVersion: helm/v1
kind: Policy
metadata: { name: diff-dry }
spec:
  roles: [differ]
  mode: dry-run
  allow:
${list('dry-allow', 2)}
  block:
${list('dry-block', 2)}
`;
}

const missing = requireBpfLsm();
if (missing) {
  t.fail(`VM suite cannot run: ${missing}`);
} else {
  let d: Daemon;
  const policyText = randomPolicy();
  const policyFile = `${T}-audit/policy.yaml`;
  t.before(async () => {
    fs.rmSync(T, { recursive: true, force: true });
    fs.mkdirSync(path.dirname(AUDIT), { recursive: true });
    for (const dir of dirs) fs.mkdirSync(dir, { recursive: true });
    for (const f of files) fs.writeFileSync(f, 'x\n');
    fs.writeFileSync(policyFile, policyText);
    d = await startHelmd({ policy: [policyFile], audit: AUDIT, socket: SOCK });
  });
  t.teardown(async () => {
    if (d?.proc.exitCode === null) await d.stop();
  });

  t.test(`kernel decisions equal the evaluator's (seed ${SEED})`, async (t) => {
    const policies = parsePolicySource(policyText, policyFile);
    // Reads of files and directories, writes of existing files (no creation: that is another hook's job).
    const ops: (FileOperation & { name: string; probeOp: string })[] = [];
    for (let i = 0; i < 160; i++) {
      const isDir = rand() < 0.25;
      const p = isDir ? pick(dirs) : pick(files);
      const verb = isDir ? 'read' : rand() < 0.6 ? 'read' : 'write';
      ops.push({ name: `op${i}`, role: 'differ', verb, path: p, isDir, probeOp: isDir ? 'list' : verb });
    }
    const r = probe(d, { role: 'differ', name: 'differ' }, ops.map((o) => `${o.name}:${o.probeOp}:${o.path}`));
    t.equal(r.raw.status, 0, `the probe ran: ${r.raw.stderr}`);

    const expected = ops.map((o) => ({ op: o, out: evaluateOperation(policies, o) }));
    const denials = expected.filter((e) => e.out.decision !== 'allow');
    const lines = await auditLines(AUDIT, (ls) => ls.filter((l) => l.agent === 'differ').length >= denials.length);
    const mine = lines.filter((l) => l.agent === 'differ');

    let mismatches = 0;
    for (const { op, out } of expected) {
      const got = r.cases.get(op.name);
      // would_deny lets the operation through: the kernel's answer is "ok" for allow and would_deny alike.
      const wantOk = out.decision !== 'deny';
      const gotOk = got === 'ok';
      if (wantOk !== gotOk) mismatches++;
      t.equal(gotOk, wantOk, `${op.verb} ${op.path}${op.isDir ? '/' : ''}: kernel ${got}, evaluator ${out.decision} (${out.policy ?? '-'}/${out.rule ?? 'default'})`);
    }
    // Each would_deny / deny is in the trail with the evaluator's rule; nothing the evaluator allows is.
    for (const { op, out } of denials) {
      const l = mine.find((x) => x.path === op.path && x.op === op.verb && x.decision === out.decision);
      t.ok(l, `${out.decision} ${op.verb} ${op.path} audited`);
      if (l) t.equal(l.rule, out.rule ?? 'default', `${op.verb} ${op.path}: the kernel names the evaluator's rule`);
    }
    const allowedPaths = new Set(expected.filter((e) => e.out.decision === 'allow').map((e) => `${e.op.verb}:${e.op.path}`));
    const deniedPaths = new Set(denials.map((e) => `${e.op.verb}:${e.op.path}`));
    const spurious = mine.filter((l) => allowedPaths.has(`${l.op}:${l.path}`) && !deniedPaths.has(`${l.op}:${l.path}`));
    t.same(spurious, [], 'no audit line for an operation the evaluator allows');
    t.equal(mismatches, 0, `no disagreement over ${ops.length} operations (replay with HELM_DIFF_SEED=${SEED})`);
  });
}
