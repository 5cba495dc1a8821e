// Test cases for policies (`helmctl policy test FILE... --cases CASES.yaml`) and the operation
// syntax that `helmctl policy explain` shares with them.
//
// A cases file is a YAML list; each item is one operation and the decision it must get:
//
//   - name: the agent reads its workspace      # optional
//     role: coding-agent
//     verb: read                               # read | write | exec | connect | bind
//     target: /srv/agent/workspace/README.md   # a path ("dir/" = a directory), or ADDRESS:PORT / HOST:PORT
//     isDir: false                             # optional, file verbs only (a trailing "/" says it too)
//     addr: 104.16.0.1                         # optional, with a HOST:PORT target: the address it resolved to
//     exe: /usr/bin/git                        # optional: the acting executable (when.exe)
//     uid: 1000                                # optional: the acting uid (when.uid)
//     labels: { team: tools }                  # optional: the agent's labels (when.label)
//     expect: allow                            # allow | deny | would_deny
//     rule: workspace                          # optional: the deciding rule: ID, POLICY/ID, or "default"
//
// Every problem is reported at once as `file:line:col: message`, like policy errors. Cases run
// against the reference evaluator (./evaluate.ts: evaluateOperation), i.e. the whole language,
// every verb and every `when` key (the kernel enforces the same decisions; the VM suites check it).

import * as net from 'net';
import { Document, LineCounter, Pair, YAMLMap, isMap, isScalar, isSeq, parseAllDocuments, visit } from 'yaml';
import { canonicalizeRulePath } from './canonical';
import { traceOperation, type Decision, type Operation, type Outcome, type SocketSubject, type Trace } from './evaluate';
import { RAW_PROTOCOLS, describe, hostNameProblem, linePosIn, nestingTooDeep, suggest, tooDeepMessage } from './parse';
import { FILE_VERBS, PolicyError, VERBS, type FileVerb, type Policy, type PolicyDiagnostic, type SourceLocation, type Verb } from './types';

export interface TestCase {
  /** As written, or generated from the operation. */
  name: string;
  /** The operation, paths canonicalised as the kernel would resolve them. */
  op: Operation;
  /** The target as written. */
  target: string;
  expect: Decision;
  /** The expected deciding rule as written: ID, POLICY/ID or "default". */
  rule?: string;
  loc: SourceLocation;
  ruleLoc?: SourceLocation;
}

export interface CaseOptions {
  /** Canonicalises an absolute path (default: ./canonical.ts, as rule paths are). */
  canonicalize?: (p: string) => string;
}

const CASE_KEYS = ['name', 'role', 'verb', 'target', 'isDir', 'addr', 'exe', 'uid', 'labels', 'expect', 'rule'];
const DECISIONS: readonly Decision[] = ['allow', 'deny', 'would_deny'];
const ROLE_RE = /^[A-Za-z0-9_.-]+$/;
const MAX_UID = 0xfffffffe;
/** A rule id (written, or generated as allow[0]), optionally after "POLICY/". */
const RULE_REF_RE = /^(?:[a-z0-9][a-z0-9._-]*\/)?(?:[A-Za-z0-9][A-Za-z0-9._-]*|(?:allow|block|contextual)\[(?:0|[1-9][0-9]*)\])$/;

// ---------------------------------------------------------------------------------------------
// Operation syntax (shared with explain)

export type ParsedTarget =
  | { kind: 'path'; path: string; isDir: boolean }
  | { kind: 'net'; addr?: string; host?: string; port: number }
  | { kind: 'socket'; socket: SocketSubject };

export function isFileVerb(verb: string): verb is FileVerb {
  return (FILE_VERBS as readonly string[]).includes(verb);
}

export function isVerb(verb: string): verb is Verb {
  return (VERBS as readonly string[]).includes(verb);
}

/**
 * An operation's target for `verb`: an absolute path for read/write/exec ("dir/" is a directory),
 * `ADDRESS:PORT`, `[IPv6]:PORT` or `HOST:PORT` for connect, an address for bind. Returns why not,
 * as the end of a sentence starting with the target, when it is not one.
 */
export function parseOperationTarget(verb: Verb, s: string, canonicalize: (p: string) => string): ParsedTarget | string {
  if (isFileVerb(verb)) {
    const problem = pathProblem(s);
    if (problem) return problem;
    const isDir = s.endsWith('/') && s !== '/';
    return { kind: 'path', path: canonicalPath(s, canonicalize), isDir };
  }
  const socket = /^(unix|raw|packet):(.*)$/.exec(s);
  if (socket) {
    if (verb !== 'connect') return `is a ${socket[1]} socket; those are connect operations`;
    const rest = socket[2];
    if (socket[1] === 'unix') {
      if (rest.startsWith('@') && rest.length > 1 && rest !== '@*') return { kind: 'socket', socket: { family: 'unix', abstract: rest.slice(1) } };
      if (rest.startsWith('/')) {
        const problem = pathProblem(rest);
        if (problem) return problem;
        return { kind: 'socket', socket: { family: 'unix', path: canonicalPath(rest, canonicalize) } };
      }
      return 'needs a socket path ("unix:/run/app.sock") or an abstract name ("unix:@name")';
    }
    const named = socket[1] === 'raw' ? RAW_PROTOCOLS[rest.toLowerCase()] : undefined;
    const n = named ?? (/^(0|[1-9][0-9]{0,4}|0x[0-9a-fA-F]{1,4})$/.test(rest) ? Number(rest) : NaN);
    if (Number.isNaN(n) || n > (socket[1] === 'raw' ? 255 : 0xffff)) return `has a bad protocol ${q(rest)} (an operation names one protocol, no "*")`;
    return { kind: 'socket', socket: { family: socket[1] as 'raw' | 'packet', protocol: n } };
  }
  if (s.startsWith('/')) return `is a path; ${verb} takes a destination ADDRESS:PORT or HOST:PORT`;
  let addr: string;
  let port: string;
  if (s.startsWith('[')) {
    const close = s.indexOf(']');
    if (close < 0) return 'has "[" without a closing "]"';
    if (s[close + 1] !== ':') return 'needs ":PORT" after "]", e.g. "[::1]:53"';
    addr = s.slice(1, close);
    port = s.slice(close + 2);
    if (net.isIP(addr) !== 6 || addr.includes('%')) return `has an invalid IPv6 address ${q(addr)}`;
  } else {
    const colon = s.lastIndexOf(':');
    if (colon < 0) return 'needs ":PORT", e.g. "api.example.com:443"';
    addr = s.slice(0, colon);
    port = s.slice(colon + 1);
    if (addr.includes(':')) return 'has an IPv6 address without brackets; write "[ADDRESS]:PORT", e.g. "[::1]:53"';
  }
  if (!/^(0|[1-9][0-9]{0,4})$/.test(port) || Number(port) > 65535) {
    return `has a bad port ${q(port)}: an operation has one port, 0-65535 (no ranges or "*")`;
  }
  const n = Number(port);
  if (s.startsWith('[') || net.isIP(addr) === 4) return { kind: 'net', addr, port: n };
  if (addr === '' || addr.includes('*') || addr.includes('/')) {
    return 'is not one destination: give an address or a host name (no "*" or CIDR: an operation has one destination)';
  }
  if (/^[0-9.]+$/.test(addr)) return `has an invalid IPv4 address ${q(addr)}`;
  if (verb === 'bind') return 'is a host name; bind takes a local address (IPv4 or [IPv6])';
  const problem = hostNameProblem(addr);
  if (problem) return `has an invalid host name ${q(addr)}: ${problem}`;
  return { kind: 'net', host: addr.toLowerCase(), port: n };
}

/** Why an absolute path is unacceptable as an operation's path or exe; undefined when fine. */
export function pathProblem(s: string): string | undefined {
  if (s === '') return 'is empty';
  if (s.includes('\0')) return 'contains a NUL byte';
  const ctl = /[\u0001-\u001f\u007f]/.exec(s);
  if (ctl) return `contains a control character (U+${ctl[0].charCodeAt(0).toString(16).padStart(4, '0').toUpperCase()})`;
  if (!s.startsWith('/')) return 'is not an absolute path';
  const bytes = Buffer.byteLength(s, 'utf8');
  if (bytes > 4095) return `is ${bytes} bytes long; no path is longer than 4095 bytes (PATH_MAX with its NUL)`;
  return undefined;
}

/** The path as the kernel would resolve it, without a trailing '/' (directories are flagged separately). */
export function canonicalPath(s: string, canonicalize: (p: string) => string): string {
  const c = canonicalize(s);
  return c.length > 1 && c.endsWith('/') ? c.slice(0, -1) : c;
}

export function defaultCanonicalize(p: string): string {
  return canonicalizeRulePath(p).canonical;
}

// ---------------------------------------------------------------------------------------------
// Cases files

/** Parses a cases file; throws PolicyError listing every problem, located. */
export function parseCases(text: string, file: string, opts: CaseOptions = {}): TestCase[] {
  const { cases, errors } = readCases(text, file, opts);
  if (errors.length) throw new PolicyError(errors);
  return cases;
}

/** The cases that are well-formed and the (located, sorted) problems of the others. */
export function readCases(text: string, file: string, opts: CaseOptions = {}): { cases: TestCase[]; errors: PolicyDiagnostic[] } {
  const canonicalize = opts.canonicalize ?? defaultCanonicalize;
  const lines = new LineCounter();
  const diags: PolicyDiagnostic[] = [];
  const locAt = (offset: number, pointer: string): SourceLocation => {
    const { line, col } = lines.linePos(offset);
    return { file, line, col, pointer };
  };
  const err = (loc: SourceLocation, message: string) => diags.push({ severity: 'error', message, loc });
  const done = (cases: TestCase[]) => ({ cases, errors: diags.sort((a, b) => a.loc.line - b.loc.line || a.loc.col - b.loc.col) });

  if (text.startsWith('\ufeff')) text = text.slice(1);
  let docs: Document.Parsed[];
  const tooDeepAt = nestingTooDeep(text);
  if (tooDeepAt !== undefined) {
    err({ file, ...linePosIn(text, tooDeepAt), pointer: '' }, tooDeepMessage());
    return done([]);
  }
  try {
    docs = parseAllDocuments(text, { lineCounter: lines, prettyErrors: false, version: '1.2' });
    // visit() below recurses too.
    for (const doc of docs) visit(doc, {});
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    err({ file, line: 1, col: 1, pointer: '' }, tooDeepMessage(e));
    return done([]);
  }
  const fileLoc: SourceLocation = { file, line: 1, col: 1, pointer: '' };
  if (docs.length === 0) {
    err(fileLoc, 'no cases in file: write a list of cases');
    return done([]);
  }
  for (const doc of docs) {
    for (const e of doc.errors) err(locAt(e.pos[0], ''), `YAML syntax error: ${e.message}`);
    for (const w of doc.warnings) err(locAt(w.pos[0], ''), `YAML: ${w.message}`);
    visit(doc, {
      Alias(_, node) {
        err(locAt(node.range?.[0] ?? 0, ''), `YAML aliases are not supported ("*${node.source}"); if this is a wildcard, quote it`);
      },
    });
  }
  if (diags.length) return done([]);
  if (docs.length > 1) {
    err(locAt(docs[1].range[0], ''), 'a cases file holds one list of cases (one YAML document)');
    return done([]);
  }
  const root = docs[0].contents;
  if (!isSeq(root)) {
    err(locAt(root?.range?.[0] ?? 0, ''), `a cases file must be a list of cases, got ${describe(root)}`);
    return done([]);
  }
  if (root.items.length === 0) err(locAt(root.range?.[0] ?? 0, ''), 'no cases in file: the list is empty');

  const cases: TestCase[] = [];
  root.items.forEach((item, index) => {
    const pointer = `/${index}`;
    const itemOffset = offsetOf(item, root.range?.[0] ?? 0);
    const itemLoc = locAt(itemOffset, pointer);
    if (!isMap(item)) {
      err(itemLoc, `case ${index + 1} must be a mapping with role, verb, target and expect, got ${describe(item)}`);
      return;
    }
    const what = `case ${index + 1}`;
    const values = new Map<string, { node: unknown; loc: SourceLocation; keyLoc: SourceLocation }>();
    for (const pair of (item as YAMLMap).items as Pair<unknown, unknown>[]) {
      const k = pair.key;
      const keyOffset = offsetOf(k, itemOffset);
      const keyLoc = locAt(keyOffset, pointer);
      if (!isScalar(k) || typeof k.value !== 'string') {
        err(keyLoc, `keys in ${what} must be strings, got ${describe(k)}`);
        continue;
      }
      const keyPointer = `${pointer}/${k.value}`;
      if (!CASE_KEYS.includes(k.value)) {
        const s = suggest(k.value, CASE_KEYS);
        err({ ...keyLoc, pointer: keyPointer }, `unknown key ${q(k.value)} in ${what}${s ? ` (did you mean ${q(s)}?)` : ` (expected one of: ${CASE_KEYS.join(', ')})`}`);
        continue;
      }
      values.set(k.value, { node: pair.value, loc: locAt(offsetOf(pair.value, keyOffset), keyPointer), keyLoc: { ...keyLoc, pointer: keyPointer } });
    }
    const need = (key: string): boolean => {
      if (values.has(key)) return true;
      err(itemLoc, `${what} is missing required key ${q(key)}`);
      return false;
    };
    const string = (key: string): string | undefined => {
      const e = values.get(key);
      if (e === undefined) return undefined;
      const n = e.node;
      if (isScalar(n) && typeof n.value === 'string') return n.value;
      const quote = isScalar(n) && (typeof n.value === 'number' || typeof n.value === 'boolean') ? ` (quote it: "${n.source ?? String(n.value)}")` : '';
      err(e.loc, `${what}: ${key} must be a string, got ${describe(n)}${quote}`);
      return undefined;
    };

    let ok = true;
    for (const key of ['role', 'verb', 'target', 'expect']) if (!need(key)) ok = false;

    const name = string('name');
    if (name !== undefined && name.trim() === '') err(values.get('name')!.loc, `${what}: name is empty`);

    const role = string('role');
    if (role === undefined) ok = false;
    else if (!ROLE_RE.test(role)) {
      err(values.get('role')!.loc, `${what}: bad role name ${q(role)}: an agent's role is letters, digits, ".", "_" and "-"`);
      ok = false;
    }

    const verbText = string('verb');
    let verb: Verb | undefined;
    if (verbText !== undefined) {
      if (isVerb(verbText)) verb = verbText;
      else {
        const s = suggest(verbText, VERBS);
        err(values.get('verb')!.loc, `${what}: verb must be one of ${VERBS.join(', ')}, got ${q(verbText)}${s ? ` (did you mean ${q(s)}?)` : ''}`);
      }
    }
    if (verb === undefined) ok = false;

    const targetText = string('target');
    let target: ParsedTarget | undefined;
    if (targetText !== undefined && verb !== undefined) {
      let parsed: ParsedTarget | string;
      try {
        parsed = parseOperationTarget(verb, targetText, canonicalize);
      } catch (e) {
        parsed = `cannot be canonicalised: ${(e as Error).message}`;
      }
      if (typeof parsed === 'string') err(values.get('target')!.loc, `${what}: ${verb} target ${q(targetText)} ${parsed}`);
      else target = parsed;
    }
    if (target === undefined) ok = false;

    const isDirEntry = values.get('isDir');
    let isDir: boolean | undefined;
    if (isDirEntry) {
      const n = isDirEntry.node;
      if (!(isScalar(n) && typeof n.value === 'boolean')) {
        err(isDirEntry.loc, `${what}: isDir must be true or false, got ${describe(n)}`);
        ok = false;
      } else if (verb !== undefined && !isFileVerb(verb)) {
        err(isDirEntry.keyLoc, `${what}: isDir is only for ${FILE_VERBS.join(', ')}`);
        ok = false;
      } else {
        isDir = n.value as boolean;
        if (!isDir && target?.kind === 'path' && target.isDir) {
          err(isDirEntry.loc, `${what}: isDir is false but the target ${q(targetText ?? '')} ends with "/" (a directory)`);
          ok = false;
        }
      }
    }

    const addrText = string('addr');
    let addr: string | undefined;
    if (addrText !== undefined) {
      const e = values.get('addr')!;
      if (target?.kind !== 'net' || target.host === undefined) {
        if (target !== undefined) err(e.keyLoc, `${what}: addr is only for a HOST:PORT target (the address the host name resolved to)`);
        ok = false;
      } else if (net.isIP(addrText) === 0 || addrText.includes('%')) {
        err(e.loc, `${what}: addr ${q(addrText)} is not an IPv4 or IPv6 address`);
        ok = false;
      } else addr = addrText;
    }

    const exeText = string('exe');
    let exe: string | undefined;
    if (exeText !== undefined) {
      const problem = pathProblem(exeText);
      if (problem) {
        err(values.get('exe')!.loc, `${what}: exe ${q(exeText)} ${problem}`);
        ok = false;
      } else {
        try {
          exe = canonicalPath(exeText, canonicalize);
        } catch (e) {
          err(values.get('exe')!.loc, `${what}: exe ${q(exeText)} cannot be canonicalised: ${(e as Error).message}`);
          ok = false;
        }
      }
    }

    const uidEntry = values.get('uid');
    let uid: number | undefined;
    if (uidEntry) {
      const n = uidEntry.node;
      const decimal = isScalar(n) && typeof n.value === 'number' && /^(0|[1-9][0-9]*)$/.test(n.source ?? String(n.value));
      if (decimal && Number.isSafeInteger(n.value) && (n.value as number) <= MAX_UID) uid = n.value as number;
      else {
        err(uidEntry.loc, `${what}: uid must be a non-negative integer uid (0-${MAX_UID}), got ${describe(n)}`);
        ok = false;
      }
    }

    const labelsEntry = values.get('labels');
    let labels: Record<string, string> | undefined;
    if (labelsEntry) {
      const n = labelsEntry.node;
      if (!isMap(n)) {
        err(labelsEntry.loc, `${what}: labels must be a mapping of key: value, got ${describe(n)}`);
        ok = false;
      } else {
        labels = {};
        for (const pair of (n as YAMLMap).items as Pair<unknown, unknown>[]) {
          const k = pair.key;
          const kOffset = offsetOf(k, offsetOf(n, itemOffset));
          const kLoc = locAt(kOffset, labelsEntry.loc.pointer);
          const v = pair.value;
          const vLoc = locAt(offsetOf(v, kOffset), labelsEntry.loc.pointer);
          if (!isScalar(k) || typeof k.value !== 'string' || k.value === '') {
            err(kLoc, `${what}: label keys must be non-empty strings, got ${describe(k)}`);
            ok = false;
          } else if (k.value === '__proto__') {
            // Assigned to the labels object it would set its prototype, and the label would vanish.
            err(kLoc, `${what}: labels cannot have the key "__proto__"`);
            ok = false;
          } else if (!isScalar(v) || typeof v.value !== 'string') {
            const quote = isScalar(v) && (typeof v.value === 'number' || typeof v.value === 'boolean') ? ` (quote it: "${v.source ?? String(v.value)}")` : '';
            err({ ...vLoc, pointer: `${labelsEntry.loc.pointer}/${k.value}` }, `${what}: label ${k.value} must be a string, got ${describe(v)}${quote}`);
            ok = false;
          } else labels[k.value] = v.value;
        }
      }
    }

    const expectText = string('expect');
    let expect: Decision | undefined;
    if (expectText !== undefined) {
      if ((DECISIONS as readonly string[]).includes(expectText)) expect = expectText as Decision;
      else {
        const s = suggest(expectText, DECISIONS);
        err(values.get('expect')!.loc, `${what}: expect must be allow, deny or would_deny, got ${q(expectText)}${s ? ` (did you mean ${q(s)}?)` : ''}`);
      }
    }
    if (expect === undefined) ok = false;

    const rule = string('rule');
    if (rule !== undefined && !RULE_REF_RE.test(rule)) {
      err(values.get('rule')!.loc, `${what}: rule must be a rule id, POLICY/ID or "default", got ${q(rule)}`);
      ok = false;
    }

    if (!ok || role === undefined || verb === undefined || target === undefined || expect === undefined || targetText === undefined) return;
    const context = { ...(exe !== undefined && { exe }), ...(uid !== undefined && { uid }), ...(labels !== undefined && { labels }) };
    const op: Operation =
      target.kind === 'path'
        ? { role, verb: verb as FileVerb, path: target.path, isDir: isDir ?? target.isDir, ...context }
        : target.kind === 'socket'
        ? { role, verb: 'connect', port: 0, socket: target.socket, ...context }
        : { role, verb: verb as 'connect' | 'bind', port: target.port, ...(target.addr !== undefined && { addr: target.addr }), ...(addr !== undefined && { addr }), ...(target.host !== undefined && { host: target.host }), ...context };
    cases.push({
      name: name ?? `${role}: ${verb} ${targetText}${describeContext(op)}`,
      op,
      target: targetText,
      expect,
      ...(rule !== undefined && { rule, ruleLoc: values.get('rule')!.loc }),
      loc: itemLoc,
    });
  });
  return done(cases);
}

function describeContext(op: Operation): string {
  const parts: string[] = [];
  if ('addr' in op && 'host' in op && op.addr !== undefined && op.host !== undefined) parts.push(`at ${op.addr}`);
  if (op.exe !== undefined) parts.push(`exe ${op.exe}`);
  if (op.uid !== undefined) parts.push(`uid ${op.uid}`);
  if (op.labels !== undefined) parts.push(`labels ${Object.entries(op.labels).map(([k, v]) => `${k}=${v}`).join(',') || '(none)'}`);
  return parts.length ? ` (${parts.join(', ')})` : '';
}

/** Cases whose `rule:` names no rule of the policies (a typo would only ever fail, confusingly). */
export function checkCaseRules(policies: Policy[], cases: TestCase[]): PolicyDiagnostic[] {
  const diags: PolicyDiagnostic[] = [];
  for (const c of cases) {
    if (c.rule === undefined || c.rule === 'default') continue;
    const [policyName, id] = c.rule.includes('/') ? c.rule.split('/') : [undefined, c.rule];
    const found = policies.some((p) => (policyName === undefined || p.name === policyName) && p.rules.some((r) => r.id === id));
    if (!found) {
      const where = policyName === undefined ? 'any of the policies given' : policies.some((p) => p.name === policyName) ? `policy ${q(policyName)}` : `the policies given (there is no policy ${q(policyName)})`;
      diags.push({ severity: 'error', loc: c.ruleLoc ?? c.loc, message: `rule ${q(c.rule)} is not a rule of ${where}` });
    }
  }
  return diags;
}

// ---------------------------------------------------------------------------------------------
// Running

export interface CaseResult {
  case: TestCase;
  trace: Trace;
  pass: boolean;
}

export function runCases(policies: Policy[], cases: TestCase[]): CaseResult[] {
  return cases.map((c) => {
    const trace = traceOperation(policies, c.op);
    return { case: c, trace, pass: trace.outcome.decision === c.expect && ruleAgrees(c.rule, trace.outcome) };
  });
}

/** `rule` as written against the outcome: ID, POLICY/ID, or "default" (the audit trail's name for the default deny). */
export function ruleAgrees(rule: string | undefined, o: Outcome): boolean {
  if (rule === undefined) return true;
  const decided = o.rule === undefined ? 'default' : o.rule;
  if (!rule.includes('/')) return rule === decided;
  return o.policy !== undefined && rule === `${o.policy}/${o.rule}`;
}

/** One line: `PASS  name` or `FAIL  name (file:line:col): expected ..., got ...`. */
export function formatResult(r: CaseResult): string {
  if (r.pass) return `PASS  ${r.case.name}`;
  const c = r.case;
  const expected = `${c.expect}${c.rule === undefined ? '' : ` by ${c.rule}`}`;
  return `FAIL  ${c.name} (${c.loc.file}:${c.loc.line}:${c.loc.col}): expected ${expected}, got ${describeDecision(r.trace)}`;
}

/** "allow by coding-agent/workspace (allow rule at f:l:c)", "deny by the default (no rule matches)", ... */
export function describeDecision(t: Trace): string {
  const o = t.outcome;
  if (t.step === 'no-policy') return `${o.decision}: no policy governs this role`;
  if (t.decidedBy === undefined) {
    const mode = o.mode === 'dry-run' ? '; every policy governing the role is in dry-run' : '';
    return `${o.decision} by the default (no rule matches${mode})`;
  }
  const m = t.decidedBy;
  const at = `${m.rule.kind} rule at ${m.rule.loc.file}:${m.rule.loc.line}:${m.rule.loc.col}`;
  const mode = o.action === 'deny' && o.mode === 'dry-run' ? ', policy in dry-run' : '';
  let why = '';
  if (t.step === 'contextual') {
    const held = t.contextual.find((c) => c.rule === m.rule && c.policy === m.policy);
    if (held) why = `; its when ${held.when.holds ? 'holds' : 'does not hold'}: ${held.when.checks.map((x) => x.detail).join('; ')}`;
  }
  return `${o.decision} by ${m.policy.name}/${m.rule.id} (${at}${mode}${why})`;
}

// ---------------------------------------------------------------------------------------------

function q(s: string): string {
  return JSON.stringify(s);
}

/** Where a YAML node starts in the source, or `fallback` when it has no position (no node at all). */
function offsetOf(node: unknown, fallback: number): number {
  return (node as { range?: number[] } | null)?.range?.[0] ?? fallback;
}
