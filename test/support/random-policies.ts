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

