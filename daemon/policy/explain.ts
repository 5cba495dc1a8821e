// `helmctl policy explain`: the decision for one operation and the chain of rules behind it,
// step by step in POLICY.md's order (block, contextual, allow, default), as text or JSON. The
// decision is the reference evaluator's (./evaluate.ts: traceOperation), never recomputed here.

import { canonicalPath, parseOperationTarget, pathProblem, type ParsedTarget } from './cases';
import { ipBytes, isNetOperation, traceOperation, type ConditionCheck, type NetVerb, type Operation, type RuleMatch, type Step, type Trace } from './evaluate';
import type { FileVerb, Mode, Policy, RuleKind, Target, Verb } from './types';

export interface ExplainedMatch {
  policy: string;
  rule: string;
  kind: RuleKind;
  /** The rule's mode: its policy's. */
  mode: Mode;
  /** The target that covers the operation, as written, and where. */
  target: string;
  at: string;
  /** Contextual rules only. */
  when?: { holds: boolean; conditions: ConditionCheck[] };
}

export interface ExplainedStep {
  step: Exclude<Step, 'no-policy'>;
  /** decided: this step made the decision; passed: reached, nothing decided; not-reached: an earlier step decided. */
  status: 'decided' | 'passed' | 'not-reached';
  matches: ExplainedMatch[];
  /** What this step decides when it decides (or would have, had it been reached). */
  result?: 'allow' | 'deny';
}

export interface Explanation {
  operation: Record<string, unknown>;
  governing: { policy: string; mode: Mode; roles: string[] }[];
  chain: ExplainedStep[];
  decidedBy: Step;
  decision: 'allow' | 'deny' | 'would_deny';
  action: 'allow' | 'deny';
  mode: Mode;
  /** The deciding policy and rule; absent for the default and no-policy denials. */
  policy?: string;
  rule?: string;
  reason: 'rule' | 'default' | 'no-policy';
  /** Things worth knowing about this answer (e.g. no policy governs the role, no address given, dry-run). */
  notes: string[];
}

export function explain(policies: Policy[], op: Operation): Explanation {
  return explainTrace(traceOperation(policies, op), op);
}

export function explainTrace(t: Trace, op: Operation): Explanation {
  const o = t.outcome;
  const order: Exclude<Step, 'no-policy'>[] = ['block', 'contextual', 'allow', 'default'];
  const decidedAt = t.step === 'no-policy' ? -1 : order.indexOf(t.step);
  const chain: ExplainedStep[] = order.map((step, i) => {
    const status = decidedAt < 0 ? 'not-reached' : i < decidedAt ? 'passed' : i === decidedAt ? 'decided' : 'not-reached';
    if (step === 'default') return { step, status, matches: [], ...(status === 'decided' && { result: 'deny' as const }) };
    const list: RuleMatch[] = step === 'block' ? t.block : step === 'contextual' ? t.contextual : t.allow;
    const matches = list.map((m) => matchOf(m, t));
    const result: 'allow' | 'deny' | undefined =
      list.length === 0 ? undefined : step === 'block' ? 'deny' : step === 'allow' ? 'allow' : t.contextual.some((c) => c.when.holds) ? 'allow' : 'deny';
    return { step, status, matches, ...(result !== undefined && { result }) };
  });
  const notes: string[] = [];
  if (t.step === 'no-policy') notes.push(`no policy governs role ${JSON.stringify(op.role)}: everything it does is denied`);
  if (isNetOperation(op) && op.addr === undefined) notes.push('no address given (--addr): address and CIDR rules cannot match; only "*", host names and domains can');
  return {
    operation: describeOperation(op),
    governing: t.governing.map((p) => ({ policy: p.name, mode: p.mode, roles: p.roles })),
    chain,
    decidedBy: t.step,
    decision: o.decision,
    action: o.action,
    mode: o.mode,
    ...(o.policy !== undefined && { policy: o.policy }),
    ...(o.rule !== undefined && { rule: o.rule }),
    reason: o.reason,
    notes,
  };
}

function matchOf(m: RuleMatch, t: Trace): ExplainedMatch {
  const c = t.contextual.find((x) => x.rule === m.rule && x.policy === m.policy);
  return {
    policy: m.policy.name,
    rule: m.rule.id,
    kind: m.rule.kind,
    mode: m.policy.mode,
    target: m.target.written,
    at: where(m.target),
    ...(c !== undefined && { when: { holds: c.when.holds, conditions: c.when.checks } }),
  };
}

function where(t: Target): string {
  return `${t.loc.file}:${t.loc.line}:${t.loc.col}`;
}

function describeOperation(op: Operation): Record<string, unknown> {
  const out: Record<string, unknown> = { role: op.role, verb: op.verb };
  if (isNetOperation(op)) {
    if (op.host !== undefined) out.host = op.host;
    if (op.addr !== undefined) out.addr = op.addr;
    out.port = op.port;
  } else {
    out.path = op.path;
    out.isDir = op.isDir ?? false;
  }
  if (op.exe !== undefined) out.exe = op.exe;
  if (op.uid !== undefined) out.uid = op.uid;
  if (op.labels !== undefined) out.labels = op.labels;
  return out;
}

/** The operation in one line, e.g. `role coding-agent: connect registry.npmjs.org:443 (exe /usr/bin/node)`. */
export function operationLine(op: Operation): string {
  let target: string;
  if (isNetOperation(op)) {
    const a = op.addr === undefined ? undefined : op.addr.includes(':') ? `[${op.addr}]` : op.addr;
    target = op.host !== undefined ? `${op.host}:${op.port}${a ? ` (address ${a})` : ''}` : `${a}:${op.port}`;
  } else {
    target = op.isDir && op.path !== '/' ? `${op.path}/` : op.path;
  }
  const ctx: string[] = [];
  if (op.exe !== undefined) ctx.push(`exe ${op.exe}`);
  if (op.uid !== undefined) ctx.push(`uid ${op.uid}`);
  if (op.labels !== undefined && Object.keys(op.labels).length) ctx.push(`labels ${Object.entries(op.labels).map(([k, v]) => `${k}=${v}`).join(', ')}`);
  return `role ${op.role}: ${op.verb} ${target}${ctx.length ? ` (${ctx.join(', ')})` : ''}`;
}

/** The text form: the operation, who governs it, each step, the decision. */
export function formatExplanation(e: Explanation, op: Operation): string {
  const lines: string[] = [];
  lines.push(`operation:  ${operationLine(op)}`);
  lines.push(`governed by: ${e.governing.length ? e.governing.map((g) => `${g.policy} (${g.mode})`).join(', ') : 'no policy'}`);
  e.chain.forEach((s, i) => {
    const head = `${i + 1}. ${s.step.padEnd(11)}`;
    const status = s.status === 'not-reached' ? ' (not reached)' : '';
    if (s.step === 'default') {
      const text = s.status === 'decided' ? `no rule matches: ${e.decision}${e.decision === 'would_deny' ? ' (every policy governing the role is in dry-run)' : ''}` : 'not reached';
      lines.push(`${head} ${text}`);
      return;
    }
    if (s.matches.length === 0) {
      lines.push(`${head} no rule matches${status}`);
      return;
    }
    lines.push(`${head} ${s.matches.length} rule${s.matches.length === 1 ? '' : 's'} match${s.matches.length === 1 ? 'es' : ''}${status}`);
    for (const m of s.matches) {
      const deciding = s.status === 'decided' && m.policy === e.policy && m.rule === e.rule ? '  <- decides' : '';
      lines.push(`     ${m.policy}/${m.rule}: ${e.operation.verb} ${m.target} (${m.at})${m.mode === 'dry-run' ? ' [dry-run]' : ''}${deciding}`);
      if (m.when) {
        lines.push(`       when ${m.when.holds ? 'holds' : 'does not hold'}:`);
        for (const c of m.when.conditions) lines.push(`         ${c.holds ? 'yes' : 'no '} ${c.key}: ${c.detail}`);
      }
    }
    if (s.step === 'contextual' && s.status === 'decided' && s.result === 'deny') {
      lines.push('     no matching contextual rule\'s when holds: deny (contextual rules override allow rules)');
    }
  });
  const by = e.policy !== undefined ? ` by ${e.policy}/${e.rule} (${e.decidedBy} rule)` : e.reason === 'no-policy' ? ' (no policy governs the role)' : ' by the default';
  lines.push(`decision:   ${e.decision}${by}, mode ${e.mode}`);
  for (const n of e.notes) lines.push(`note: ${n}`);
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// The operation from the command line

export interface ExplainOptions {
  role: string;
  exe?: string;
  uid?: string;
  /** KEY=VALUE each. */
  label?: string[];
  addr?: string;
  dir?: boolean;
}

const ROLE_RE = /^[A-Za-z0-9_.-]+$/;
const MAX_UID = 0xfffffffe;

/** The operation `helmctl policy explain` is asked about, or why the arguments do not make one. */
export function operationFromOptions(verb: Verb, targetText: string, o: ExplainOptions, canonicalize: (p: string) => string): Operation | string {
  const q = JSON.stringify;
  if (!ROLE_RE.test(o.role)) return `bad role ${q(o.role)}: an agent's role is letters, digits, ".", "_" and "-"`;
  let target: ParsedTarget | string;
  try {
    target = parseOperationTarget(verb, targetText, canonicalize);
  } catch (e) {
    target = `cannot be canonicalised: ${(e as Error).message}`;
  }
  if (typeof target === 'string') return `${verb} target ${q(targetText)} ${target}`;
  const context: { exe?: string; uid?: number; labels?: Record<string, string> } = {};
  if (o.exe !== undefined) {
    const problem = pathProblem(o.exe);
    if (problem) return `--exe ${q(o.exe)} ${problem}`;
    context.exe = canonicalPath(o.exe, canonicalize);
  }
  if (o.uid !== undefined) {
    if (!/^(0|[1-9][0-9]*)$/.test(o.uid) || Number(o.uid) > MAX_UID) return `--uid must be a uid (0-${MAX_UID}), got ${q(o.uid)}`;
    context.uid = Number(o.uid);
  }
  if (o.label?.length) {
    const labels = labelsFromOptions(o.label);
    if (typeof labels === 'string') return labels;
    context.labels = labels;
  }
  if (target.kind === 'path') {
    if (o.addr !== undefined) return '--addr is for a HOST:PORT target';
    return { role: o.role, verb: verb as FileVerb, path: target.path, isDir: (o.dir ?? false) || target.isDir, ...context };
  }
  if (o.dir) return '--dir is for read, write and exec';
  if (target.kind === 'socket') {
    if (o.addr !== undefined) return '--addr is for a HOST:PORT target';
    return { role: o.role, verb: 'connect', port: 0, socket: target.socket, ...context };
  }
  if (o.addr !== undefined) {
    if (target.host === undefined) return '--addr is for a HOST:PORT target (the target already is an address)';
    if (ipBytes(o.addr) === undefined) return `--addr ${q(o.addr)} is not an IPv4 or IPv6 address`;
  }
  const addr = target.addr ?? o.addr;
  return { role: o.role, verb: verb as NetVerb, port: target.port, ...(target.host !== undefined && { host: target.host }), ...(addr !== undefined && { addr }), ...context };
}

/** `--label KEY=VALUE` options as a labels object, or what is wrong with them. */
export function labelsFromOptions(options: readonly string[]): Record<string, string> | string {
  const labels: Record<string, string> = {};
  for (const l of options) {
    const eq = l.indexOf('=');
    if (eq <= 0) return `--label must be KEY=VALUE, got ${JSON.stringify(l)}`;
    const k = l.slice(0, eq);
    // Assigned to a plain object, "__proto__" would set its prototype and the label would vanish.
    if (k === '__proto__') return '--label cannot have the key "__proto__"';
    if (Object.prototype.hasOwnProperty.call(labels, k)) return `--label ${k} is given twice`;
    labels[k] = l.slice(eq + 1);
  }
  return labels;
}
