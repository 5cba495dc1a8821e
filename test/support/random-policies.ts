// Random policies for the compiler's tests (seeded: the same Rng gives the same policies).
// Paths are short and share segments, so rules often cover each other's keys.
import { stringify } from 'yaml';
import type { Rng } from '../rng';
import { FILE_VERBS } from '../../daemon/policy/types';
import { randomWhen } from './conditions';

export interface PolicyDoc {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
  spec: Record<string, unknown>;
}

const SEGMENTS = ['a', 'b', 'bc', 'ab', 'é', 'x y'];

export function randomPath(rng: Rng, maxDepth: number): string {
  const depth = rng.int(maxDepth + 1);
  return '/' + Array.from({ length: depth }, () => rng.pick(SEGMENTS)).join('/');
}

/** A rule path: exact ("/a/b") or subtree ("/a/b/", "/"). */
export function randomTarget(rng: Rng): string {
  const p = randomPath(rng, 3);
  if (p === '/') return '/'; // written "/", it is the whole tree
  return rng.chance(0.5) ? `${p}/` : p;
}

export const RANDOM_ROLES = ['r1', 'r2', 'r3'];
/** r4 is governed only by "*" policies; the daemon compiles attached agents' roles as extraRoles. */
export const EVAL_ROLES = [...RANDOM_ROLES, 'r4'];

export function randomPolicyYaml(rng: Rng, name: string): string {
  return stringify(randomPolicyDoc(rng, name));
}

/** A policy document (as YAML would hold it) with allow, block and contextual rules on role alone. */
export function randomPolicyDoc(rng: Rng, name: string): PolicyDoc {
  const roles = rng.chance(0.25) ? ['*'] : rng.subset(RANDOM_ROLES);
  const spec: Record<string, unknown> = { roles, mode: rng.chance(0.4) ? 'dry-run' : 'enforce' };
  for (const kind of ['allow', 'block', 'contextual'] as const) {
    const n = rng.int(kind === 'allow' ? 4 : 3);
    if (n === 0) continue;
    spec[kind] = Array.from({ length: n }, (_, i) => {
      const rule: Record<string, unknown> = rng.chance(0.7) ? { id: `${kind}-${i}` } : {};
      for (const verb of rng.subset(FILE_VERBS)) rule[verb] = Array.from({ length: 1 + rng.int(3) }, () => randomTarget(rng));
      if (kind === 'contextual') rule.when = { role: rng.subset(roles[0] === '*' ? EVAL_ROLES : roles) };
      return rule;
    });
  }
  return { apiVersion: 'helm/v1', kind: 'Policy', metadata: { name }, spec };
}

/** As randomPolicyYaml, with contextual conditions on exe, label and uid (and role, sometimes). */
export function randomConditionalPolicyYaml(rng: Rng, name: string): string {
  return stringify(randomConditionalPolicyDoc(rng, name));
}

export function randomConditionalPolicyDoc(rng: Rng, name: string): PolicyDoc {
  const roles = rng.chance(0.25) ? ['*'] : rng.subset(RANDOM_ROLES);
  const spec: Record<string, unknown> = { roles, mode: rng.chance(0.4) ? 'dry-run' : 'enforce' };
  for (const kind of ['allow', 'block', 'contextual'] as const) {
    const n = kind === 'contextual' ? 1 + rng.int(2) : rng.int(kind === 'allow' ? 4 : 2);
    if (n === 0) continue;
    spec[kind] = Array.from({ length: n }, (_, i) => {
      const rule: Record<string, unknown> = rng.chance(0.7) ? { id: `${kind}-${i}` } : {};
      for (const verb of rng.subset(FILE_VERBS)) rule[verb] = Array.from({ length: 1 + rng.int(3) }, () => randomTarget(rng));
      if (kind === 'contextual') rule.when = rng.chance(0.2) ? { role: rng.subset(roles[0] === '*' ? EVAL_ROLES : roles) } : randomWhen(rng, roles[0] === '*' ? EVAL_ROLES : roles);
      return rule;
    });
  }
  return { apiVersion: 'helm/v1', kind: 'Policy', metadata: { name }, spec };
}

/** The names random policy sets draw from (randomEdit adds and removes policies among them). */
export const POLICY_NAMES = ['p0', 'p1', 'p2', 'p3', 'p4'];
const KINDS = ['allow', 'block', 'contextual'] as const;

type RuleDoc = Record<string, unknown>;

function rulesOf(doc: PolicyDoc, kind: (typeof KINDS)[number]): RuleDoc[] {
  return (doc.spec[kind] as RuleDoc[] | undefined) ?? [];
}

/** One random edit of the documents (in place), as a user makes them; returns what it did. */
export function randomEdit(rng: Rng, docs: PolicyDoc[], conditional: boolean): string {
  const doc = rng.pick(docs);
  const name = doc.metadata.name;
  const withRules = KINDS.filter((k) => rulesOf(doc, k).length > 0);
  const roles = doc.spec.roles as string[];
  const roleChoices = roles[0] === '*' ? EVAL_ROLES : roles;
  const what = rng.int(100);
  if (what < 45 && withRules.length) {
    // The common edit: one rule's targets.
    const kind = rng.pick(withRules);
    const rule = rng.pick(rulesOf(doc, kind));
    const verb = rng.pick(FILE_VERBS);
    if (rng.chance(0.3) && rule[verb]) (rule[verb] as string[]).push(randomTarget(rng));
    else rule[verb] = Array.from({ length: 1 + rng.int(3) }, () => randomTarget(rng));
    return `${name}: ${kind} rule ${String(rule.id)} ${verb} → ${JSON.stringify(rule[verb])}`;
  }
  if (what < 55) {
    const kind = rng.pick(KINDS);
    const list = rulesOf(doc, kind);
    const rule: RuleDoc = { id: `new-${rng.int(1000)}` };
    for (const verb of rng.subset(FILE_VERBS)) rule[verb] = Array.from({ length: 1 + rng.int(3) }, () => randomTarget(rng));
    if (kind === 'contextual') rule.when = { role: rng.subset(roleChoices) };
    list.splice(rng.int(list.length + 1), 0, rule);
    doc.spec[kind] = list;
    return `${name}: a ${kind} rule added`;
  }
  if (what < 63 && withRules.length) {
    const kind = rng.pick(withRules);
    const list = rulesOf(doc, kind);
    list.splice(rng.int(list.length), 1);
    if (list.length === 0) delete doc.spec[kind];
    return `${name}: a ${kind} rule removed`;
  }
  if (what < 68 && withRules.length) {
    const kind = rng.pick(withRules);
    const rule = rng.pick(rulesOf(doc, kind));
    rule.id = `renamed-${rng.int(1000)}`;
    return `${name}: a ${kind} rule renamed`;
  }
  if (what < 73 && rulesOf(doc, 'contextual').length) {
    const rule = rng.pick(rulesOf(doc, 'contextual'));
    rule.when = { role: rng.subset(roleChoices) };
    return `${name}: a contextual rule's roles → ${JSON.stringify(rule.when)}`;
  }
  if (what < 78) {
    doc.spec.mode = doc.spec.mode === 'enforce' ? 'dry-run' : 'enforce';
    return `${name}: mode → ${String(doc.spec.mode)}`;
  }
  if (what < 83) {
    doc.spec.roles = rng.chance(0.25) ? ['*'] : rng.subset(RANDOM_ROLES);
    // Role conditions name roles the policy has.
    for (const rule of rulesOf(doc, 'contextual')) {
      const when = rule.when as Record<string, unknown> | undefined;
      if (when?.role) when.role = rng.subset((doc.spec.roles as string[])[0] === '*' ? EVAL_ROLES : (doc.spec.roles as string[]));
    }
    return `${name}: roles → ${JSON.stringify(doc.spec.roles)}`;
  }
  if (what < 88) {
    const free = POLICY_NAMES.filter((n) => !docs.some((d) => d.metadata.name === n));
    if (free.length) {
      const added = rng.pick(free);
      docs.push(conditional && rng.chance(0.5) ? randomConditionalPolicyDoc(rng, added) : randomPolicyDoc(rng, added));
      return `policy ${added} added`;
    }
  }
  if (what < 93 && docs.length > 1) {
    docs.splice(docs.indexOf(doc), 1);
    return `policy ${name} removed`;
  }
  return 'nothing changed';
}
