// The compiler (daemon/policy/compile.ts) against the reference evaluator (daemon/policy/evaluate.ts).
//
// The kernel decides with one longest-prefix lookup in an LPM trie keyed by (role id, path bytes)
// (bpf/helm.bpf.c); simulateKernel() below does that lookup over compiled.pathEntries, so the
// compiled tables can be compared with POLICY.md's algorithm as the evaluator implements it.
// No test here touches the real filesystem: paths are canonicalised by the identity and stat/readdir
// are injected.

import t from 'tap';
import { Rng } from '../rng';
import * as path from 'path';
import { stringify } from 'yaml';
import { C, encodeCondList, encodeExeKey, encodeInodeKey, encodeInodeValue, encodePathKey, encodePathValue, encodeUidKey, type Verdict } from '../../daemon/kernel/layout';
import { HELM_PATH_BUF, MAX_RULE_PATH_BYTES } from '../../daemon/kernel/limits';
import { compilePolicy, compilePolicyByScan, type CompiledPolicy, type CompileOptions, type PathEntry, type StatInfo } from '../../daemon/policy/compile';
import { evaluateOperation, type FileOperation, type OperationContext } from '../../daemon/policy/evaluate';
import { parsePolicySource } from '../../daemon/policy/parse';
import { FILE_VERBS, PolicyError, type FileVerb, type Mode, type Policy } from '../../daemon/policy/types';
import { randomContext, randomWhen, resolveModel, showContext, type ProcessContext } from '../support/conditions';
import { EVAL_ROLES, RANDOM_ROLES, randomConditionalPolicyYaml, randomPath, randomPolicyYaml } from '../support/random-policies';

// ---------------------------------------------------------------------------------------------
// Helpers

/** Policies from YAML text, without touching the filesystem. */
function parse(text: string): Policy[] {
  return parsePolicySource(text, 'x.yaml', { canonicalize: (p) => p });
}

/** No filesystem at all: no inode entries. */
const NO_FS: CompileOptions = {
  stat: () => undefined,
  readdir: () => [],
};

function compile(policies: Policy[], opts: CompileOptions = {}): CompiledPolicy {
  return compilePolicy(policies, { ...NO_FS, ...opts });
}

/** A decision as both sides can report it; `policy/rule` are '-' for the default deny. */
interface Result {
  decision: 'allow' | 'deny' | 'would_deny';
  action: 'allow' | 'deny';
  mode: Mode;
  reason: string;
  policy: string;
  rule: string;
}

const show = (r: Result): string => `${r.decision} (${r.action}, ${r.mode}, ${r.reason}) by ${r.policy}/${r.rule}`;

const OP_INDEX: Record<FileVerb, number> = { read: C.HELM_OP_READ, write: C.HELM_OP_WRITE, exec: C.HELM_OP_EXEC };
const modeName = (m: number): Mode => (m === C.HELM_MODE_DRY_RUN ? 'dry-run' : 'enforce');
const decisionOf = (action: 'allow' | 'deny', mode: Mode): Result['decision'] =>
  action === 'allow' ? 'allow' : mode === 'dry-run' ? 'would_deny' : 'deny';

/** A file operation and what is known of the process doing it (for exe, label and uid conditions). */
type FileOp = FileOperation & OperationContext;

function fromEvaluator(policies: Policy[], op: FileOp): Result {
  const o = evaluateOperation(policies, op);
  return { decision: o.decision, action: o.action, mode: o.mode, reason: o.reason, policy: o.policy ?? '-', rule: o.rule ?? '-' };
}

/** The bytes the kernel looks up: "<path>\0", or "<dir>/\0" for a directory other than "/". */
function lookupKey(p: string, isDir: boolean): Buffer | undefined {
  const bytes = Buffer.from(p, 'utf8');
  const n = bytes.length + 1; // bpf_d_path counts the NUL
  if (n > HELM_PATH_BUF) return undefined;
  if (isDir && n > 2) {
    if (n >= HELM_PATH_BUF) return undefined;
    return Buffer.concat([bytes, Buffer.from('/\0', 'latin1')]);
  }
  return Buffer.concat([bytes, Buffer.from('\0', 'latin1')]);
}

/** Names for a verdict's ids, checking that they are consistent. */
function names(compiled: CompiledPolicy, v: Verdict): { policy: string; rule: string } {
  const policy = compiled.policies[v.policyId - 1];
  const rule = compiled.rules[v.ruleId - 1];
  if (!policy || !rule) throw new Error(`verdict ids ${v.policyId}/${v.ruleId} name no policy/rule`);
  if (rule.policy !== policy.name) throw new Error(`rule id ${v.ruleId} belongs to ${rule.policy}, policy id ${v.policyId} is ${policy.name}`);
  return { policy: policy.name, rule: rule.rule };
}

function ruleResult(compiled: CompiledPolicy, v: Verdict, reason: string): Result {
  const action = v.action === C.HELM_ACTION_ALLOW ? 'allow' : 'deny';
  const mode = modeName(v.mode);
  return { decision: decisionOf(action, mode), action, mode, reason, ...names(compiled, v) };
}

/** The longest stored entry of this role that is a prefix of `key`, as BPF_MAP_TYPE_LPM_TRIE finds it. */
function longestPrefix(compiled: CompiledPolicy, roleId: number | undefined, key: Buffer): PathEntry | undefined {
  let best: PathEntry | undefined;
  for (const e of compiled.pathEntries) {
    if (e.roleId !== roleId || e.data.length > key.length) continue;
    if (!key.subarray(0, e.data.length).equals(e.data)) continue;
    if (!best || e.data.length > best.data.length) best = e;
  }
  return best;
}

/**
 * bpf/helm.bpf.c's path decision for one verb (no agent or global dry-run): the lookup, then the
 * verdict's condition list for the acting process (its labels as helmd writes them at attach).
 */
function simulateKernel(compiled: CompiledPolicy, op: FileOp): Result {
  const key = lookupKey(op.path, op.isDir ?? false);
  if (!key) return { decision: 'deny', action: 'deny', mode: 'enforce', reason: 'path-error', policy: '-', rule: '-' };
  const entry = longestPrefix(compiled, compiled.roles.get(op.role), key);
  if (!entry) return { decision: 'deny', action: 'deny', mode: 'enforce', reason: 'no-policy', policy: '-', rule: '-' };
  const v = resolveModel(compiled, entry.verdicts[OP_INDEX[op.verb]], op);
  if (v.action === C.HELM_ACTION_NONE) {
    const mode = modeName(entry.defaultMode);
    return { decision: decisionOf('deny', mode), action: 'deny', mode, reason: 'default', policy: '-', rule: '-' };
  }
  return ruleResult(compiled, v, 'rule');
}

/** A tiny in-memory filesystem for stat/readdir: path → identity. Directories are listed by their children. */
interface FakeNode {
  dev: bigint; // userspace st_dev encoding
  ino: bigint;
  nlink?: bigint;
  dir?: boolean;
}

/** glibc's makedev(): the userspace st_dev encoding. */
function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major);
  const mi = BigInt(minor);
  return ((ma & 0xfffn) << 8n) | ((ma & ~0xfffn) << 32n) | (mi & 0xffn) | ((mi & ~0xffn) << 12n);
}

function fakeFs(tree: Record<string, FakeNode>): Required<Pick<CompileOptions, 'stat' | 'readdir'>> & { tree: Record<string, FakeNode> } {
  return {
    tree,
    stat(p: string): StatInfo | undefined {
      const wantDir = p.length > 1 && p.endsWith('/');
      const n = tree[wantDir ? p.slice(0, -1) : p];
      if (!n || (wantDir && !n.dir)) return undefined; // like stat("file/"): ENOTDIR
      return { dev: n.dev, ino: n.ino, nlink: n.nlink ?? (n.dir ? 2n : 1n), isDirectory: !!n.dir, isFile: !n.dir };
    },
    readdir(p: string): string[] {
      const dir = p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p;
      return Object.keys(tree)
        .filter((q) => q !== '/' && path.posix.dirname(q) === dir)
        .map((q) => path.posix.basename(q))
        .sort();
    },
  };
}

/**
 * The kernel's whole decision for an object that exists in a fake filesystem: the path lookup,
 * then (for an allowed path) the inode table, for the object and, through subtree entries, for
 * the directories above it on the same filesystem (inode_block() in bpf/helm.bpf.c).
 */
function simulateKernelWithInodes(compiled: CompiledPolicy, fs: ReturnType<typeof fakeFs>, op: FileOp): Result {
  const byPath = simulateKernel(compiled, op);
  if (byPath.action !== 'allow') return byPath;
  const roleId = compiled.roles.get(op.role);
  const self = fs.tree[op.path];
  if (!self) throw new Error(`${op.path} is not in the fake filesystem`);
  const dev = self.dev;
  let p = op.path;
  for (let depth = 0; depth < C.HELM_MAX_ANCESTORS; depth++) {
    const node = fs.tree[p];
    if (!node || node.dev !== dev) break; // above the root of the object's filesystem
    const e = compiled.inodeEntries.find((x) => x.roleId === roleId && x.dev === kernelDevOf(dev) && x.ino === node.ino);
    const v = depth === 0 ? e?.self[OP_INDEX[op.verb]] : e?.below[OP_INDEX[op.verb]];
    if (e && v && v.action === C.HELM_ACTION_DENY) return ruleResult(compiled, v, 'inode-rule');
    if (p === '/') break;
    p = path.posix.dirname(p);
  }
  return byPath;
}

/** Kernel dev_t (major << 20 | minor), computed independently of layout.ts's kernelDev. */
function kernelDevOf(stDev: bigint): number {
  const major = Number(((stDev >> 8n) & 0xfffn) | ((stDev >> 32n) & 0xfffff000n));
  const minor = Number((stDev & 0xffn) | ((stDev >> 12n) & 0xfff00n));
  return major * 2 ** 20 + minor;
}

/** Every (role, verb, path, dir?) combination, compared; returns the disagreements (at most `max`). */
function differences(
  compiled: CompiledPolicy,
  policies: Policy[],
  ops: FileOp[],
  kernel: (op: FileOp) => Result = (op) => simulateKernel(compiled, op),
  max = 10,
): string[] {
  const out: string[] = [];
  for (const op of ops) {
    const k = kernel(op);
    const e = fromEvaluator(policies, op);
    if (show(k) !== show(e)) {
      const ctx = op.exe !== undefined || op.uid !== undefined || op.labels !== undefined ? ` [${showContext(op)}]` : '';
      out.push(`${op.role} ${op.verb} ${op.path}${op.isDir ? ' (dir)' : ''}${ctx}: kernel ${show(k)}, evaluator ${show(e)}`);
      if (out.length >= max) break;
    }
  }
  return out;
}

function allOps(roles: string[], paths: string[]): FileOperation[] {
  const ops: FileOperation[] = [];
  for (const role of roles) {
    for (const verb of FILE_VERBS) {
      for (const p of paths) {
        ops.push({ role, verb, path: p, isDir: false });
        ops.push({ role, verb, path: p, isDir: true });
      }
    }
  }
  return ops;
}

/** Byte-exact image of what would be written to the kernel maps, plus the id tables. */
function image(c: CompiledPolicy): string[] {
  return [
    ...[...c.roles].map(([name, id]) => `role ${name}=${id}`),
    ...c.policies.map((p, i) => `policy ${i + 1}=${p.name}:${p.mode}`),
    ...c.rules.map((r, i) => `rule ${i + 1}=${r.policy}/${r.rule}:${r.kind}`),
    ...c.pathEntries.map((e) => `path ${encodePathKey(e.roleId, e.data).toString('hex')} ${encodePathValue(e.verdicts, e.defaultMode).toString('hex')}`),
    ...c.inodeEntries.map((e) => `inode ${encodeInodeKey(e.roleId, e.dev, e.ino).toString('hex')} ${encodeInodeValue(e.self, e.below).toString('hex')}`),
    ...c.condLists.map((l) => `list ${l.listId} ${encodeCondList(l.entries).toString('hex')}`),
    ...c.conds.flatMap((k) => [...k.exes.map((x) => `exe ${encodeExeKey(k.condId, x).toString('hex')}`), ...k.uids.map((u) => `uid ${encodeUidKey(k.condId, u).toString('hex')}`)]),
    ...[...c.labelIds].map(([pair, id]) => `label ${pair}=${id}`),
  ];
}


// ---------------------------------------------------------------------------------------------
// (a) Differential: simulated kernel lookup vs the evaluator

const OFFICE = `
apiVersion: helm/v1
kind: Policy
metadata: { name: base }
spec:
  roles: [dev, ops]
  allow:
    - id: system
      read: [/usr/, /etc/]
      exec: [/usr/bin/]
    - id: work
      read: [/srv/work/]
      write: [/srv/work/out/, /srv/work/log]
  block:
    - id: secrets
      read: [/etc/shadow, /srv/work/out/keys/]
      write: [/etc/]
  contextual:
    - id: ops-only
      read: [/srv/work/ops/]
      write: [/srv/work/ops/]
      when: { role: ops }
---
apiVersion: helm/v1
kind: Policy
metadata: { name: audit-trial }
spec:
  roles: ["*"]
  mode: dry-run
  allow:
    - read: [/var/log/, /srv/]
  block:
    - id: no-home
      read: [/home/]
      write: [/srv/work/out/tmp, /srv/work/log]
  contextual:
    - id: ops-logs
      exec: [/srv/work/bin/]
      when: { role: [ops, guest] }
---
apiVersion: helm/v1
kind: Policy
metadata: { name: analyst }
spec:
  roles: [analyst]
  mode: dry-run
  allow:
    - id: data
      read: [/data/, /data2, /]
      write: [/data/scratch/]
  block:
    - id: pii
      read: [/data/pii/, /data/pii]
  contextual:
    - id: reports
      write: [/data/reports/]
      when: { role: [analyst] }
`;

const OFFICE_PATHS = [
  '/', '/usr', '/usr/bin', '/usr/bin/python3', '/usrx', '/etc', '/etc/shadow', '/etc/shadow2', '/etc/passwd',
  '/srv', '/srv/work', '/srv/work/a', '/srv/work/out', '/srv/work/outside', '/srv/work/out/x', '/srv/work/out/keys',
  '/srv/work/out/keys/k', '/srv/work/out/keysx', '/srv/work/out/tmp', '/srv/work/out/tmp/y', '/srv/work/log', '/srv/work/logs',
  '/srv/work/log/z', '/srv/work/ops', '/srv/work/ops/run', '/srv/work/opsx', '/srv/work/bin/tool', '/var/log/syslog', '/home/u/.ssh/id',
  '/home', '/data', '/data2', '/data2x', '/data/pii', '/data/pii/p', '/data/piix', '/data/scratch/s', '/data/reports/r', '/data/reports',
];

t.test('office policies: every role, verb and path agrees with the evaluator', async (t) => {
  const policies = parse(OFFICE);
  const roles = ['dev', 'ops', 'analyst', 'guest'];
  const compiled = compile(policies, { extraRoles: roles });
  const ops = allOps(roles, OFFICE_PATHS);
  t.same(differences(compiled, policies, ops), [], `${ops.length} operations`);

  // Guard against a vacuous comparison: every kind of outcome occurs.
  const seen = new Set(ops.map((op) => simulateKernel(compiled, op)).map((r) => `${r.decision}/${r.reason}`));
  t.same([...seen].sort(), ['allow/rule', 'deny/default', 'deny/rule', 'would_deny/default', 'would_deny/rule']);
});

t.test('random policies: simulated kernel equals the evaluator (seeded)', async (t) => {
  const rng = new Rng(0x5eed);
  let compared = 0;
  const outcomes = new Set<string>();
  for (let set = 0; set < 80; set++) {
    const count = 1 + rng.int(4);
    const names = rng.shuffle(['p0', 'p1', 'p2', 'p3', 'p4']).slice(0, count);
    const text = names.map((n) => randomPolicyYaml(rng, n)).join('---\n');
    const policies = parse(text);
    // The compiler gets the policies in another order than the evaluator: it must not matter.
    const compiled = compile(rng.shuffle(policies), { extraRoles: EVAL_ROLES });
    const ops: FileOperation[] = [];
    for (let i = 0; i < 400; i++) {
      ops.push({ role: rng.pick(EVAL_ROLES), verb: rng.pick(FILE_VERBS), path: randomPath(rng, 4), isDir: rng.chance(0.4) });
    }
    const diffs = differences(compiled, policies, ops);
    if (diffs.length) {
      t.same(diffs, [], `policy set ${set}:\n${text}`);
      return;
    }
    compared += ops.length;
    for (const op of ops) outcomes.add(simulateKernel(compiled, op).decision);
  }
  t.equal(compared, 80 * 400, `${compared} random operations agree`);
  t.same([...outcomes].sort(), ['allow', 'deny', 'would_deny'], 'all three decisions occurred');
});

t.test('random policies with exe, label and uid conditions: simulated kernel equals the evaluator (seeded)', async (t) => {
  const seed = Number(process.env.HELM_SEED ?? 0xc0d5);
  const rng = new Rng(seed);
  let compared = 0;
  let conditional = 0;
  const outcomes = new Set<string>();
  const listLengths = new Set<number>();
  for (let set = 0; set < 120; set++) {
    const names = rng.shuffle(['p0', 'p1', 'p2', 'p3']).slice(0, 1 + rng.int(4));
    const text = names.map((n) => randomConditionalPolicyYaml(rng, n)).join('---\n');
    const policies = parse(text);
    const compiled = compile(rng.shuffle(policies), { extraRoles: EVAL_ROLES });
    for (const l of compiled.condLists) listLengths.add(l.entries.length);
    const ops: FileOp[] = [];
    for (let i = 0; i < 300; i++) {
      ops.push({ role: rng.pick(EVAL_ROLES), verb: rng.pick(FILE_VERBS), path: randomPath(rng, 4), isDir: rng.chance(0.4), ...randomContext(rng) });
    }
    const diffs = differences(compiled, policies, ops);
    if (diffs.length) {
      t.same(diffs, [], `seed ${seed}, policy set ${set}:\n${text}`);
      return;
    }
    compared += ops.length;
    for (const op of ops) {
      const r = simulateKernel(compiled, op);
      outcomes.add(`${r.decision}/${compiled.rules.find((x) => x.rule === r.rule)?.kind ?? r.reason}`);
      const key = lookupKey(op.path, op.isDir ?? false);
      const entry = key && longestPrefix(compiled, compiled.roles.get(op.role), key);
      if (entry && entry.verdicts[OP_INDEX[op.verb]].condList !== 0) conditional++;
    }
  }
  t.equal(compared, 120 * 300, `${compared} random operations agree (replay with HELM_SEED=${seed})`);
  t.ok(conditional > 2000, `${conditional} of them went through a condition list`);
  t.ok([...listLengths].some((n) => n >= 3), `lists of up to ${Math.max(...listLengths)} rules`);
  for (const o of ['allow/contextual', 'deny/contextual', 'would_deny/contextual', 'allow/allow', 'deny/block', 'deny/default']) t.ok(outcomes.has(o), `${o} occurred`);
});

/** Names whose bytes sort around '/' (0x2f): '-' and '.' below it, '0' above, and a non-ASCII one. */
const INDEX_SEGMENTS = ['a', 'ab', 'a-b', 'a.b', 'a0', 'é', 'x y'];

function indexTarget(rng: Rng): string {
  const depth = rng.int(5);
  const p = '/' + Array.from({ length: depth }, () => rng.pick(INDEX_SEGMENTS)).join('/');
  if (p === '/') return '/';
  return rng.chance(0.5) ? `${p}/` : p;
}

t.test('the indexed compiler gives byte-identical tables to the scan of every rule (seeded)', async (t) => {
  const rng = new Rng(0x1dea);
  const kinds = new Set<string>();
  let entries = 0;
  let lists = 0;
  let refused = 0;
  for (let set = 0; set < 150; set++) {
    const docs = Array.from({ length: 1 + rng.int(3) }, (_, d) => {
      const roles = rng.chance(0.25) ? ['*'] : rng.subset(RANDOM_ROLES);
      const spec: Record<string, unknown> = { roles, mode: rng.chance(0.3) ? 'dry-run' : 'enforce' };
      for (const kind of ['allow', 'block', 'contextual'] as const) {
        const n = rng.int(kind === 'allow' ? 25 : 10);
        if (n === 0) continue;
        kinds.add(kind);
        spec[kind] = Array.from({ length: n }, () => {
          const rule: Record<string, unknown> = {};
          for (const verb of rng.subset(FILE_VERBS)) rule[verb] = Array.from({ length: 1 + rng.int(3) }, () => indexTarget(rng));
          // Conditions the kernel checks, on a few rules (more than 8 on one target is an error).
          if (kind === 'contextual') rule.when = rng.chance(0.7) ? { role: rng.subset(roles[0] === '*' ? EVAL_ROLES : roles) } : randomWhen(rng, roles[0] === '*' ? EVAL_ROLES : roles);
          return rule;
        });
      }
      return stringify({ apiVersion: 'helm/v1', kind: 'Policy', metadata: { name: `p${d}` }, spec });
    });
    const text = docs.join('---\n');
    const policies = parse(text);
    // Both compile, or both refuse with the same errors.
    const attempt = (f: () => CompiledPolicy): { image: string[]; lists: number } => {
      try {
        const c = f();
        return { image: image(c), lists: c.condLists.length };
      } catch (e) {
        if (!(e instanceof PolicyError)) throw e;
        return { image: [`error ${e.message}`], lists: 0 };
      }
    };
    const indexed = attempt(() => compile(policies, { extraRoles: EVAL_ROLES }));
    const scanned = attempt(() => compilePolicyByScan(policies, { ...NO_FS, extraRoles: EVAL_ROLES }));
    if (indexed.image.join('\n') !== scanned.image.join('\n')) {
      t.same(indexed.image, scanned.image, `policy set ${set}:\n${text}`);
      return;
    }
    if (indexed.image[0].startsWith('error ')) refused++;
    entries += indexed.image.filter((l) => l.startsWith('path ')).length;
    lists += indexed.lists;
  }
  t.same([...kinds].sort(), ['allow', 'block', 'contextual'], 'every kind of rule occurred');
  t.ok(entries > 150 * 20, `${entries} path entries compared`);
  t.ok(lists > 50, `${lists} condition lists compared`);
  t.ok(refused < 15, `${refused} sets refused alike (too many conditional rules on one target)`);
});

// ---------------------------------------------------------------------------------------------
// (b) Determinism

t.test('compiling is deterministic and independent of policy order', async (t) => {
  const policies = parse(OFFICE);
  const opts = { extraRoles: ['guest', 'dev'] };
  const first = image(compile(policies, opts));
  t.ok(first.some((l) => l.startsWith('path ')) && first.some((l) => l.startsWith('rule ')), 'the image is not empty');
  t.same(image(compile(policies, opts)), first, 'the same input twice');
  t.same(image(compile([...policies].reverse(), opts)), first, 'policies in reverse order');
  t.same(image(compile([policies[1], policies[2], policies[0]], { extraRoles: ['dev', 'guest'] })), first, 'rotated, extra roles reordered');

  // The same documents in another order in the source file.
  const docs = OFFICE.split(/^---$/m);
  t.same(image(compile(parse([docs[2], docs[0], docs[1]].join('---\n')), opts)), first, 'documents reordered in the file');

  // Policy ids follow names, rule ids the policies' rules in order.
  const c = compile(policies, opts);
  t.same(c.policies.map((p) => p.name), ['analyst', 'audit-trial', 'base']);
  t.same(c.rules.slice(0, 5).map((r) => `${r.policy}/${r.rule}`), ['analyst/data', 'analyst/pii', 'analyst/reports', 'audit-trial/allow[0]', 'audit-trial/no-home']);

  // No key is stored twice (the LPM trie would keep only one of them), and every key fits.
  const keys = c.pathEntries.map((e) => `${e.roleId}:${e.data.toString('hex')}`);
  t.equal(new Set(keys).size, keys.length, 'path keys are unique');
  t.ok(c.pathEntries.every((e) => e.data.length <= HELM_PATH_BUF), 'every key fits the kernel buffer');
});

t.test('role ids are stable across generations', async (t) => {
  const policies = parse(OFFICE);
  const gen1 = compile(policies);
  t.same([...gen1.roles], [['analyst', 1], ['dev', 2], ['ops', 3]], 'named roles, in name order');
  // A later generation with a new role (an agent attached with it) keeps the old ids.
  const gen2 = compile(policies, { roleIds: gen1.roles, extraRoles: ['aardvark'] });
  t.same([...gen2.roles], [['analyst', 1], ['dev', 2], ['ops', 3], ['aardvark', 4]]);
  t.ok(gen2.pathEntries.some((e) => e.roleId === 4), 'the new role gets entries ("*" policy governs it)');
});

// ---------------------------------------------------------------------------------------------
// (c) Precedence, from POLICY.md

/** Decides `op` on both sides, checks they agree, and returns the result. */
function decide(t: tap.Test, policies: Policy[], op: FileOp, extraRoles: string[] = []): Result {
  const k = simulateKernel(compile(policies, { extraRoles }), op);
  t.equal(show(k), show(fromEvaluator(policies, op)), `kernel and evaluator agree on ${op.role} ${op.verb} ${op.path}`);
  return k;
}

const doc = (name: string, spec: string): string => `apiVersion: helm/v1\nkind: Policy\nmetadata: { name: ${name} }\nspec:\n${spec}\n---\n`;

t.test('block beats allow at a deeper path', async (t) => {
  const p = parse(doc('p', '  roles: [r]\n  allow: [{ id: all, read: [/a/] }]\n  block: [{ id: deep, read: [/a/b/] }]'));
  t.hasStrict(decide(t, p, { role: 'r', verb: 'read', path: '/a/b/c' }), { decision: 'deny', rule: 'deep' });
  t.hasStrict(decide(t, p, { role: 'r', verb: 'read', path: '/a/b', isDir: true }), { decision: 'deny', rule: 'deep' }, 'the directory itself');
  t.hasStrict(decide(t, p, { role: 'r', verb: 'read', path: '/a/b' }), { decision: 'allow', rule: 'all' }, 'a file named like the directory');
  t.hasStrict(decide(t, p, { role: 'r', verb: 'read', path: '/a/bc' }), { decision: 'allow', rule: 'all' }, '/a/bc is not below /a/b/');
});

t.test('block beats allow at a shallower path', async (t) => {
  const p = parse(doc('p', '  roles: [r]\n  allow: [{ id: deep, read: [/a/b/c, /a/b/d/] }]\n  block: [{ id: top, read: [/a/] }]'));
  t.hasStrict(decide(t, p, { role: 'r', verb: 'read', path: '/a/b/c' }), { decision: 'deny', rule: 'top' });
  t.hasStrict(decide(t, p, { role: 'r', verb: 'read', path: '/a/b/d/e' }), { decision: 'deny', rule: 'top' });
  t.hasStrict(decide(t, p, { role: 'r', verb: 'read', path: '/ab/c' }), { decision: 'deny', reason: 'default' }, '/ab is not below /a/');
});

t.test('block in another policy, and block in dry-run', async (t) => {
  const p = parse(
    doc('a-allow', '  roles: [r]\n  allow: [{ id: ok, read: [/x/], write: [/x/] }]') +
      doc('b-block', '  roles: [r]\n  mode: dry-run\n  block: [{ id: trial, read: [/x/y], write: [/x/] }]') +
      doc('c-block', '  roles: [r]\n  block: [{ id: hard, write: [/x/z/] }]'),
  );
  t.hasStrict(decide(t, p, { role: 'r', verb: 'read', path: '/x/y' }), { decision: 'would_deny', policy: 'b-block', rule: 'trial' }, "a dry-run block follows its policy's mode");
  t.hasStrict(decide(t, p, { role: 'r', verb: 'write', path: '/x/z/1' }), { decision: 'deny', policy: 'c-block', rule: 'hard' }, 'enforce is reported before dry-run');
  t.hasStrict(decide(t, p, { role: 'r', verb: 'read', path: '/x/w' }), { decision: 'allow', rule: 'ok' });
});

t.test('contextual rules override allow rules', async (t) => {
  const p = parse(
    doc('p', '  roles: [r, q]\n  allow: [{ id: all, read: [/a/], write: [/a/] }]\n  contextual: [{ id: q-only, read: [/a/s/], when: { role: q } }]') +
      doc('z', '  roles: [q]\n  mode: dry-run\n  contextual: [{ id: late, write: [/a/], when: { role: [q] } }]'),
  );
  t.hasStrict(decide(t, p, { role: 'q', verb: 'read', path: '/a/s/x' }), { decision: 'allow', rule: 'q-only' }, 'when holds: allow by the contextual rule');
  t.hasStrict(decide(t, p, { role: 'r', verb: 'read', path: '/a/s/x' }), { decision: 'deny', rule: 'q-only' }, 'when fails: deny, despite the allow rule');
  t.hasStrict(decide(t, p, { role: 'r', verb: 'read', path: '/a/t' }), { decision: 'allow', rule: 'all' }, 'no contextual rule matches: the allow rule');
  t.hasStrict(decide(t, p, { role: 'r', verb: 'write', path: '/a/t' }), { decision: 'allow', rule: 'all' }, 'policy z does not govern r');
  t.hasStrict(decide(t, p, { role: 'q', verb: 'write', path: '/a/t' }), { decision: 'allow', policy: 'z', rule: 'late', mode: 'enforce' }, 'an allow is never dry-run');
});

t.test('block beats contextual', async (t) => {
  const p = parse(doc('p', '  roles: [r]\n  block: [{ id: no, exec: [/bin/sh] }]\n  contextual: [{ id: yes, exec: [/bin/], when: { role: r } }]'));
  t.hasStrict(decide(t, p, { role: 'r', verb: 'exec', path: '/bin/sh' }), { decision: 'deny', rule: 'no' });
  t.hasStrict(decide(t, p, { role: 'r', verb: 'exec', path: '/bin/ls' }), { decision: 'allow', rule: 'yes' });
});

t.test('default deny, and verbs are independent', async (t) => {
  const p = parse(doc('p', '  roles: [r]\n  allow: [{ id: ro, read: [/a/] }]'));
  t.hasStrict(decide(t, p, { role: 'r', verb: 'read', path: '/b' }), { decision: 'deny', reason: 'default', rule: '-' });
  t.hasStrict(decide(t, p, { role: 'r', verb: 'write', path: '/a/x' }), { decision: 'deny', reason: 'default' }, 'read does not allow write');
  t.hasStrict(decide(t, p, { role: 'r', verb: 'read', path: '/', isDir: true }), { decision: 'deny', reason: 'default' }, 'the root directory');
});

t.test('a role no policy names has no entries: no-policy deny', async (t) => {
  const p = parse(doc('p', '  roles: [r]\n  allow: [{ read: [/] }]'));
  const c = compile(p, { extraRoles: ['lonely'] });
  const id = c.roles.get('lonely');
  t.type(id, 'number', 'the role has an id');
  t.same(c.pathEntries.filter((e) => e.roleId === id), [], 'but no path entries');
  t.ok(c.pathEntries.some((e) => e.roleId === c.roles.get('r')), 'the governed role has entries');
  t.hasStrict(decide(t, p, { role: 'lonely', verb: 'read', path: '/etc/passwd' }, ['lonely']), { decision: 'deny', reason: 'no-policy', mode: 'enforce' });

  const empty = parse(doc('p', '  roles: [r]'));
  t.hasStrict(decide(t, empty, { role: 'r', verb: 'read', path: '/x' }), { decision: 'deny', reason: 'default' }, 'a governing policy without rules: default deny');
});

t.test('the default deny is dry-run only when every governing policy is', async (t) => {
  const p = parse(
    doc('trial', '  roles: [a, b]\n  mode: dry-run\n  allow: [{ read: [/t/] }]') +
      doc('strict', '  roles: [b]\n  allow: [{ read: [/s/] }]') +
      doc('all-trial', '  roles: ["*"]\n  mode: dry-run\n  allow: [{ read: [/u/] }]'),
  );
  const c = compile(p, { extraRoles: ['c'] });
  const defaults = (role: string) => [...new Set(c.pathEntries.filter((e) => e.roleId === c.roles.get(role)).map((e) => e.defaultMode))];
  t.same(defaults('a'), [C.HELM_MODE_DRY_RUN], 'a: governed by dry-run policies only');
  t.same(defaults('b'), [C.HELM_MODE_ENFORCE], 'b: one governing policy enforces');
  t.same(defaults('c'), [C.HELM_MODE_DRY_RUN], 'c: governed by the "*" dry-run policy only');
  t.hasStrict(decide(t, p, { role: 'a', verb: 'read', path: '/x' }), { decision: 'would_deny', reason: 'default' });
  t.hasStrict(decide(t, p, { role: 'b', verb: 'read', path: '/x' }), { decision: 'deny', reason: 'default' });
  t.hasStrict(decide(t, p, { role: 'b', verb: 'read', path: '/t/x' }), { decision: 'allow' });
});

// ---------------------------------------------------------------------------------------------
// (d) What the compiler refuses

function compileErrors(policies: Policy[]): string[] {
  try {
    compile(policies);
  } catch (e) {
    if (e instanceof PolicyError) return e.message.split('\n');
    throw e;
  }
  return [];
}

t.test('conditions on exe, label and uid: the kernel tries them in report order', async (t) => {
  const p = parse(
    doc(
      'p-enforce',
      '  roles: [r, q]\n  allow: [{ id: all, read: [/a/] }]\n  contextual:\n' +
        '    - { id: by-exe, read: [/a/s/], when: { exe: [/usr/bin/cat, /opt/t/] } }\n' +
        '    - { id: by-uid, read: [/a/s/], when: { uid: [1000, 1001] } }\n' +
        '    - { id: q-only, read: [/a/s/], when: { role: q } }\n' +
        '    - { id: q-and-exe, read: [/a/s/], when: { role: q, exe: /usr/bin/cat } }',
    ) + doc('q-dry', '  roles: [r]\n  mode: dry-run\n  contextual:\n    - { id: dry-label, read: [/a/s/x], when: { label: { team: a, env: prod } } }'),
  );
  const c = compile(p);
  const r = (path: string, ctx: ProcessContext, role = 'r') => decide(t, p, { role, verb: 'read', path, ...ctx });
  t.hasStrict(r('/a/s/y', { exe: '/usr/bin/cat', uid: 0 }), { decision: 'allow', rule: 'by-exe' }, 'an exact executable');
  t.hasStrict(r('/a/s/y', { exe: '/opt/t/bin/x', uid: 0 }), { decision: 'allow', rule: 'by-exe' }, 'an executable under a directory');
  t.hasStrict(r('/a/s/y', { exe: '/opt/tx', uid: 1001 }), { decision: 'allow', rule: 'by-uid' }, 'the next rule in report order');
  t.hasStrict(r('/a/s/y', { exe: '/usr/bin/catx', uid: 0 }), { decision: 'deny', rule: 'by-exe', mode: 'enforce' }, 'none holds: the contextual deny');
  t.hasStrict(r('/a/s/y', { uid: 0 }), { decision: 'deny', rule: 'by-exe' }, 'an executable that cannot be named holds no exe condition');
  t.hasStrict(r('/a/t', { uid: 0 }), { decision: 'allow', rule: 'all' }, 'no contextual rule covers it: the allow rule');
  t.hasStrict(r('/a/s/y', { uid: 0 }, 'q'), { decision: 'allow', rule: 'q-only' }, 'role q: a rule that holds whatever the process');
  t.hasStrict(r('/a/s/y', { exe: '/usr/bin/cat', uid: 0 }, 'q'), { decision: 'allow', rule: 'by-exe' }, 'but an earlier rule whose condition holds is the one reported');
  t.hasStrict(r('/a/s/x', { uid: 0, labels: { team: 'a', env: 'prod', other: 'x' } }), { decision: 'allow', policy: 'q-dry', rule: 'dry-label', mode: 'enforce' }, 'labels: every pair given');
  t.hasStrict(r('/a/s/x', { uid: 0, labels: { team: 'a' } }), { decision: 'deny', policy: 'p-enforce', rule: 'by-exe' }, 'one pair missing');

  // What the kernel gets: for r, a list of the three conditional rules (the dry-run policy's last)
  // and the contextual deny; for q, the two before q-only, and q-only's allow.
  const verdictAt = (role: string, data: string) => c.pathEntries.find((e) => e.roleId === c.roles.get(role) && e.data.toString('latin1') === data)!.verdicts[C.HELM_OP_READ];
  const listOf = (v: Verdict) => c.condLists.find((l) => l.listId === v.condList)!.entries.map((e) => names(c, e.verdict).rule);
  const forR = verdictAt('r', '/a/s/x\0');
  t.same([forR.action, names(c, forR).rule, listOf(forR)], [C.HELM_ACTION_DENY, 'by-exe', ['by-exe', 'by-uid', 'dry-label']]);
  const forQ = verdictAt('q', '/a/s/');
  t.same([forQ.action, names(c, forQ).rule, listOf(forQ)], [C.HELM_ACTION_ALLOW, 'q-only', ['by-exe', 'by-uid']], 'q-and-exe comes after q-only: never needed');
  t.equal(verdictAt('r', '/a/').condList, 0, 'no contextual rule: no list');
  t.same(
    c.conds.map((k) => [k.exes.map((b) => b.toString('latin1')), k.uids, k.labelBits, k.flags]),
    [
      [['/opt/t/', '/usr/bin/cat\0'], [], 0n, C.HELM_COND_EXE],
      [[], [1000, 1001], 0n, C.HELM_COND_UID],
      [[], [], 0b11n, 0],
    ],
    'an exact executable is stored NUL-terminated, a directory with its "/"; labels are bits',
  );
  t.same([...c.labelIds], [[JSON.stringify(['team', 'a']), 1], [JSON.stringify(['env', 'prod']), 2]]);
});

t.test('more conditional contextual rules on one target than the kernel tries is a located error', async (t) => {
  const rules = (n: number, first = '') => first + Array.from({ length: n }, (_, i) => `    - { id: c${i}, read: [/x/], when: { uid: ${i} } }\n`).join('');
  const errors = compileErrors(parse(doc('many', `  roles: [r]\n  contextual:\n${rules(10)}`)));
  t.same(errors, [`x.yaml:${7 + 8}:36: for role "r", 10 contextual rules with exe, label or uid conditions cover the same target (c0, c1, c2, c3, c4, c5, c6, c7, c8, c9); the kernel tries at most 8 for one target`], 'at the first rule that does not fit');
  t.same(compileErrors(parse(doc('eight', `  roles: [r]\n  contextual:\n${rules(8)}`))), [], '8 fit');
  // Only the rules before one that holds whatever the process are tried.
  const early = parse(doc('early', `  roles: [r]\n  contextual:\n${rules(10, '    - { id: first, read: [/x/], when: { role: r } }\n')}`));
  t.same(compileErrors(early), [], 'a role-only rule first: no list at all');
  t.hasStrict(decide(t, early, { role: 'r', verb: 'read', path: '/x/y', uid: 3 }), { decision: 'allow', rule: 'first' });
  // Another role, for which the rules' role conditions fail, needs no list either.
  const byRole = parse(doc('byrole', `  roles: [r, s]\n  contextual:\n${Array.from({ length: 10 }, (_, i) => `    - { id: c${i}, read: [/x/], when: { role: s, uid: ${i} } }\n`).join('')}`));
  const e2 = compileErrors(byRole);
  t.equal(e2.length, 1, e2.join('\n'));
  t.match(e2[0], /for role "s", 10 contextual rules/, 'only role s has too many');
});

t.test('label pairs: stable ids, only added, at most 64', async (t) => {
  const withLabels = (pairs: [string, string][]) =>
    parse(doc('l', `  roles: [r]\n  contextual:\n${pairs.map(([k, v], i) => `    - { id: c${i}, read: [/x${i}], when: { label: { ${k}: "${v}" } } }\n`).join('')}`));
  const gen1 = compile(withLabels([['team', 'a'], ['env', 'prod']]));
  t.same([...gen1.labelIds.values()], [1, 2]);
  const gen2 = compile(withLabels([['tier', 'x'], ['team', 'a']]), { labelIds: gen1.labelIds });
  t.same([...gen2.labelIds].map(([k, v]) => `${JSON.parse(k).join('=')}:${v}`), ['team=a:1', 'env=prod:2', 'tier=x:3'], 'old pairs keep their ids (and stay known); a new one gets the next');
  t.same([...gen1.labelIds.values()], [1, 2], "the previous generation's map is not changed");
  const c = gen2.conds.find((k) => k.labelBits === 0b100n);
  t.ok(c, 'tier=x is bit 2');

  const many = Array.from({ length: 65 }, (_, i) => ['k', `v${i}`] as [string, string]);
  const errors = compileErrors(withLabels(many));
  t.equal(errors.length, 1, errors.join('\n'));
  t.match(errors[0], /^x\.yaml:71:\d+: label k: v64 would be the 65th distinct label pair in conditions; the kernel tells at most 64 apart/);
  t.same(compileErrors(withLabels(many.slice(0, 64))), [], '64 fit');
});

/** A path of exactly `bytes` UTF-8 bytes under /t/ (with a two-byte character in it). */
function pathOfBytes(bytes: number): string {
  const p = '/t/é' + 'x'.repeat(bytes - 5);
  if (Buffer.byteLength(p) !== bytes) throw new Error('bad test path');
  return p;
}

t.test('the longest rule path the parser accepts compiles and is matched', async (t) => {
  const exact = pathOfBytes(MAX_RULE_PATH_BYTES);
  const dir = pathOfBytes(MAX_RULE_PATH_BYTES - 1);
  const p = parse(doc('long', `  roles: [r]\n  allow: [{ id: exact, read: ["${exact}"] }, { id: tree, read: ["${dir}/"] }]`));
  t.same(compileErrors(p), [], 'no error');
  const c = compile(p);
  t.hasStrict(simulateKernel(c, { role: 'r', verb: 'read', path: exact }), { decision: 'allow', rule: 'exact' }, 'as a file');
  t.hasStrict(simulateKernel(c, { role: 'r', verb: 'read', path: exact, isDir: true }), { decision: 'allow', rule: 'exact' }, 'as a directory ("<path>/\\0" is 252 bytes)');
  t.hasStrict(simulateKernel(c, { role: 'r', verb: 'read', path: dir, isDir: true }), { decision: 'allow', rule: 'tree' }, 'the subtree directory');
});

t.test('a path too long for the kernel buffer is refused', async (t) => {
  const tooLong = pathOfBytes(MAX_RULE_PATH_BYTES + 1);
  t.throws(() => parse(doc('long', `  roles: [r]\n  allow: [{ read: ["${tooLong}"] }]`)), PolicyError, 'by the parser');

  // A policy that did not come through the parser (the compiler checks again).
  const loc = { file: 'hand.yaml', line: 3, col: 5, pointer: '/spec/allow/0/read/0' };
  const handMade = (canonical: string, subtree: boolean): Policy[] => [
    {
      name: 'hand',
      roles: ['r'],
      mode: 'enforce',
      loc: { ...loc, line: 1, col: 1, pointer: '' },
      rules: [{ id: 'x', idWritten: true, kind: 'allow', loc, verbs: { read: [{ kind: 'path', written: canonical, canonical, subtree, loc }] } }],
    },
  ];
  const errors = compileErrors(handMade(tooLong, false));
  t.ok(errors.length > 0, 'an exact path whose directory form does not fit');
  t.ok(errors.every((e) => /^hand\.yaml:3:5: path is \d+ bytes once stored/.test(e)), errors.join('\n'));
  t.equal(compileErrors(handMade(`${pathOfBytes(HELM_PATH_BUF)}/`, true)).length, 1, 'a subtree longer than the buffer');
  t.same(compileErrors(handMade(`${pathOfBytes(HELM_PATH_BUF - 1)}/`, true)), [], 'a subtree of exactly the buffer fits');
});

// ---------------------------------------------------------------------------------------------
// (e) Inode entries (injected stat/readdir)

const DEV_A = makedev(8, 1);
const DEV_B = makedev(8, 2);
const KDEV_A = (8 << 20) | 1;

function secretFs() {
  return fakeFs({
    '/': { dev: DEV_A, ino: 2n, dir: true },
    '/etc': { dev: DEV_A, ino: 3n, dir: true },
    '/etc/shadow': { dev: DEV_A, ino: 20n },
    '/etc/passwd': { dev: DEV_A, ino: 21n },
    '/secret': { dev: DEV_A, ino: 10n, dir: true },
    '/secret/a.txt': { dev: DEV_A, ino: 11n },
    '/secret/b.txt': { dev: DEV_A, ino: 12n, nlink: 2n },
    '/secret/sub': { dev: DEV_A, ino: 13n, dir: true },
    '/secret/sub/c.txt': { dev: DEV_A, ino: 14n, nlink: 3n },
    '/secret/mnt': { dev: DEV_B, ino: 2n, dir: true }, // another filesystem mounted here
    '/secret/mnt/d.txt': { dev: DEV_B, ino: 15n, nlink: 2n },
    '/pub': { dev: DEV_A, ino: 30n, dir: true },
    '/pub/f.txt': { dev: DEV_A, ino: 31n },
  });
}

const SECRET_POLICY = `apiVersion: helm/v1
kind: Policy
metadata: { name: sec }
spec:
  roles: [r]
  allow:
    - { id: all, read: [/], write: [/pub/] }
  block:
    - id: secrets
      read: [/secret/]
    - id: shadow
      write: [/etc/shadow]
    - id: gone
      read: [/nonexistent/]
    - id: pub-dir
      exec: [/pub]
`;

/** Inode entries as readable rows: [path, dev, ino, covers-below, per-op "policy/rule" or "-"]. */
function inodeRows(c: CompiledPolicy) {
  const show = (v: Verdict) => (v.action === C.HELM_ACTION_DENY ? `${names(c, v).rule}:${modeName(v.mode)}` : v.action === C.HELM_ACTION_NONE ? '-' : 'ALLOW?');
  return c.inodeEntries.map((e) => [e.path, e.dev, e.ino, e.below.some((v) => v.action === C.HELM_ACTION_DENY), e.self.map(show)]);
}

t.test('block rules give inode entries', async (t) => {
  const fs = secretFs();
  const c = compilePolicy(parse(SECRET_POLICY), { stat: fs.stat, readdir: fs.readdir });
  const rows = inodeRows(c);
  // verdicts are indexed read, write, exec
  t.same(
    rows.sort((a, b) => Number(a[2]) - Number(b[2])),
    [
      ['/secret/', KDEV_A, 10n, true, ['secrets:enforce', '-', '-']],
      ['/secret/b.txt', KDEV_A, 12n, false, ['secrets:enforce', '-', '-']],
      ['/secret/sub/c.txt', KDEV_A, 14n, false, ['secrets:enforce', '-', '-']],
      ['/etc/shadow', KDEV_A, 20n, false, ['-', 'shadow:enforce', '-']],
      ['/pub', KDEV_A, 30n, false, ['-', '-', 'pub-dir:enforce']],
    ],
    'blocked dir: subtree entry; blocked file or exact dir: exact entry; linked files below the dir; nothing for a.txt (nlink 1), the mount below, or a missing path',
  );
  t.ok(c.inodeEntries.every((e) => e.roleId === c.roles.get('r')));
  t.same(c.warnings, [], 'no warning within the walk budget');

  // What the kernel then does with them, for objects reached by their only name.
  const roles = ['r'];
  const ops = allOps(roles, Object.keys(fs.tree)).map((op) => ({ ...op, isDir: !!fs.tree[op.path].dir }));
  t.same(differences(c, parse(SECRET_POLICY), ops, (op) => simulateKernelWithInodes(c, fs, op)), [], 'inode entries change no decision for a single-named object');
});

t.test('a hard link outside a blocked directory is denied by inode', async (t) => {
  const fs = secretFs();
  fs.tree['/pub/b-link'] = { ...fs.tree['/secret/b.txt'] }; // the same inode, another name
  const c = compilePolicy(parse(SECRET_POLICY), { stat: fs.stat, readdir: fs.readdir });
  t.hasStrict(simulateKernel(c, { role: 'r', verb: 'read', path: '/pub/b-link' }), { decision: 'allow' }, 'by path it is allowed');
  t.hasStrict(simulateKernelWithInodes(c, fs, { role: 'r', verb: 'read', path: '/pub/b-link' }), { decision: 'deny', reason: 'inode-rule', rule: 'secrets' });
  t.hasStrict(simulateKernelWithInodes(c, fs, { role: 'r', verb: 'write', path: '/pub/b-link' }), { decision: 'allow' }, 'only the blocked verb');
});

t.test('inode verdicts: enforce wins over dry-run, per role', async (t) => {
  const fs = secretFs();
  const p = parse(
    doc('a-trial', '  roles: [r, q]\n  mode: dry-run\n  block: [{ id: trial, read: [/secret/, /etc/shadow] }]') +
      doc('b-hard', '  roles: [r]\n  block: [{ id: hard, read: [/etc/shadow] }]'),
  );
  const c = compilePolicy(p, { stat: fs.stat, readdir: fs.readdir });
  const shadow = (role: string) => c.inodeEntries.filter((e) => e.roleId === c.roles.get(role) && e.ino === 20n).map((e) => names(c, e.self[C.HELM_OP_READ]).rule + ':' + modeName(e.self[C.HELM_OP_READ].mode));
  t.same(shadow('r'), ['hard:enforce']);
  t.same(shadow('q'), ['trial:dry-run']);
});

t.test('walk budget exceeded gives a located warning', async (t) => {
  const fs = secretFs();
  const c = compilePolicy(parse(SECRET_POLICY), { stat: fs.stat, readdir: fs.readdir, walkBudget: 2 });
  t.equal(c.warnings.length, 1, c.warnings.map((w) => w.message).join('\n'));
  t.hasStrict(c.warnings[0], { severity: 'warning', loc: { file: 'x.yaml', line: 10, col: 14 } });
  t.match(c.warnings[0].message, /more than 2 files below \/secret\//);
  t.ok(c.inodeEntries.some((e) => e.path === '/secret/'), 'the directory itself is still covered');
});

t.test('random block policies: inode entries change no decision for single-named objects (seeded)', async (t) => {
  // A tree of directories (depth 0-2) and files (depth 3), one name each, on one filesystem.
  const tree: Record<string, FakeNode> = { '/': { dev: DEV_A, ino: 1n, dir: true } };
  let ino = 2n;
  const grow = (dir: string, depth: number): void => {
    for (const seg of ['a', 'b', 'bc']) {
      const p = path.posix.join(dir, seg);
      tree[p] = { dev: DEV_A, ino: ino++, dir: depth < 2 };
      if (depth < 2) grow(p, depth + 1);
    }
  };
  grow('/', 0);
  const fs = fakeFs(tree);
  const names = Object.keys(tree);
  const rng = new Rng(0x1a0de);
  // Exact block targets are files (or absent), so that no directory is blocked both exactly and
  // as a subtree: that case is the bug reproduced in the next test.
  const dirs = names.filter((n) => tree[n].dir && n !== '/');
  const files = names.filter((n) => !tree[n].dir);
  const blockTarget = () => (rng.chance(0.5) ? `${rng.pick(dirs)}/` : rng.chance(0.9) ? rng.pick(files) : '/nonexistent');
  let checked = 0;
  let inodeEntries = 0;
  let allowed = 0;
  for (let set = 0; set < 60; set++) {
    const text = ['p0', 'p1'].map((name) => {
      const roles = rng.subset(['r', 'q']);
      const rule = () => Object.fromEntries(rng.subset(FILE_VERBS).map((v) => [v, [blockTarget(), blockTarget()]]));
      const spec = { roles, mode: rng.chance(0.3) ? 'dry-run' : 'enforce', allow: [{ read: ['/'], write: ['/'], exec: ['/'] }], block: [rule(), rule()] };
      return stringify({ apiVersion: 'helm/v1', kind: 'Policy', metadata: { name }, spec });
    }).join('---\n');
    const policies = parse(text);
    const c = compilePolicy(policies, { stat: fs.stat, readdir: fs.readdir });
    const ops = allOps(['r', 'q'], names).filter((op) => op.isDir === !!tree[op.path].dir);
    const diffs = differences(c, policies, ops, (op) => simulateKernelWithInodes(c, fs, op));
    if (diffs.length) {
      t.same(diffs, [], `policy set ${set}:\n${text}`);
      return;
    }
    checked += ops.length;
    inodeEntries += c.inodeEntries.length;
    allowed += ops.filter((op) => simulateKernel(c, op).decision === 'allow').length;
  }
  t.equal(checked, 60 * 2 * 3 * names.length, `${checked} operations agree`);
  t.ok(inodeEntries > 100 && allowed > 1000, `not vacuous: ${inodeEntries} inode entries, ${allowed} operations allowed by path`);
});

t.test('an exact block on a directory covers only the directory itself', async (t) => {
  // Repro: `read: [/pub/]` (subtree) and `write: [/pub]` (exact) blocked in the same role give ONE
  // inode entry for /pub with subtree=1 and both verbs denied, so the kernel's ancestor walk
  // denies writing every file below /pub, which the exact rule does not cover (POLICY.md).
  const fs = secretFs();
  const p = parse(doc('p', '  roles: [r]\n  allow: [{ id: ok, read: [/], write: [/pub/] }]\n  block: [{ id: no-read, read: [/pub/] }, { id: no-rename, write: [/pub] }]'));
  const c = compilePolicy(p, { stat: fs.stat, readdir: fs.readdir });
  const op: FileOperation = { role: 'r', verb: 'write', path: '/pub/f.txt' };
  t.hasStrict(fromEvaluator(p, op), { decision: 'allow', rule: 'ok' }, 'the evaluator allows the write');
  const pub = c.inodeEntries.find((e) => e.path === '/pub/' || e.path === '/pub');
  t.hasStrict(pub?.self[C.HELM_OP_WRITE], { action: C.HELM_ACTION_DENY }, 'the directory itself is blocked for write by identity');
  t.hasStrict(pub?.below[C.HELM_OP_WRITE], { action: C.HELM_ACTION_NONE }, 'but not what is below it');
  t.hasStrict(pub?.below[C.HELM_OP_READ], { action: C.HELM_ACTION_DENY }, 'while reads below it are blocked by the subtree rule');
  t.hasStrict(simulateKernelWithInodes(c, fs, op), { decision: 'allow' }, 'the kernel (with the inode table) allows it too');
});
