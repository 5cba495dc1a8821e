// The reference evaluator: POLICY.md's decision algorithm, written as plainly as
// possible over the parsed policies. The compiler builds the kernel's tables
// independently; tests compare the two, so a difference is a bug in one of them.
//
// One algorithm, decide() below, serves every verb, every target form and every `when` key,
// given the acting process's context: evaluateOperation() answers with the outcome (the
// differential tests, `helmctl policy test`), traceOperation() also says which rules matched at
// each step (`helmctl policy explain`).
import { addressBytes, type IpBytes } from './ip';
import type { Conditions, FileVerb, Mode, NetTarget, PathTarget, Policy, Rule, SocketTarget, Target, Verb } from './types';

export interface FileOperation {
  role: string;
  verb: FileVerb;
  /** The path the kernel resolved (absolute, canonical). */
  path: string;
  /** Directories are matched as "<dir>/" so that a subtree rule covers the directory itself. */
  isDir?: boolean;
}

export type NetVerb = Exclude<Verb, FileVerb>;

export interface NetOperation {
  role: string;
  verb: NetVerb;
  /**
   * The destination (connect) or local (bind) address, IPv4 or IPv6 text. An IPv4-mapped IPv6
   * address (::ffff:a.b.c.d) is matched as its IPv4 address. Undefined when only the host name
   * is known: then no address or CIDR rule matches (only `*`, host names and domains can).
   */
  addr?: string;
  port: number;
  /** The host name the agent looked the address up as, when known (compared case-insensitively). */
  host?: string;
  /** A connect to a socket that is not an IP destination (then addr, port and host are unused). */
  socket?: SocketSubject;
}

/** A unix socket's path (as the kernel resolved it) or abstract name; a raw IP protocol; a packet socket's EtherType. */
export type SocketSubject =
  | { family: 'unix'; path: string }
  | { family: 'unix'; abstract: string }
  | { family: 'raw' | 'packet'; protocol: number };

/** What is known about the acting process, for `when` conditions other than role. */
export interface OperationContext {
  /** The acting process's executable (absolute, canonical). */
  exe?: string;
  uid?: number;
  /** The labels the agent was attached with. */
  labels?: Record<string, string>;
}

export type Operation = (FileOperation | NetOperation) & OperationContext;

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

/** A rule that matched the operation, with the (first) target of the operation's verb that covers it. */
export interface RuleMatch {
  policy: Policy;
  rule: Rule;
  target: Target;
}

export type ConditionKey = 'role' | 'exe' | 'label' | 'uid';

export interface ConditionCheck {
  key: ConditionKey;
  holds: boolean;
  /** Why, in words: `role "x" is one of [a, x]`. */
  detail: string;
}

/** A contextual rule's `when`, decided: it holds when every key present holds. */
export interface WhenCheck {
  holds: boolean;
  checks: ConditionCheck[];
}

export interface ContextualMatch extends RuleMatch {
  when: WhenCheck;
}

/** Which precedence step decided. */
export type Step = 'no-policy' | 'block' | 'contextual' | 'allow' | 'default';

/** Everything the algorithm looked at: the matches of every step (also those not reached) and the outcome. */
export interface Trace {
  governing: Policy[];
  block: RuleMatch[];
  contextual: ContextualMatch[];
  allow: RuleMatch[];
  step: Step;
  /** The match that decided (undefined for the default and no-policy denials). */
  decidedBy?: RuleMatch;
  outcome: Outcome;
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

/** Enforce before dry-run, then policy name, then rule order: the report is deterministic. */
function pickReported<C extends { policy: Policy; rule: Rule }>(cands: C[]): C {
  return [...cands].sort((a, b) => {
    const m = (a.policy.mode === 'enforce' ? 0 : 1) - (b.policy.mode === 'enforce' ? 0 : 1);
    if (m) return m;
    if (a.policy.name !== b.policy.name) return a.policy.name < b.policy.name ? -1 : 1;
    return a.policy.rules.indexOf(a.rule) - b.policy.rules.indexOf(b.rule);
  })[0];
}

/** The default deny is enforced unless every policy governing the role is in dry-run. */
export function defaultMode(policies: Policy[], role: string): Mode {
  const governing = policies.filter((p) => governs(p, role));
  return governing.length > 0 && governing.every((p) => p.mode === 'dry-run') ? 'dry-run' : 'enforce';
}

function outcome(action: 'allow' | 'deny', mode: Mode, reason: Outcome['reason'], c?: RuleMatch): Outcome {
  const decision: Decision = action === 'allow' ? 'allow' : mode === 'dry-run' ? 'would_deny' : 'deny';
  return { decision, action, mode, reason, policy: c?.policy.name, rule: c?.rule.id };
}

/**
 * POLICY.md's decision, the one copy of it in TypeScript: `matchOf` says whether (and by which
 * target) a rule covers the operation, `whenOf` decides a contextual rule's conditions.
 */
function decide(policies: Policy[], role: string, matchOf: (rule: Rule) => Target | undefined, whenOf: (rule: Rule) => WhenCheck): Trace {
  const governing = policies.filter((p) => governs(p, role));
  const matching = (kind: Rule['kind']): RuleMatch[] =>
    governing.flatMap((policy) =>
      policy.rules.flatMap((rule) => {
        if (rule.kind !== kind) return [];
        const target = matchOf(rule);
        return target === undefined ? [] : [{ policy, rule, target }];
      }),
    );
  const block = matching('block');
  const contextual = matching('contextual').map((m) => ({ ...m, when: whenOf(m.rule) }));
  const allow = matching('allow');
  const trace = (step: Step, out: Outcome, decidedBy?: RuleMatch): Trace => ({ governing, block, contextual, allow, step, decidedBy, outcome: out });

  if (governing.length === 0) return trace('no-policy', outcome('deny', 'enforce', 'no-policy'));
  if (block.length) {
    const c = pickReported(block);
    return trace('block', outcome('deny', c.policy.mode, 'rule', c), c);
  }
  if (contextual.length) {
    const holding = contextual.filter((c) => c.when.holds);
    if (holding.length) {
      const c = pickReported(holding);
      return trace('contextual', outcome('allow', 'enforce', 'rule', c), c);
    }
    const c = pickReported(contextual);
    return trace('contextual', outcome('deny', c.policy.mode, 'rule', c), c);
  }
  if (allow.length) {
    const c = pickReported(allow);
    return trace('allow', outcome('allow', 'enforce', 'rule', c), c);
  }
  return trace('default', outcome('deny', defaultMode(policies, role), 'default'));
}

/** The first target of the operation's verb in `rule` that covers the operation. */
function fileMatch(rule: Rule, op: FileOperation): Target | undefined {
  return rule.verbs[op.verb]?.find((t) => t.kind === 'path' && pathMatches(t, op.path, op.isDir ?? false));
}

// ---------------------------------------------------------------------------------------------
// The whole language

export function isNetOperation(op: FileOperation | NetOperation): op is NetOperation {
  return op.verb === 'connect' || op.verb === 'bind';
}

/** POLICY.md's decision for any operation, given what is known of the acting process. */
export function evaluateOperation(policies: Policy[], op: Operation): Outcome {
  return traceOperation(policies, op).outcome;
}

/** The decision and every match that went into it (for `helmctl policy explain`). */
export function traceOperation(policies: Policy[], op: Operation): Trace {
  let matchOf: (rule: Rule) => Target | undefined;
  if (isNetOperation(op) && op.socket) {
    const socket = op.socket;
    matchOf = (rule) => rule.verbs[op.verb]?.find((t) => t.kind === 'socket' && socketMatches(t, socket));
  } else if (isNetOperation(op)) {
    const subject = netSubject(op);
    matchOf = (rule) => rule.verbs[op.verb]?.find((t) => t.kind === 'net' && netMatches(t, subject));
  } else {
    matchOf = (rule) => fileMatch(rule, op);
  }
  return decide(policies, op.role, matchOf, (rule) => checkWhen(rule.when, op));
}

/** Every key present must hold (AND); within a key, any element (OR). An unknown fact never holds. */
export function checkWhen(when: Conditions | undefined, op: Operation): WhenCheck {
  if (!when) return { holds: false, checks: [] };
  const checks: ConditionCheck[] = [];
  if (when.role !== undefined) {
    const holds = when.role.includes(op.role);
    checks.push({ key: 'role', holds, detail: `role ${q(op.role)} is ${holds ? '' : 'not '}one of [${when.role.join(', ')}]` });
  }
  if (when.exe !== undefined) {
    const listed = `[${when.exe.map((t) => t.canonical).join(', ')}]`;
    if (op.exe === undefined) {
      checks.push({ key: 'exe', holds: false, detail: `the executable is not known (the condition needs one of ${listed})` });
    } else {
      const hit = when.exe.find((t) => pathMatches(t, op.exe as string, false));
      const detail =
        hit === undefined
          ? `exe ${op.exe} matches none of ${listed}`
          : `exe ${op.exe} is ${hit.subtree ? 'under ' : ''}${hit.canonical}`;
      checks.push({ key: 'exe', holds: hit !== undefined, detail });
    }
  }
  if (when.label !== undefined) {
    const labels = op.labels ?? {};
    const problems: string[] = [];
    for (const [k, v] of Object.entries(when.label)) {
      if (!Object.prototype.hasOwnProperty.call(labels, k)) problems.push(`label ${k} is not set (needs ${q(v)})`);
      else if (labels[k] !== v) problems.push(`label ${k} is ${q(labels[k])}, not ${q(v)}`);
    }
    const wanted = Object.entries(when.label).map(([k, v]) => `${k}=${v}`).join(', ');
    checks.push({ key: 'label', holds: problems.length === 0, detail: problems.length === 0 ? `labels match ${wanted}` : problems.join('; ') });
  }
  if (when.uid !== undefined) {
    const listed = `[${when.uid.join(', ')}]`;
    if (op.uid === undefined) {
      checks.push({ key: 'uid', holds: false, detail: `the uid is not known (the condition needs one of ${listed})` });
    } else {
      const holds = when.uid.includes(op.uid);
      checks.push({ key: 'uid', holds, detail: `uid ${op.uid} is ${holds ? '' : 'not '}one of ${listed}` });
    }
  }
  return { holds: checks.length > 0 && checks.every((c) => c.holds), checks };
}

function q(s: string): string {
  return JSON.stringify(s);
}

// ---------------------------------------------------------------------------------------------
// Network targets

/** Does a unix/raw/packet target cover this socket? */
export function socketMatches(t: SocketTarget, s: SocketSubject): boolean {
  const k = t.socket;
  if (k.family !== s.family) return false;
  if ('path' in k) return 'path' in s && pathMatches(k.path, s.path, false);
  if ('abstract' in k) return 'abstract' in s && (k.abstract === '*' || k.abstract === s.abstract);
  return 'protocol' in s && (k.protocol === '*' || k.protocol === s.protocol);
}

/** An IP address as bytes: 4 for IPv4 (IPv4-mapped IPv6 included), 16 for IPv6. */
export type { IpBytes } from './ip';

/** The operation's side of a network match, normalised once. */
interface NetSubject {
  ip?: IpBytes;
  host?: string;
  port: number;
}

function netSubject(op: NetOperation): NetSubject {
  if (op.addr === undefined && op.host === undefined) throw new Error('a network operation needs an address or a host name');
  if (!Number.isInteger(op.port) || op.port < 0 || op.port > 65535) throw new Error(`bad port ${op.port}`);
  const ip = op.addr === undefined ? undefined : ipBytes(op.addr);
  if (op.addr !== undefined && ip === undefined) throw new Error(`not an IP address: ${q(op.addr)}`);
  return { ip, host: op.host === undefined ? undefined : normalHost(op.host), port: op.port };
}

/** DNS names are case-insensitive, and "name." is the same name as "name". */
export function normalHost(host: string): string {
  const h = host.toLowerCase();
  return h.endsWith('.') ? h.slice(0, -1) : h;
}

function netMatches(t: NetTarget, s: NetSubject): boolean {
  if (s.port < t.ports.from || s.port > t.ports.to) return false;
  const a = t.address;
  switch (a.type) {
    case 'any':
      return true;
    case 'host':
      return s.host !== undefined && s.host === a.name;
    case 'domain':
      return s.host !== undefined && s.host.endsWith(`.${a.suffix}`);
    case 'ip': {
      if (s.ip === undefined) return false;
      const n = ruleNetwork(a);
      return n.bytes.length === s.ip.length && inNetwork(s.ip, n.bytes, n.prefix);
    }
  }
}

/**
 * A rule's address or CIDR in the form operations are compared in: an IPv4-mapped IPv6 network
 * inside ::ffff:0:0/96 is the IPv4 network it maps. Any other IPv6 network, [::/0] included,
 * matches IPv6 addresses only (`*` is any address of either family).
 */
export function ruleNetwork(a: { family: 4 | 6; addr: string; prefix: number }): { bytes: IpBytes; prefix: number } {
  const bytes = addressBytes(a.addr);
  if (bytes === undefined || bytes.length !== (a.family === 4 ? 4 : 16)) throw new Error(`bad address in a rule: ${q(a.addr)}`);
  if (bytes.length === 16 && a.prefix >= 96 && isMappedPrefix(bytes)) return { bytes: bytes.slice(12), prefix: a.prefix - 96 };
  return { bytes, prefix: a.prefix };
}

const MAPPED_PREFIX = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

function isMappedPrefix(b: IpBytes): boolean {
  return MAPPED_PREFIX.every((x, i) => b[i] === x);
}

/** Is `ip` in network/prefix? (Both of one family: the caller compares lengths.) */
export function inNetwork(ip: IpBytes, network: IpBytes, prefix: number): boolean {
  for (let i = 0; i < network.length; i++) {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    const mask = (0xff << (8 - bits)) & 0xff;
    if ((ip[i] & mask) !== (network[i] & mask)) return false;
  }
  return true;
}

/**
 * An operation's address as bytes, an IPv4-mapped IPv6 address as its IPv4 address; undefined
 * when the text is not an IPv4 or IPv6 address (a zone index "%eth0" included).
 */
export function ipBytes(s: string): IpBytes | undefined {
  const bytes = addressBytes(s);
  return bytes !== undefined && bytes.length === 16 && isMappedPrefix(bytes) ? bytes.slice(12) : bytes;
}

