// IncrementalCompiler: compilePolicy for a process that compiles edit after edit
// (helmd). It keeps, from its previous compile, each rule's stored forms and each
// role's path entries with the index of its rules by form, and recomputes only
// the path entries whose keys the changed rules' old or new forms are prefixes
// of. The path table is what grows with the rules (a 10,000-rule policy is about
// 15,000 entries); everything else a compile produces (rule names, inodes,
// network, sockets, conditions, errors and warnings) is computed as a full compile
// does, from the same code, every time — in particular the block rules' objects
// are looked up again, as the filesystem may have changed since.
//
// The result is the full compile's, byte for byte (issue #3: the same input gives
// the same map contents): test/unit/compile-incremental.test.ts compares the two
// over random policies and edits. Entries that did not change are the same objects
// as in the previous result, which lets KernelEnforcer skip them without encoding.
//
// Entries are patched only when the ids cannot have moved: the same policies (by
// name, in name order) with the same modes, roles and number of rules, so every rule
// keeps its id. Any other change, a compile that throws, or rules with exe, label or
// uid conditions (the ids of condition lists are numbered in key order over the whole
// generation) make the next compile a full one.
import { hasRuntimeCondition } from './compile-cond';
import {
  type Candidate,
  type CompileOptions,
  type CompiledPolicy,
  type FormIndex,
  type PathEntry,
  type PathSource,
  type RuleRef,
  addToIndex,
  compileWith,
  removeFromIndex,
  coversIn,
  formIndex,
  inNameOrder,
  pathEntry,
  roleKeys,
  rolePathEntries,
  ruleForms,
} from './compile';
import { FILE_VERBS, type Policy, type Rule, type Target } from './types';
import type { Verdict } from '../kernel/layout';

/** One role's path entries as the previous compile left them. */
interface RolePaths {
  roleId: number;
  defaultMode: number;
  /** The role's stored keys, sorted; entries[i] is the entry of keys[i]. */
  keys: string[];
  entries: PathEntry[];
  /** The role's rules by form, holding the candidates of `Kept.candidates`. */
  index: FormIndex;
}

/** What a compile leaves for the next one. */
interface Kept {
  /** The policies compiled, in name order. */
  policies: Policy[];
  /** Per rule id - 1: its candidate, which every role's index holds. */
  candidates: Candidate[];
  roles: Map<string, RolePaths>;
}

/** More changed rules than this share of all, and a role's entries are compiled anew. */
const PATCH_SHARE = 0.25;

export class IncrementalCompiler {
  private kept: Kept | undefined;
  private rules: readonly RuleRef[] | undefined;

  /** compilePolicy(input, opts), reusing what the previous compile computed. */
  compile(input: Policy[], opts: CompileOptions = {}): CompiledPolicy {
    const policies = inNameOrder(input);
    const prev = this.kept;
    this.kept = undefined; // a compile that throws leaves the indexes half patched
    const changed = prev && changedRules(prev.policies, policies);
    const next: Kept = { policies, candidates: [], roles: new Map() };
    const source: PathSource = {
      candidate: (policyIdx, policy, rule, ruleId) => {
        const i = ruleId - 1;
        let c = changed && !changed.has(i) ? prev!.candidates[i] : undefined;
        if (c) {
          // The same id, mode and forms: the one the indexes hold, now naming this compile's
          // rule (whose locations errors and warnings report).
          c.policy = policy;
          c.rule = rule;
        } else c = { policyIdx, policy, rule, ruleId, forms: ruleForms(rule) };
        next.candidates[i] = c;
        return c;
      },
      roleEntries: (role, roleId, governing, dmode, decide) => {
        const before = changed && prev!.roles.get(role);
        let paths: RolePaths;
        if (before && before.roleId === roleId && before.defaultMode === dmode && governing.length > 0 && countChanged(governing, changed!) <= governing.length * PATCH_SHARE) {
          patch(before, governing, changed!, prev!, decide);
          paths = before;
        } else {
          const index = formIndex(governing);
          const keys = roleKeys(governing);
          paths = { roleId, defaultMode: dmode, keys, entries: rolePathEntries(coversIn(index), keys, roleId, dmode, decide), index };
        }
        next.roles.set(role, paths);
        return paths.entries;
      },
    };
    const compiled = compileWith(input, opts, { ...source, previousRules: this.rules });
    this.kept = next;
    this.rules = compiled.rules;
    return compiled;
  }
}

/**
 * Indices (rule id - 1) of the rules whose path entries may differ between two
 * sets of policies (both in name order), or undefined when ids may have moved or
 * conditions are involved: then the compile is a full one.
 */
function changedRules(before: Policy[], after: Policy[]): Set<number> | undefined {
  if (before.length !== after.length) return undefined;
  const changed = new Set<number>();
  let index = 0;
  for (let p = 0; p < after.length; p++) {
    const a = before[p];
    const b = after[p];
    if (a.name !== b.name || a.mode !== b.mode || a.rules.length !== b.rules.length || !sameStrings(a.roles, b.roles)) return undefined;
    for (let r = 0; r < b.rules.length; r++, index++) {
      if (hasRuntimeCondition(a.rules[r].when) || hasRuntimeCondition(b.rules[r].when)) return undefined;
      if (!samePathRule(a.rules[r], b.rules[r])) changed.add(index);
    }
  }
  return changed;
}

function countChanged(governing: Candidate[], changed: Set<number>): number {
  let n = 0;
  for (const c of governing) if (changed.has(c.ruleId - 1)) n++;
  return n;
}

/** samePathRule names the file verbs one by one: this stops compiling if they change. */
export const NAMED_FILE_VERBS: readonly ['read', 'write', 'exec'] = FILE_VERBS;

/** Do two rules (at the same place, so with the same id) give every path key the same verdicts? */
function samePathRule(a: Rule, b: Rule): boolean {
  if (a === b) return true;
  if (a.kind !== b.kind || !sameStrings(a.when?.role, b.when?.role)) return false;
  // Named, not looked up by a verb variable: this runs for every rule of every compile.
  const x = a.verbs;
  const y = b.verbs;
  return samePathTargets(x.read, y.read) && samePathTargets(x.write, y.write) && samePathTargets(x.exec, y.exec);
}

/** The same path targets in the same order (the stored forms depend on nothing else). */
const NO_TARGETS: Target[] = [];

function samePathTargets(a: Target[] | undefined, b: Target[] | undefined): boolean {
  if (a === b) return true;
  const x = a ?? NO_TARGETS;
  const y = b ?? NO_TARGETS;
  let i = 0;
  let j = 0;
  for (;;) {
    while (i < x.length && x[i].kind !== 'path') i++;
    while (j < y.length && y[j].kind !== 'path') j++;
    if (i === x.length || j === y.length) return i === x.length && j === y.length;
    const s = x[i] as Extract<Target, { kind: 'path' }>;
    const t = y[j] as Extract<Target, { kind: 'path' }>;
    if (s.canonical !== t.canonical || s.subtree !== t.subtree) return false;
    i++;
    j++;
  }
}

function sameStrings(a: readonly string[] | undefined, b: readonly string[] | undefined): boolean {
  if (a === b) return true;
  if (a === undefined || b === undefined || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Brings one role's entries from the previous policies to these: the changed
 * rules leave the index under their old forms and enter it under their new ones;
 * keys no rule has any more go, new ones come; and every key one of those forms
 * is a byte-prefix of (itself, and for a subtree form every key below it) is
 * decided again. Nothing else can have changed: a key's rules are those whose
 * forms are its prefixes, and the other rules kept their ids, modes and forms.
 */
function patch(
  paths: RolePaths,
  governing: Candidate[],
  changed: Set<number>,
  prev: Kept,
  decide: (cands: Candidate[]) => Verdict,
): void {
  const touched = new Set<string>();
  for (const c of governing) {
    if (!changed.has(c.ruleId - 1)) continue;
    const old = prev.candidates[c.ruleId - 1];
    removeFromIndex(paths.index, old);
    for (const list of old.forms) for (const text of list) touched.add(text);
    addToIndex(paths.index, c);
    for (const list of c.forms) for (const text of list) touched.add(text);
  }
  const { keys, entries, index } = paths;
  // The key set first (a key is a form some rule has), then what to decide again.
  for (const form of touched) {
    const at = lowerBound(keys, form);
    const present = at < keys.length && keys[at] === form;
    if (index.has(form) && !present) {
      keys.splice(at, 0, form);
      entries.splice(at, 0, undefined as unknown as PathEntry); // decided below
    } else if (!index.has(form) && present) {
      keys.splice(at, 1);
      entries.splice(at, 1);
    }
  }
  const redo = new Set<string>();
  for (const form of touched) {
    if (!form.endsWith('/')) {
      if (index.has(form)) redo.add(form);
      continue;
    }
    // A subtree form is a prefix of the keys that start with it: a run in sorted order.
    for (let at = lowerBound(keys, form); at < keys.length && keys[at].startsWith(form); at++) redo.add(keys[at]);
  }
  const covering = coversIn(index);
  for (const text of [...redo].sort()) {
    const at = lowerBound(keys, text);
    const e = pathEntry(paths.roleId, text, covering(text).map(decide), paths.defaultMode);
    const before = entries[at];
    // An entry that comes out the same stays the same object: the table writer skips it.
    entries[at] = before && sameVerdicts(before.verdicts, e.verdicts) ? before : e;
  }
}

function sameVerdicts(a: Verdict[], b: Verdict[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i];
    const y = b[i];
    if (x === y) continue;
    if (!x || !y) return false;
    if (x.policyId !== y.policyId || x.ruleId !== y.ruleId || x.action !== y.action || x.mode !== y.mode || x.rank !== y.rank || x.condList !== y.condList) return false;
  }
  return true;
}

/** The first index whose key is not below `text` (code unit order, as sort()). */
function lowerBound(keys: string[], text: string): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (keys[mid] < text) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
