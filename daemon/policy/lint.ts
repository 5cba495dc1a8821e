// `helmctl policy lint`: everything that is wrong with a set of policy files (errors, exit 1) and
// everything that is probably not what its author meant (warnings), each located
// `file:line:col`. Errors come from the parser and, unless the kernel is left out (--no-kernel),
// from the compiler, which refuses what does not fit the kernel's tables (a path longer than its
// buffer, more port ranges or conditional contextual rules than one entry holds, ...).
//
// Warnings (none of them changes a decision; each points at something that does not do what it
// reads as):
//  - shadowed: an allow or contextual target that a block of the same verb covers entirely, for
//    every role the rule applies to: it can never allow anything;
//  - a rule path (or when.exe) that does not exist on this host, a "dir/" target that is a file
//    here (it matches nothing), a target without "/" that is a directory here (it covers the
//    directory itself, not what is in it; as when.exe it holds for no executable);
//  - a target repeated in one policy (same kind, verb and target; for contextual rules the same
//    `when` too);
//  - a role in a contextual rule's when.role that no policy names in spec.roles (only a "*"
//    policy can have such a condition; the parser rejects it elsewhere): likely misspelt.

import * as fs from 'fs';
import { LineCounter, parseAllDocuments } from 'yaml';
import { compilePolicy, type CompiledPolicy, type CompileOptions } from './compile';
import { governs, inNetwork, ruleNetwork } from './evaluate';
import { loadPolicies, suggest, type ParseOptions } from './parse';
import { FILE_VERBS, PolicyError, VERBS, type Conditions, type NetTarget, type SocketTarget, type PathTarget, type Policy, type PolicyDiagnostic, type Rule, type SourceLocation, type Target, type Verb } from './types';

export interface LintOptions extends ParseOptions {
  /** Compile for the kernel too (default): what helmd would refuse is an error. */
  kernel?: boolean;
  /** What a canonical path is on this host; undefined: absent; 'unknown': cannot tell (e.g. EACCES). */
  pathKind?: (p: string) => 'dir' | 'file' | 'unknown' | undefined;
  compile?: CompileOptions;
}

export interface LintNote {
  loc: SourceLocation;
  message: string;
}

export interface LintResult {
  policies: Policy[];
  files: string[];
  /** Test-case files passed over (see loadPolicies). */
  skipped: string[];
  errors: PolicyDiagnostic[];
  warnings: PolicyDiagnostic[];
  /** Rule paths that are matched in another form than written. */
  notes: LintNote[];
  /** Set when compiled for the kernel without errors. */
  compiled?: CompiledPolicy;
}

export function lintPolicies(paths: string[], opts: LintOptions = {}): LintResult {
  const result: LintResult = { policies: [], files: [], skipped: [], errors: [], warnings: [], notes: [] };
  try {
    const loaded = loadPolicies(paths, opts);
    Object.assign(result, { policies: loaded.policies, files: loaded.files, skipped: loaded.skipped });
  } catch (e) {
    if (!(e instanceof PolicyError)) throw e;
    result.errors = e.diagnostics;
    return result;
  }
  const policies = result.policies;
  if (opts.kernel ?? true) {
    try {
      result.compiled = compilePolicy(policies, opts.compile);
      result.warnings.push(...result.compiled.warnings);
    } catch (e) {
      if (!(e instanceof PolicyError)) throw e;
      result.errors = e.diagnostics;
    }
  }
  const pathKind = opts.pathKind ?? defaultPathKind;
  result.warnings.push(...shadowed(policies), ...pathsOnThisHost(policies, pathKind), ...duplicates(policies), ...unnamedWhenRoles(policies));
  result.notes = canonicalNotes(policies);
  const order = new Map(result.files.map((f, i) => [f, i]));
  const byLocation = (a: { loc: SourceLocation }, b: { loc: SourceLocation }) =>
    (order.get(a.loc.file) ?? 0) - (order.get(b.loc.file) ?? 0) || a.loc.line - b.loc.line || a.loc.col - b.loc.col;
  result.warnings.sort(byLocation);
  result.notes.sort(byLocation);
  return result;
}

function warning(loc: SourceLocation, message: string): PolicyDiagnostic {
  return { severity: 'warning', loc, message };
}

function where(loc: SourceLocation): string {
  return `${loc.file}:${loc.line}:${loc.col}`;
}

function q(s: string): string {
  return JSON.stringify(s);
}

function ruleName(r: Rule): string {
  return `${r.kind} rule ${q(r.id)}`;
}

/** Every (verb, target) of a rule. */
function targetsOf(r: Rule): { verb: Verb; target: Target }[] {
  return VERBS.flatMap((verb) => (r.verbs[verb] ?? []).map((target) => ({ verb, target })));
}

// ---------------------------------------------------------------------------------------------
// Shadowed by a block

/** Does `outer` (a block's target) cover every operation `inner` can match? */
export function targetCovers(outer: Target, inner: Target): boolean {
  if (outer.kind === 'path' && inner.kind === 'path') {
    if (outer.subtree) return inner.canonical.startsWith(outer.canonical);
    return !inner.subtree && inner.canonical === outer.canonical;
  }
  if (outer.kind === 'socket' && inner.kind === 'socket') return socketCovers(outer.socket, inner.socket);
  if (outer.kind === 'net' && inner.kind === 'net') {
    return outer.ports.from <= inner.ports.from && inner.ports.to <= outer.ports.to && addressCovers(outer.address, inner.address);
  }
  return false;
}

function socketCovers(outer: SocketTarget['socket'], inner: SocketTarget['socket']): boolean {
  if (outer.family !== inner.family) return false;
  if ('path' in outer) return 'path' in inner && targetCovers(outer.path, inner.path);
  if ('abstract' in outer) return 'abstract' in inner && (outer.abstract === '*' || outer.abstract === inner.abstract);
  return 'protocol' in inner && (outer.protocol === '*' || outer.protocol === inner.protocol);
}

function addressCovers(outer: NetTarget['address'], inner: NetTarget['address']): boolean {
  switch (outer.type) {
    case 'any':
      return true;
    case 'host':
      return inner.type === 'host' && inner.name === outer.name;
    case 'domain':
      return (inner.type === 'host' && inner.name.endsWith(`.${outer.suffix}`)) || (inner.type === 'domain' && (inner.suffix === outer.suffix || inner.suffix.endsWith(`.${outer.suffix}`)));
    case 'ip': {
      if (inner.type !== 'ip') return false;
      const o = ruleNetwork(outer);
      const i = ruleNetwork(inner);
      return o.bytes.length === i.bytes.length && o.prefix <= i.prefix && inNetwork(i.bytes, o.bytes, o.prefix);
    }
  }
}

/** The roles a rule can allow for: when.role for a contextual rule that has one, else its policy's. */
function rolesOf(p: Policy, r: Rule): string[] {
  return r.kind === 'contextual' && r.when?.role !== undefined ? r.when.role : p.roles;
}

function shadowed(policies: Policy[]): PolicyDiagnostic[] {
  const out: PolicyDiagnostic[] = [];
  const blocks = policies.flatMap((p) => p.rules.filter((r) => r.kind === 'block').map((r) => ({ p, r })));
  for (const p of policies) {
    for (const r of p.rules) {
      if (r.kind === 'block') continue;
      for (const { verb, target } of targetsOf(r)) {
        // For "*" the roles are every role, including those no policy names: only "*" policies govern those.
        const roles = rolesOf(p, r);
        const blockers: { p: Policy; r: Rule; t: Target }[] = [];
        const everyRole = roles.every((role) => {
          for (const b of blocks) {
            if (!(role === '*' ? b.p.roles.includes('*') : governs(b.p, role))) continue;
            const t = (b.r.verbs[verb] ?? []).find((bt) => targetCovers(bt, target));
            if (t === undefined) continue;
            if (!blockers.some((x) => x.r === b.r)) blockers.push({ p: b.p, r: b.r, t });
            return true;
          }
          return false;
        });
        if (!everyRole) continue;
        const by = blockers
          .map((b) => `block rule ${q(b.r.id)}${b.p === p ? '' : ` of policy ${q(b.p.name)}`} (${verb} ${b.t.written} at ${where(b.t.loc)}${b.p.mode === 'dry-run' ? ', dry-run' : ''})`)
          .join(' and ');
        const forWhom = roles.includes('*') ? 'for every role' : roles.length === 1 ? `for role ${q(roles[0])}` : 'for every role it applies to';
        out.push(warning(target.loc, `${verb} ${target.written} in ${ruleName(r)} never allows anything: ${by} denies it ${forWhom}`));
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Paths on this host

function defaultPathKind(p: string): 'dir' | 'file' | 'unknown' | undefined {
  try {
    return fs.statSync(p).isDirectory() ? 'dir' : 'file';
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === 'ENOENT' || code === 'ENOTDIR' ? undefined : 'unknown';
  }
}

function pathsOnThisHost(policies: Policy[], kindOf: NonNullable<LintOptions['pathKind']>): PolicyDiagnostic[] {
  const out: PolicyDiagnostic[] = [];
  const check = (what: string, t: PathTarget) => {
    const p = t.subtree && t.canonical !== '/' ? t.canonical.slice(0, -1) : t.canonical;
    const kind = kindOf(p);
    const shown = t.canonical === t.written ? '' : ` (matched as ${t.canonical})`;
    if (kind === undefined) {
      out.push(warning(t.loc, `${what} ${t.written} does not exist on this host${shown}`));
    } else if (kind === 'file' && t.subtree) {
      out.push(warning(t.loc, `${what} ${t.written} ends with "/" but is not a directory on this host${shown}: it matches nothing (without the "/" it would match the file)`));
    } else if (kind === 'dir' && !t.subtree && what === 'when.exe') {
      out.push(warning(t.loc, `${what} ${t.written} is a directory on this host${shown}: without a trailing "/" the condition holds for no executable (${t.written}/ holds for those below it)`));
    } else if (kind === 'dir' && !t.subtree) {
      out.push(warning(t.loc, `${what} ${t.written} is a directory on this host${shown}: without a trailing "/" the target covers the directory itself, not what is in it (${t.written}/ covers everything below)`));
    }
  };
  for (const p of policies) {
    for (const r of p.rules) {
      for (const verb of FILE_VERBS) for (const t of r.verbs[verb] ?? []) if (t.kind === 'path') check(verb, t);
      for (const t of r.when?.exe ?? []) check('when.exe', t);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Duplicates

function targetKey(t: Target): string {
  if (t.kind === 'path') return `path ${t.canonical}`;
  if (t.kind === 'socket') {
    const k = t.socket;
    return `socket ${k.family} ${'path' in k ? k.path.canonical : 'abstract' in k ? `@${k.abstract}` : k.protocol}`;
  }
  const a = t.address;
  let addr: string;
  if (a.type === 'ip') {
    const n = ruleNetwork(a);
    addr = `ip ${n.bytes.join('.')}/${n.prefix}`;
  } else addr = a.type === 'any' ? 'any' : a.type === 'host' ? `host ${a.name}` : `domain ${a.suffix}`;
  return `net ${addr} ${t.ports.from}-${t.ports.to}`;
}

function conditionsKey(c: Conditions | undefined): string {
  if (!c) return '';
  return JSON.stringify([
    c.role ? [...c.role].sort() : null,
    c.exe ? c.exe.map((t) => t.canonical).sort() : null,
    c.label ? Object.entries(c.label).sort() : null,
    c.uid ? [...c.uid].sort((a, b) => a - b) : null,
  ]);
}

function duplicates(policies: Policy[]): PolicyDiagnostic[] {
  const out: PolicyDiagnostic[] = [];
  for (const p of policies) {
    const first = new Map<string, { r: Rule; t: Target }>();
    for (const r of p.rules) {
      for (const { verb, target } of targetsOf(r)) {
        const key = `${r.kind}\0${verb}\0${targetKey(target)}\0${r.kind === 'contextual' ? conditionsKey(r.when) : ''}`;
        const prev = first.get(key);
        if (prev === undefined) {
          first.set(key, { r, t: target });
          continue;
        }
        const of = prev.r === r ? 'earlier in this rule' : `in ${ruleName(prev.r)}${r.kind === 'contextual' ? ' (with the same when)' : ''}`;
        const same = prev.t.written === target.written ? '' : target.kind === 'path' ? ` (both are matched as ${target.canonical})` : ' (the same destinations)';
        out.push(warning(target.loc, `${verb} ${target.written} repeats ${verb} ${prev.t.written} at ${where(prev.t.loc)}, ${of}${same}`));
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// when.role naming a role no policy names

function unnamedWhenRoles(policies: Policy[]): PolicyDiagnostic[] {
  const named = new Set(policies.flatMap((p) => p.roles.filter((r) => r !== '*')));
  const out: PolicyDiagnostic[] = [];
  for (const p of policies) {
    for (const r of p.rules) {
      (r.when?.role ?? []).forEach((role, i) => {
        if (named.has(role)) return;
        const s = suggest(role, [...named]);
        const loc = locateInSource(r.when!.loc, ['role'], r.when!.role!.length, i);
        out.push(
          warning(
            loc,
            `when.role ${q(role)} of ${ruleName(r)} is a role no policy names in spec.roles (only "*" policies govern it)${s ? `; did you mean ${q(s)}?` : '; is it misspelt?'}`,
          ),
        );
      });
    }
  }
  return out;
}

/**
 * The location of a value below `anchor` (a mapping located by the parser), found again in the
 * source: the model keeps one location per condition set, not per role. Falls back to `anchor`.
 */
function locateInSource(anchor: SourceLocation, keys: string[], count: number, index: number): SourceLocation {
  try {
    let text = fs.readFileSync(anchor.file, 'utf8');
    if (text.startsWith('\ufeff')) text = text.slice(1);
    const lines = new LineCounter();
    const docs = parseAllDocuments(text, { lineCounter: lines, prettyErrors: false, version: '1.2' });
    const offset = (lines.lineStarts[anchor.line - 1] ?? 0) + anchor.col - 1;
    const doc = docs.find((d) => d.range[0] <= offset && offset <= d.range[2]);
    const path = anchor.pointer.split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
    const node = doc?.getIn([...path, ...keys], true) as { range?: number[]; items?: { range?: number[] }[] } | undefined;
    // A single role may be written without a list.
    const item = node?.items !== undefined ? node.items.length === count ? node.items[index] : undefined : index === 0 ? node : undefined;
    const at = item?.range?.[0];
    if (at === undefined) return anchor;
    const { line, col } = lines.linePos(at);
    return { file: anchor.file, line, col, pointer: `${anchor.pointer}/${keys.join('/')}${node?.items !== undefined ? `/${index}` : ''}` };
  } catch {
    return anchor;
  }
}

// ---------------------------------------------------------------------------------------------
// Notes

function canonicalNotes(policies: Policy[]): LintNote[] {
  const out: LintNote[] = [];
  for (const p of policies) {
    for (const r of p.rules) {
      for (const verb of FILE_VERBS) {
        for (const t of r.verbs[verb] ?? []) {
          if (t.kind === 'path' && t.canonical !== t.written) out.push({ loc: t.loc, message: `${verb} ${t.written} is matched as ${t.canonical}` });
        }
      }
      for (const t of r.when?.exe ?? []) {
        if (t.canonical !== t.written) out.push({ loc: t.loc, message: `when.exe ${t.written} is matched as ${t.canonical}` });
      }
    }
  }
  return out;
}

export function formatNote(n: LintNote): string {
  return `${where(n.loc)}: note: ${n.message}`;
}
