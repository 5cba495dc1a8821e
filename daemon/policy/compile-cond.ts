// Contextual conditions that only the kernel can decide: `exe`, `label` and `uid` depend on the
// acting process and its agent, so the compiler cannot fold them into a verdict as it folds
// `role` (tables are per role). Instead, a verdict whose contextual rules have such conditions
// names a list (struct helm_cond_list) of those rules, in POLICY.md's report order, each with
// the allow it gives and a condition the kernel checks; the verdict itself is what holds when
// no condition in the list does. One list per distinct content, per generation.
//
// A condition is the `when` of a rule minus its role (already resolved):
//  - label: a bitmask over label pairs (key: value); the agent's own bits are written when it
//    is attached. Pair ids are stable across generations and only ever added (an attached
//    agent's bits must hold for every generation the kernel may still decide with), at most
//    HELM_MAX_LABEL_PAIRS of them.
//  - exe: the condition's id and the executable's path, looked up in an LPM trie keyed
//    (condition id, path) as the path table is: an exact executable ends in NUL, a directory
//    in '/', so one lookup answers "this path, or anything under this directory".
//  - uid: the condition's id and the uid, in a hash.
import { C, type CondListEntry, type Verdict } from '../kernel/layout';
import type { Conditions, PolicyDiagnostic, Rule } from './types';

/** The key a label pair is known by in label ids. */
export function labelPairKey(key: string, value: string): string {
  return JSON.stringify([key, value]);
}

/** The agent's label bits under these ids (pairs no condition names have no bit). */
export function labelBitsOf(labels: Record<string, string>, labelIds: ReadonlyMap<string, number>): bigint {
  let bits = 0n;
  for (const [k, v] of Object.entries(labels)) {
    const id = labelIds.get(labelPairKey(k, v));
    if (id !== undefined) bits |= 1n << BigInt(id - 1);
  }
  return bits;
}

/** Does the `when` need the acting process or its agent (not only its role)? */
export function hasRuntimeCondition(when: Conditions | undefined): boolean {
  return when !== undefined && (when.exe !== undefined || when.label !== undefined || when.uid !== undefined);
}

/** An executable as the kernel's exe table stores it: "<path>\0", or "<dir>/" for everything under it. */
function exeForm(canonical: string, subtree: boolean): Buffer {
  return Buffer.from(subtree ? canonical : `${canonical}\0`, 'utf8');
}

export interface CondEntry {
  condId: number;
  /** Stored forms for the exe table (empty: no exe condition). */
  exes: Buffer[];
  /** Sorted, distinct (empty: no uid condition). */
  uids: number[];
  labelBits: bigint;
  flags: number;
}

export interface CondListTable {
  listId: number;
  entries: CondListEntry[];
}

/** A contextual rule whose condition the kernel checks, with the allow it gives when it holds. */
export interface Conditional {
  rule: Rule;
  allow: Verdict;
}

/**
 * The condition and list tables of one generation. `labelIds` (label pair → id, 1-based) is
 * extended in place with the pairs this generation's conditions name.
 */
export class ConditionTables {
  readonly conds: CondEntry[] = [];
  readonly lists: CondListTable[] = [];
  private readonly condByKey = new Map<string, CondEntry>();
  private readonly condByRule = new Map<Rule, CondEntry | undefined>();
  private readonly listByKey = new Map<string, number>();
  private readonly reported = new Set<string>();

  /**
   * Label pairs get their ids here, in the order the policies and their rules are given (the
   * compiler gives them in name order): so ids, and which pair is one too many, do not depend
   * on which targets the rules cover.
   */
  constructor(
    readonly labelIds: Map<string, number>,
    rules: Rule[],
    private readonly errors: PolicyDiagnostic[],
  ) {
    for (const rule of rules) {
      const label = rule.when?.label;
      if (label) for (const [k, v] of Object.entries(label)) this.labelId(rule, k, v); // most rules have none: nothing allocated for them
    }
  }

  private error(loc: PolicyDiagnostic['loc'], message: string): void {
    const k = `${loc.file}:${loc.line}:${loc.col}:${message}`;
    if (this.reported.has(k)) return;
    this.reported.add(k);
    this.errors.push({ severity: 'error', loc, message });
  }

  private labelId(rule: Rule, key: string, value: string): number | undefined {
    const pair = labelPairKey(key, value);
    let id = this.labelIds.get(pair);
    if (id === undefined) {
      id = Math.max(0, ...this.labelIds.values()) + 1;
      if (id > C.HELM_MAX_LABEL_PAIRS) {
        this.error(
          rule.when!.loc,
          `label ${key}: ${value} would be the ${id}th distinct label pair in conditions; the kernel tells at most ${C.HELM_MAX_LABEL_PAIRS} apart (pairs keep their ids while helmd runs)`,
        );
        return undefined;
      }
      this.labelIds.set(pair, id);
    }
    return id;
  }

  /** The condition of a rule's `when` besides its role. */
  private condOf(rule: Rule): CondEntry | undefined {
    if (this.condByRule.has(rule)) return this.condByRule.get(rule);
    const when = rule.when!;
    let labelBits = 0n;
    for (const [k, v] of Object.entries(when.label ?? {})) {
      const id = this.labelId(rule, k, v);
      if (id !== undefined) labelBits |= 1n << BigInt(id - 1);
    }
    const exes = [...new Map((when.exe ?? []).map((t) => [t.canonical, exeForm(t.canonical, t.subtree)])).values()].sort(Buffer.compare);
    const uids = [...new Set(when.uid ?? [])].sort((a, b) => a - b);
    const flags = (when.exe !== undefined ? C.HELM_COND_EXE : 0) | (when.uid !== undefined ? C.HELM_COND_UID : 0);
    const key = JSON.stringify([labelBits.toString(16), flags, exes.map((b) => b.toString('hex')), uids]);
    let cond = this.condByKey.get(key);
    if (!cond) {
      cond = { condId: this.conds.length + 1, exes, uids, labelBits, flags };
      this.conds.push(cond);
      this.condByKey.set(key, cond);
    }
    this.condByRule.set(rule, cond);
    return cond;
  }

  /**
   * The id of the list trying these rules in this order (POLICY.md's report order). More than
   * the kernel holds is a located error (at the first rule that does not fit); returns 0 then.
   */
  listOf(rules: Conditional[], role: string): number {
    if (rules.length > C.HELM_COND_LIST_LEN) {
      const names = rules.map((r) => r.rule.id).join(', ');
      this.error(
        rules[C.HELM_COND_LIST_LEN].rule.when!.loc,
        `for role ${JSON.stringify(role)}, ${rules.length} contextual rules with exe, label or uid conditions cover the same target (${names}); the kernel tries at most ${C.HELM_COND_LIST_LEN} for one target`,
      );
      return 0;
    }
    const entries: CondListEntry[] = [];
    for (const r of rules) {
      const cond = this.condOf(r.rule);
      if (!cond) return 0; // reported
      entries.push({ verdict: r.allow, condId: cond.condId, labelBits: cond.labelBits, flags: cond.flags });
    }
    const key = JSON.stringify(entries.map((e) => [e.verdict.policyId, e.verdict.ruleId, e.condId]));
    let id = this.listByKey.get(key);
    if (id === undefined) {
      id = this.lists.length + 1;
      this.lists.push({ listId: id, entries });
      this.listByKey.set(key, id);
    }
    return id;
  }
}
