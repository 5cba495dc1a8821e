// compilePolicy: parsed policies → the kernel's map entries for one generation.
// Pure and deterministic given the policies, the role ids and the filesystem's
// answers (stat is injected): the same input gives byte-identical entries.
//
// The path table is an LPM trie over (role, path bytes). For every stored key the
// compiler folds in every rule that covers it, so the kernel's single
// longest-prefix lookup already carries the full POLICY.md decision: block >
// contextual > allow > default, independent of rule order and path length. Contextual
// conditions on the acting process (exe, label, uid) cannot be folded: such a verdict names a
// list of rules whose conditions the kernel checks (compile-cond.ts).
import fs from 'node:fs';
import path from 'node:path';
import { C, type Verdict, NO_VERDICT, kernelDev } from '../kernel/layout';
import { HELM_PATH_BUF } from '../kernel/limits';
import {
  FILE_VERBS,
  type FileVerb,
  type Mode,
  type PathTarget,
  type Policy,
  type PolicyDiagnostic,
  type Rule,
  PolicyError,
} from './types';
import { LIST_AFTER, listing } from './canonical';
import { defaultMode, governs } from './evaluate';
import { compileNetwork, type NameEntry, type NetEntry } from './compile-net';
import { compileSockets, type SocketEntry, type UnixEntry } from './compile-socket';
import { ConditionTables, hasRuntimeCondition, type CondEntry, type CondListTable } from './compile-cond';

export interface RuleRef {
  policy: string;
  rule: string;
  kind: Rule['kind'];
}

export interface PathEntry {
  roleId: number;
  /** Stored bytes: exact paths end in NUL, subtrees in '/'; empty for the role's root entry. */
  data: Buffer;
  verdicts: Verdict[]; // indexed by HELM_OP_*
  defaultMode: number;
}

export interface InodeEntry {
  roleId: number;
  dev: number;
  ino: bigint;
  /** Per HELM_OP_*: what blocks the object itself (exact and subtree rules). */
  self: Verdict[];
  /** Per HELM_OP_*: what blocks everything below a directory (subtree rules only). */
  below: Verdict[];
  /** The path it was found at, for lint and audit. */
  path: string;
}

export interface CompiledPolicy {
  /** Role name → id used in the kernel. */
  roles: Map<string, number>;
  /** policy id (1-based) → name and mode. */
  policies: { name: string; mode: Mode }[];
  /** rule id (1-based) → where it came from. */
  rules: RuleRef[];
  pathEntries: PathEntry[];
  inodeEntries: InodeEntry[];
  netEntries: NetEntry[];
  nameEntries: NameEntry[];
  unixEntries: UnixEntry[];
  socketEntries: SocketEntry[];
  /** Host-name pattern → id in the name tables (stable across generations, like role ids). */
  nameIds: Map<string, number>;
  /** Conditions on exe and uid (their ids in the kernel's exe and uid tables). */
  conds: CondEntry[];
  /** Lists of contextual rules with conditions, named by verdicts' condList. */
  condLists: CondListTable[];
  /** Label pair (labelPairKey) → id; bit id-1 of an agent's label bits (stable across generations, only added to). */
  labelIds: Map<string, number>;
  warnings: PolicyDiagnostic[];
}

export interface StatInfo {
  dev: bigint;
  ino: bigint;
  nlink: bigint;
  isDirectory: boolean;
  isFile: boolean;
}

export interface CompileOptions {
  /** Stable role ids: roles already known keep theirs; new ones get the next free id. */
  roleIds?: Map<string, number>;
  /** Stable host-name pattern ids: patterns already known keep theirs. */
  nameIds?: Map<string, number>;
  /** Stable label pair ids: pairs already known keep theirs (and stay known). */
  labelIds?: Map<string, number>;
  /** Roles to compile for besides those the policies name (e.g. roles of attached agents). */
  extraRoles?: Iterable<string>;
  /** Injected for tests; defaults to fs.statSync with bigint. Returns undefined if absent. */
  stat?: (p: string) => StatInfo | undefined;
  /** Directory entries for walking block subtrees; defaults to fs.readdirSync. */
  readdir?: (p: string) => string[];
  /** Files visited per block subtree when looking for hard links. */
  walkBudget?: number;
}

const OP_INDEX: Record<FileVerb, number> = { read: C.HELM_OP_READ, write: C.HELM_OP_WRITE, exec: C.HELM_OP_EXEC };
const MODE_CODE: Record<Mode, number> = { enforce: C.HELM_MODE_ENFORCE, 'dry-run': C.HELM_MODE_DRY_RUN };

function defaultStat(p: string): StatInfo | undefined {
  try {
    // No exception for a missing path: block rules often name paths that do not exist (yet).
    const s = fs.statSync(p, { bigint: true, throwIfNoEntry: false });
    if (!s) return undefined;
    return { dev: s.dev, ino: s.ino, nlink: s.nlink, isDirectory: s.isDirectory(), isFile: s.isFile() };
  } catch {
    return undefined;
  }
}

/**
 * `stat` for one compile's block targets: each path looked at once whatever the roles it is
 * blocked for, and none below a directory that is not there (a policy's thousands of block rules
 * mostly name paths in a few trees, often absent from the host: one stat of the top of such a tree
 * stands for all of them). With `list`, a directory looked into LIST_AFTER times is listed once,
 * and only the names it holds are stat'ed (as canonical.ts lists rule paths' directories: thousands of block rules naming files of one directory,
 * most of them absent). What changes on disk during the compile is seen or not, as with any lookup.
 */
function statOnce(stat: (p: string) => StatInfo | undefined, list?: (dir: string) => ReadonlyMap<string, unknown> | null): (p: string) => StatInfo | undefined {
  const seen = new Map<string, StatInfo | undefined>();
  const dirs = new Map<string, DirLooks>([['/', { present: true, lookups: 0 }]]);
  const dirState = (dir: string): DirLooks => {
    let d = dirs.get(dir);
    if (d === undefined) {
      const slash = dir.lastIndexOf('/');
      const parent = dirState(dir.slice(0, Math.max(1, slash)));
      d = { present: parent.present && (seen.has(dir) ? seen.get(dir) : lookIn(parent, dir, slash))?.isDirectory === true, lookups: 0 };
      dirs.set(dir, d);
    }
    return d;
  };
  const lookIn = (parent: DirLooks, p: string, slash: number): StatInfo | undefined => {
    if (!parent.present) return undefined;
    if (list && parent.names === undefined && ++parent.lookups >= LIST_AFTER) parent.names = list(p.slice(0, Math.max(1, slash)));
    return parent.names && !parent.names.has(p.slice(slash + 1)) ? undefined : stat(p);
  };
  return (p) => {
    if (seen.has(p)) return seen.get(p);
    // p is canonical: absolute, no "." or ".." (a subtree's trailing "/" looked at as the directory).
    const path = p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p;
    const slash = path.lastIndexOf('/');
    const s = path === '/' ? stat(p) : lookIn(dirState(path.slice(0, Math.max(1, slash))), path, slash);
    seen.set(p, s);
    return s;
  };
}

/** A directory statOnce looked into: whether it is one, how often, and its names once listed (null: not listable). */
interface DirLooks {
  present: boolean;
  lookups: number;
  names?: ReadonlyMap<string, unknown> | null;
}

/** Names in a directory, without symlinks: the walk looks for this tree's own files. */
function defaultReaddir(p: string): string[] {
  try {
    return fs
      .readdirSync(p, { withFileTypes: true })
      .filter((d) => !d.isSymbolicLink())
      .map((d) => d.name)
      .sort();
  } catch {
    return [];
  }
}

/** The byte strings a target is stored as: both forms of an exact path (file and directory). */
export function storedForms(t: PathTarget): Buffer[] {
  if (t.subtree) return [Buffer.from(t.canonical, 'utf8')];
  const base = t.canonical === '/' ? '' : t.canonical;
  return [Buffer.from(`${base}\0`, 'utf8'), Buffer.from(`${base}/\0`, 'utf8')];
}

/**
 * storedForms as latin1 text, one character per byte: strings hash, compare and
 * slice far faster than Buffers, and sorting them orders them as their bytes.
 */
function storedTexts(t: PathTarget): string[] {
  // UTF-8 bytes read back as latin1; ASCII (nearly every path) is already that.
  const bytes = /^[\x00-\x7f]*$/.test(t.canonical) ? t.canonical : Buffer.from(t.canonical, 'utf8').toString('latin1');
  if (t.subtree) return [bytes];
  const base = bytes === '/' ? '' : bytes;
  return [`${base}\0`, `${base}/\0`];
}

export interface Candidate {
  policyIdx: number;
  policy: Policy;
  rule: Rule;
  ruleId: number;
  /** Per FILE_VERBS index, the stored texts of the rule's path targets. */
  forms: string[][];
}

function modeRank(c: Candidate): number {
  return c.policy.mode === 'enforce' ? 0 : 1;
}

/** Same tie-break as the evaluator: enforce first, then policy name, then rule order. */
function reportOrder(a: Candidate, b: Candidate): number {
  return modeRank(a) - modeRank(b) || a.policyIdx - b.policyIdx || a.ruleId - b.ruleId;
}

function pick(cands: Candidate[]): Candidate {
  return cands.reduce((best, c) => (reportOrder(c, best) < 0 ? c : best));
}

const RANK: Record<Rule['kind'], number> = { allow: C.HELM_RANK_ALLOW, contextual: C.HELM_RANK_CONTEXTUAL, block: C.HELM_RANK_BLOCK };

function verdictOf(c: Candidate, action: number, mode: Mode): Verdict {
  return { policyId: c.policyIdx + 1, ruleId: c.ruleId, action, mode: MODE_CODE[mode], rank: RANK[c.rule.kind], condList: 0 };
}

/**
 * POLICY.md's algorithm over the rules that cover a key (already filtered to one role and verb).
 * A contextual rule whose `when` needs the acting process (exe, label, uid) is decided by the
 * kernel: the rules whose role condition holds are tried in report order, up to the first one
 * that holds whatever the process (its `when` is role alone); those before it go into a list
 * the kernel tries first, and the verdict is that rule's allow, or when there is none, the
 * contextual deny.
 */
export function decide(cands: Candidate[], role: string, conds: ConditionTables): Verdict {
  const blocks = cands.filter((c) => c.rule.kind === 'block');
  if (blocks.length) {
    const c = pick(blocks);
    return verdictOf(c, C.HELM_ACTION_DENY, c.policy.mode);
  }
  const contextual = cands.filter((c) => c.rule.kind === 'contextual');
  if (contextual.length) {
    const reported = pick(contextual);
    const deny = verdictOf(reported, C.HELM_ACTION_DENY, reported.policy.mode);
    const byRole = contextual.filter((c) => c.rule.when?.role === undefined || c.rule.when.role.includes(role)).sort(reportOrder);
    const firstUnconditional = byRole.findIndex((c) => !hasRuntimeCondition(c.rule.when));
    const conditional = firstUnconditional < 0 ? byRole : byRole.slice(0, firstUnconditional);
    const fallback = firstUnconditional < 0 ? deny : verdictOf(byRole[firstUnconditional], C.HELM_ACTION_ALLOW, 'enforce');
    if (conditional.length === 0) return fallback;
    const list = conds.listOf(conditional.map((c) => ({ rule: c.rule, allow: verdictOf(c, C.HELM_ACTION_ALLOW, 'enforce') })), role);
    return { ...fallback, condList: list };
  }
  const allows = cands.filter((c) => c.rule.kind === 'allow');
  if (allows.length) return verdictOf(pick(allows), C.HELM_ACTION_ALLOW, 'enforce');
  return NO_VERDICT;
}

function isPrefix(prefix: Buffer, of: Buffer): boolean {
  return prefix.length <= of.length && of.compare(prefix, 0, prefix.length, 0, prefix.length) === 0;
}

/**
 * For one role's rules: per verb (FILE_VERBS index), the rules whose stored forms
 * are byte-prefixes of a stored key (given as latin1 text). Lists may be shared
 * between keys and must not be changed.
 */
type CoverFinder = (governing: Candidate[]) => (keyText: string) => Candidate[][];

const byScan: CoverFinder = (governing) => (text) => {
  const key = Buffer.from(text, 'latin1');
  return FILE_VERBS.map((verb) =>
    governing.filter((c) =>
      (c.rule.verbs[verb] ?? []).some((t) => t.kind === 'path' && storedForms(t).some((form) => isPrefix(form, key))),
    ),
  );
};

/**
 * Which forms can be a byte-prefix of a key: a subtree form ends in '/', so it is
 * the key up to one of its '/'; an exact form ends in NUL, which only the last
 * byte of a key is, so it is the whole key. So a key's rules are those of its
 * directory (the text up to its last '/') — its parent directory's plus the
 * subtree forms equal to it — plus the exact forms equal to the key: a hash
 * lookup or two per key instead of a test of every rule. The directories of the
 * key being looked up are kept on a stack; keys in sorted order share most of it.
 */
const byPrefixes: CoverFinder = (governing) => coversIn(formIndex(governing));

/** A role's rules by stored form: form text → per verb (FILE_VERBS index), the rules with that form. */
export type FormIndex = Map<string, Candidate[][]>;

/** Shared by every verb no rule of a form names (never added to). */
const NO_RULES: Candidate[] = [];

export function formIndex(governing: Candidate[]): FormIndex {
  const at: FormIndex = new Map();
  for (const c of governing) addToIndex(at, c);
  return at;
}

/** Adds a rule under each of its forms (once per verb and form, in the order given). */
export function addToIndex(at: FormIndex, c: Candidate): void {
  for (let verb = 0; verb < c.forms.length; verb++) {
    for (const text of c.forms[verb]) {
      let e = at.get(text);
      if (!e) at.set(text, (e = FILE_VERBS.map(() => NO_RULES)));
      if (e[verb] === NO_RULES) e[verb] = [c];
      else if (!e[verb].includes(c)) e[verb].push(c);
    }
  }
}

/** Takes a rule out of the index under each of its forms; a form no rule has any more leaves it. */
export function removeFromIndex(at: FormIndex, c: Candidate): void {
  for (let verb = 0; verb < c.forms.length; verb++) {
    for (const text of c.forms[verb]) {
      const e = at.get(text);
      if (!e || !e[verb].includes(c)) continue;
      const rest = e[verb].filter((x) => x !== c);
      e[verb] = rest.length ? rest : NO_RULES;
      if (e.every((list) => list === NO_RULES)) at.delete(text);
    }
  }
}

/** The cover finder over an index of the role's forms (see byPrefixes). */
export function coversIn(at: FormIndex): (keyText: string) => Candidate[][] {
  const empty = NO_RULES;
  const none: Candidate[][] = FILE_VERBS.map(() => empty);
  const merge = (base: Candidate[][], own: Candidate[][]) =>
    base.map((b, v) => (own[v] === empty ? b : b === empty ? own[v] : b.concat(own[v].filter((c) => !b.includes(c)))));
  // stack[i] is a directory of the current key (each the previous one plus one component) and its rules.
  const stack: { dir: string; cover: Candidate[][] }[] = [{ dir: '', cover: none }];
  const dirCover = (dir: string): Candidate[][] => {
    while (!dir.startsWith(stack[stack.length - 1].dir)) stack.pop(); // '' is a prefix of all
    let top = stack[stack.length - 1];
    for (let i = dir.indexOf('/', top.dir.length); i !== -1; i = dir.indexOf('/', i + 1)) {
      const sub = dir.slice(0, i + 1);
      const own = at.get(sub);
      top = { dir: sub, cover: own ? merge(top.cover, own) : top.cover };
      stack.push(top);
    }
    return top.cover;
  };
  return (text) => {
    const dirEnd = text.lastIndexOf('/') + 1;
    const cover = dirCover(dirEnd === text.length ? text : text.slice(0, dirEnd));
    if (dirEnd === text.length) return cover;
    const own = at.get(text);
    return own ? merge(cover, own) : cover;
  };
};

export function compilePolicy(input: Policy[], opts: CompileOptions = {}): CompiledPolicy {
  return compileWith(input, opts, computedPaths(byPrefixes));
}

/**
 * The same compilation, finding the rules that cover each key by testing every
 * rule's forms against it: O(keys × rules) per role. It states what the index in
 * compilePolicy computes; tests compare the two.
 */
export function compilePolicyByScan(input: Policy[], opts: CompileOptions = {}): CompiledPolicy {
  return compileWith(input, opts, computedPaths(byScan));
}

/**
 * Where compileWith gets each rule's candidate (with its stored forms) and each role's path entries:
 * the parts of a compile that grow with the rules. computedPaths computes them;
 * the incremental compiler (compile-incremental.ts) keeps them from its previous
 * compile where the rules they come from did not change.
 */
export interface PathSource {
  /** A rule as the compile works with it, its forms computed (or known). */
  candidate(policyIdx: number, policy: Policy, rule: Rule, ruleId: number): Candidate;
  /** One role's path entries in key order. */
  roleEntries(role: string, roleId: number, governing: Candidate[], defaultMode: number, decide: (cands: Candidate[]) => Verdict): PathEntry[];
  /** The rule names of the compile before, whose objects are kept where they are the same (they live as long as their generation's names). */
  previousRules?: readonly RuleRef[];
}

export function computedPaths(finder: CoverFinder): PathSource {
  return {
    candidate: (policyIdx, policy, rule, ruleId) => ({ policyIdx, policy, rule, ruleId, forms: ruleForms(rule) }),
    roleEntries: (_role, roleId, governing, dmode, decide) => rolePathEntries(finder(governing), roleKeys(governing), roleId, dmode, decide),
  };
}

/** The stored texts of a rule's path targets, per FILE_VERBS index. */
export function ruleForms(rule: Rule): string[][] {
  return FILE_VERBS.map((verb) => (rule.verbs[verb] ?? []).flatMap((t) => (t.kind === 'path' ? storedTexts(t) : [])));
}

/** Every stored key of a role, sorted: the root entry and every form of its rules. */
export function roleKeys(governing: Candidate[]): string[] {
  const keys = new Set<string>(['']);
  for (const c of governing) for (const list of c.forms) for (const text of list) keys.add(text);
  // sort() without a comparator orders strings code unit by code unit: for latin1
  // text, byte by byte — the order of Buffer.compare.
  return [...keys].sort();
}

/** One role's path entries for these keys (sorted), each the fold of the rules covering it. */
export function rolePathEntries(
  covering: (keyText: string) => Candidate[][],
  keys: string[],
  roleId: number,
  dmode: number,
  decide: (cands: Candidate[]) => Verdict,
): PathEntry[] {
  // Keys below one directory mostly share its rules' lists: decide each list once.
  const decided = new Map<Candidate[], Verdict>();
  const decideOnce = (cands: Candidate[]) => {
    let v = decided.get(cands);
    if (!v) decided.set(cands, (v = decide(cands)));
    return v;
  };
  return keys.map((text) => pathEntry(roleId, text, covering(text).map(decideOnce), dmode));
}

/** The entry of one key, given its verdicts in FILE_VERBS order. */
export function pathEntry(roleId: number, text: string, byVerbOrder: Verdict[], dmode: number): PathEntry {
  return { roleId, data: Buffer.from(text, 'latin1'), verdicts: reorder(byVerbOrder), defaultMode: dmode };
}

function anyLongerThan(forms: string[][], bytes: number): boolean {
  for (const list of forms) for (const form of list) if (form.length > bytes) return true;
  return false;
}

/** Policies in name order, as they get their ids. */
export function inNameOrder(input: Policy[]): Policy[] {
  return [...input].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export function compileWith(input: Policy[], opts: CompileOptions, paths: PathSource): CompiledPolicy {
  const stat = opts.stat ?? defaultStat;
  const readdir = opts.readdir ?? defaultReaddir;
  const walkBudget = opts.walkBudget ?? 5000;
  // Listing is only for the host's filesystem: a `stat` of the caller's has its own.
  const blockedStat = statOnce(stat, opts.stat ? undefined : listing);
  const errors: PolicyDiagnostic[] = [];
  const warnings: PolicyDiagnostic[] = [];

  // Policies in name order, so ids do not depend on file order.
  const policies = inNameOrder(input);

  // Role ids: stable across generations.
  const roles = new Map(opts.roleIds ?? []);
  const roleNames = new Set<string>(opts.extraRoles ?? []);
  for (const p of policies) for (const r of p.roles) if (r !== '*') roleNames.add(r);
  let nextRoleId = Math.max(0, ...roles.values()) + 1;
  for (const r of [...roleNames].sort()) if (!roles.has(r)) roles.set(r, nextRoleId++);

  // Rule ids: 1-based over the whole generation.
  const rules: RuleRef[] = [];
  const candidates: Candidate[] = [];
  policies.forEach((policy, policyIdx) => {
    for (const rule of policy.rules) {
      const before = paths.previousRules?.[rules.length];
      rules.push(before && before.policy === policy.name && before.rule === rule.id && before.kind === rule.kind ? before : { policy: policy.name, rule: rule.id, kind: rule.kind });
      const ruleId = rules.length;
      if (ruleId > 0xffff) {
        errors.push({ severity: 'error', loc: rule.loc, message: `more than ${0xffff} rules in one set of policies` });
      }
      candidates.push(paths.candidate(policyIdx, policy, rule, ruleId));
    }
  });
  if (policies.length > 0xffff) errors.push({ severity: 'error', loc: policies[0].loc, message: 'too many policies' });

  for (const c of candidates) {
    // The forms say whether a target is too long; its location is looked up only then.
    if (!anyLongerThan(c.forms, HELM_PATH_BUF)) continue;
    for (const verb of FILE_VERBS) {
      for (const t of c.rule.verbs[verb] ?? []) {
        if (t.kind !== 'path') continue;
        for (const form of storedTexts(t)) {
          if (form.length > HELM_PATH_BUF) {
            errors.push({ severity: 'error', loc: t.loc, message: `path is ${form.length} bytes once stored; the kernel buffer holds ${HELM_PATH_BUF}` });
          }
        }
      }
    }
  }
  if (errors.length) throw new PolicyError(errors);

  const pathEntries: PathEntry[] = [];
  const inodeEntries: InodeEntry[] = [];
  const netEntries: NetEntry[] = [];
  const nameEntries: NameEntry[] = [];
  const unixEntries: UnixEntry[] = [];
  const socketEntries: SocketEntry[] = [];
  const nameIds = new Map(opts.nameIds ?? []);
  const conds = new ConditionTables(new Map(opts.labelIds ?? []), allRules(policies), errors);
  const decideWith = (cands: Candidate[], r: string) => decide(cands, r, conds);
  const walks: Walker = { stat, readdir, budget: walkBudget, memo: new Map() };
  for (const role of [...roles.keys()].sort()) {
    if (!roleNames.has(role) && !policies.some((p) => governs(p, role))) continue;
    const roleId = roles.get(role)!;
    const governed = policies.map((p) => governs(p, role));
    const governing = candidates.filter((c) => governed[c.policyIdx]);
    if (governing.length === 0 && !policies.some((p) => governs(p, role))) continue; // no entry: no policy → deny
    const dmode = MODE_CODE[defaultMode(policies, role)];

    for (const e of paths.roleEntries(role, roleId, governing, dmode, (cands) => decideWith(cands, role))) pathEntries.push(e);
    if (pathEntries.length > C.HELM_MAX_PATH_ENTRIES) {
      throw new PolicyError([{ severity: 'error', loc: policies[0].loc, message: `the policies need ${pathEntries.length} path entries; the kernel table holds ${C.HELM_MAX_PATH_ENTRIES}` }]);
    }

    inodeEntries.push(...blockInodes(governing, roleId, blockedStat, walks, warnings));

    const net = compileNetwork(governing, role, roleId, dmode, nameIds, decideWith, errors);
    netEntries.push(...net.netEntries);
    nameEntries.push(...net.nameEntries);
    const sockets = compileSockets(governing, role, roleId, dmode, decideWith, errors);
    unixEntries.push(...sockets.unixEntries);
    socketEntries.push(...sockets.socketEntries);
  }
  if (unixEntries.length > C.HELM_MAX_UNIX_ENTRIES || socketEntries.length > C.HELM_MAX_SOCKET_ENTRIES) {
    errors.push({ severity: 'error', loc: policies[0].loc, message: `the policies need ${unixEntries.length} unix-socket and ${socketEntries.length} raw/packet entries; the kernel tables hold ${C.HELM_MAX_UNIX_ENTRIES} and ${C.HELM_MAX_SOCKET_ENTRIES}` });
  }
  if (errors.length) throw new PolicyError(errors);
  if (netEntries.length > C.HELM_MAX_NET_ENTRIES) {
    throw new PolicyError([{ severity: 'error', loc: policies[0].loc, message: `the policies need ${netEntries.length} network entries; the kernel table holds ${C.HELM_MAX_NET_ENTRIES}` }]);
  }
  if (nameEntries.length > C.HELM_MAX_NAME_ENTRIES) {
    throw new PolicyError([{ severity: 'error', loc: policies[0].loc, message: `the policies need ${nameEntries.length} host-name entries; the kernel table holds ${C.HELM_MAX_NAME_ENTRIES}` }]);
  }
  if (inodeEntries.length > C.HELM_MAX_INODE_ENTRIES) {
    throw new PolicyError([{ severity: 'error', loc: policies[0].loc, message: `block rules cover ${inodeEntries.length} inodes; the kernel table holds ${C.HELM_MAX_INODE_ENTRIES}` }]);
  }
  const exeEntries = conds.conds.reduce((n, c) => n + c.exes.length, 0);
  const uidEntries = conds.conds.reduce((n, c) => n + c.uids.length, 0);
  for (const [count, max, what] of [
    [conds.lists.length, C.HELM_MAX_COND_LISTS, 'lists of conditional contextual rules'],
    [exeEntries, C.HELM_MAX_COND_EXES, 'executables in conditions'],
    [uidEntries, C.HELM_MAX_COND_UIDS, 'uids in conditions'],
  ] as const) {
    if (count > max) throw new PolicyError([{ severity: 'error', loc: policies[0].loc, message: `the policies need ${count} ${what}; the kernel table holds ${max}` }]);
  }

  return {
    roles,
    policies: policies.map((p) => ({ name: p.name, mode: p.mode })),
    rules,
    pathEntries,
    inodeEntries,
    netEntries,
    nameEntries,
    unixEntries,
    socketEntries,
    nameIds,
    conds: conds.conds,
    condLists: conds.lists,
    labelIds: conds.labelIds,
    warnings,
  };
}

function allRules(policies: Policy[]): Rule[] {
  const out: Rule[] = [];
  for (const p of policies) for (const r of p.rules) out.push(r);
  return out;
}

/** FILE_VERBS order is read, write, exec; the kernel indexes by HELM_OP_*. */
function reorder(byVerbOrder: Verdict[]): Verdict[] {
  const out: Verdict[] = [];
  FILE_VERBS.forEach((verb, i) => {
    out[OP_INDEX[verb]] = byVerbOrder[i];
  });
  return out;
}

/**
 * Objects that block rules cover, by identity: each blocked directory (covering
 * its subtree, so a bind mount of it or of anything below is still blocked), each
 * blocked file, and every file with more than one name below a blocked directory
 * (a hard link elsewhere is the same inode).
 */
function blockInodes(governing: Candidate[], roleId: number, stat: NonNullable<CompileOptions['stat']>, walks: Walker, warnings: PolicyDiagnostic[]): InodeEntry[] {
  const byIdentity = new Map<string, InodeEntry>();
  /*
   * Identity is (device, inode) as stat() reports it. On overlayfs a file's st_dev
   * is a per-layer pseudo device the kernel never shows, and inode numbers of
   * different layers collide: no alias is recorded there (it would deny unrelated
   * files); such files are matched by path, directories by identity.
   */
  const add = (p: string, s: StatInfo, subtree: boolean, verb: FileVerb, c: Candidate) => addIdentity(p, s.dev, s.ino, subtree, verb, c);
  const addIdentity = (p: string, stDev: bigint, ino: bigint, subtree: boolean, verb: FileVerb, c: Candidate) => {
    const dev = kernelDev(stDev);
    const id = `${dev}:${ino}`;
    let e = byIdentity.get(id);
    if (!e) {
      e = { roleId, dev, ino, self: [NO_VERDICT, NO_VERDICT, NO_VERDICT], below: [NO_VERDICT, NO_VERDICT, NO_VERDICT], path: p };
      byIdentity.set(id, e);
    }
    const op = OP_INDEX[verb];
    const block = verdictOf(c, C.HELM_ACTION_DENY, c.policy.mode);
    e.self[op] = stricter(e.self[op], block);
    if (subtree) e.below[op] = stricter(e.below[op], block);
  };

  const blocks = governing.filter((c) => c.rule.kind === 'block').sort((a, b) => a.ruleId - b.ruleId);
  for (const c of blocks) {
    for (const verb of FILE_VERBS) {
      for (const t of c.rule.verbs[verb] ?? []) {
        if (t.kind !== 'path') continue;
        const s = stat(t.canonical);
        if (!s) continue;
        if (!t.subtree || !s.isDirectory) {
          add(t.canonical, s, false, verb, c);
          continue;
        }
        add(t.canonical, s, true, verb, c);
        const found = linkedFiles(t, s, walks);
        for (const f of found.files) add(f.path, f.stat, false, verb, c);
        if (found.truncated) {
          const message = `more than ${found.budget} files below ${t.canonical}: hard links beyond them are matched by path only`;
          if (!warnings.some((w) => w.message === message && w.loc === t.loc)) warnings.push({ severity: 'warning', loc: t.loc, message });
        }
      }
    }
  }
  return [...byIdentity.values()];
}

/** The block to report when two cover one object: enforce over dry-run, else the earlier rule (as pick()). */
function stricter(prev: Verdict, next: Verdict): Verdict {
  if (prev.action !== C.HELM_ACTION_DENY) return next;
  if (prev.mode === C.HELM_MODE_DRY_RUN && next.mode === C.HELM_MODE_ENFORCE) return next;
  return prev;
}

interface Walker {
  stat: NonNullable<CompileOptions['stat']>;
  readdir: NonNullable<CompileOptions['readdir']>;
  budget: number;
  /** One walk per blocked directory, whatever the roles and verbs that block it. */
  memo: Map<string, { files: { path: string; stat: StatInfo }[]; truncated: boolean; budget: number }>;
}

/** Files with more than one name below a blocked directory, on its own filesystem. */
function linkedFiles(t: PathTarget, root: StatInfo, w: Walker) {
  const cached = w.memo.get(t.canonical);
  if (cached) return cached;
  const files: { path: string; stat: StatInfo }[] = [];
  let visited = 0;
  const walk = (dir: string): void => {
    for (const name of w.readdir(dir)) {
      if (++visited > w.budget) return;
      const p = path.join(dir, name);
      const st = w.stat(p);
      if (!st) continue;
      if (st.isDirectory) {
        if (st.dev === root.dev) walk(p); // a mount below is another filesystem
      } else if (st.nlink > 1n) files.push({ path: p, stat: st });
    }
  };
  walk(t.canonical);
  const result = { files, truncated: visited > w.budget, budget: w.budget };
  w.memo.set(t.canonical, result);
  return result;
}
