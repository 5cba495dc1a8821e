// The reference evaluator: POLICY.md's decision algorithm, written as plainly as
// possible over the parsed policies. The compiler builds the kernel's tables
// independently; tests compare the two, so a difference is a bug in one of them.
import type { FileVerb, Mode, Policy, Rule, PathTarget } from './types';

export interface FileOperation {
  role: string;
  verb: FileVerb;
  /** The path the kernel resolved (absolute, canonical). */
  path: string;
  /** Directories are matched as "<dir>/" so that a subtree rule covers the directory itself. */
  isDir?: boolean;
}

export type Decision = 'allow' | 'deny' | 'would_deny';

export interface Outcome {
  decision: Decision;
  /** What the policy said before the mode was applied. */
  action: 'allow' | 'deny';
  mode: Mode;
  /** The deciding policy and rule; undefined for the default deny. */
  policy?: string;
  rule?: string;
  reason: 'rule' | 'default' | 'no-policy';
}

export function governs(policy: Policy, role: string): boolean {
  return policy.roles.includes('*') || policy.roles.includes(role);
}

/** Does a path target cover this operation's path? */
export function pathMatches(target: PathTarget, path: string, isDir: boolean): boolean {
  const subject = isDir && !path.endsWith('/') ? `${path}/` : path;
  if (target.subtree) return subject.startsWith(target.canonical);
  return subject === target.canonical || (isDir && subject === `${target.canonical}/`);
}

/**
 * The conditions a contextual rule can have, evaluated for a role alone. Only
 * `role` can be decided without knowing the acting process; other keys are
 * refused by the compiler until the kernel can see them.
 */
export function whenHoldsForRole(rule: Rule, role: string): boolean {
  const when = rule.when;
  if (!when) return false;
  return when.role === undefined || when.role.includes(role);
}

interface Candidate {
  policy: Policy;
  rule: Rule;
}

/** Enforce before dry-run, then policy name, then rule order: the report is deterministic. */
function pickReported(cands: Candidate[]): Candidate {
  return [...cands].sort((a, b) => {
    const m = (a.policy.mode === 'enforce' ? 0 : 1) - (b.policy.mode === 'enforce' ? 0 : 1);
    if (m) return m;
    if (a.policy.name !== b.policy.name) return a.policy.name < b.policy.name ? -1 : 1;
    return a.policy.rules.indexOf(a.rule) - b.policy.rules.indexOf(b.rule);
  })[0];
}

function ruleMatches(rule: Rule, op: FileOperation): boolean {
  const targets = rule.verbs[op.verb];
  if (!targets) return false;
  return targets.some((t) => t.kind === 'path' && pathMatches(t, op.path, op.isDir ?? false));
}

/** The default deny is enforced unless every policy governing the role is in dry-run. */
export function defaultMode(policies: Policy[], role: string): Mode {
  const governing = policies.filter((p) => governs(p, role));
  return governing.length > 0 && governing.every((p) => p.mode === 'dry-run') ? 'dry-run' : 'enforce';
}

function outcome(action: 'allow' | 'deny', mode: Mode, reason: Outcome['reason'], c?: Candidate): Outcome {
  const decision: Decision = action === 'allow' ? 'allow' : mode === 'dry-run' ? 'would_deny' : 'deny';
  return { decision, action, mode, reason, policy: c?.policy.name, rule: c?.rule.id };
}

export function evaluate(policies: Policy[], op: FileOperation): Outcome {
  const governing = policies.filter((p) => governs(p, op.role));
  if (governing.length === 0) return outcome('deny', 'enforce', 'no-policy');

  const matching = (kind: Rule['kind']): Candidate[] =>
    governing.flatMap((policy) =>
      policy.rules.filter((rule) => rule.kind === kind && ruleMatches(rule, op)).map((rule) => ({ policy, rule })),
    );

  const blocks = matching('block');
  if (blocks.length) {
    const c = pickReported(blocks);
    return outcome('deny', c.policy.mode, 'rule', c);
  }
  const contextual = matching('contextual');
  if (contextual.length) {
    const holding = contextual.filter((c) => whenHoldsForRole(c.rule, op.role));
    if (holding.length) return outcome('allow', 'enforce', 'rule', pickReported(holding));
    const c = pickReported(contextual);
    return outcome('deny', c.policy.mode, 'rule', c);
  }
  const allows = matching('allow');
  if (allows.length) return outcome('allow', 'enforce', 'rule', pickReported(allows));
  return outcome('deny', defaultMode(policies, op.role), 'default');
}
