// `helmctl policy suggest`: drafts the allow rules that would have admitted what
// a dry-run agent actually did (its `would_deny` lines), for a person to review.
// Many files in one directory become that directory's subtree (`dir/`), but only
// at or above a threshold, never `/`. Operations an allow cannot admit (a block
// or a contextual rule decided them) are listed, not "fixed".
import path from 'node:path';
import type { AuditLineData } from '../audit/filter';
import type { NetOperation, Operation } from './evaluate';

export interface SuggestOptions {
  role: string;
  /** Distinct entries directly in a directory from which it is suggested as a subtree. */
  threshold: number;
  name?: string;
  /** Shown in the header comment. */
  sources: string[];
}

type FileVerb = 'read' | 'write' | 'exec';
type NetVerb = 'connect' | 'bind';

/** An operation seen in the trail, with how often. */
interface Seen {
  count: number;
}

interface FileSeen extends Seen {
  path: string;
  dir: boolean;
}

interface NetSeen extends Seen {
  target: string;
  op: NetOperation;
}

interface Refused extends Seen {
  verb: string;
  target: string;
  rule: string;
}

/** One target of a suggested rule, with what it stands for. */
export interface SuggestedTarget {
  target: string;
  /** Operations it admits, with how many lines each. */
  covers: { operation: Operation; count: number }[];
  note: string;
}

export interface Suggestion {
  role: string;
  name: string;
  lines: number;
  rules: { id: string; verb: FileVerb | NetVerb; targets: SuggestedTarget[] }[];
  /** would_deny lines an allow rule cannot admit. */
  refused: Refused[];
  /** would_deny lines that are not policy verbs (helm's self-protection is not a policy matter). */
  skipped: number;
  yaml: string;
}

const FILE_VERBS = new Set(['read', 'write', 'exec']);
/** Code-point order: the same draft whatever the locale. */
const byText = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
const NET_VERBS = new Set(['connect', 'bind']);

function netTarget(l: AuditLineData): { target: string; op: NetOperation } | undefined {
  if (typeof l.port !== 'number') return undefined;
  const verb = l.op as NetVerb;
  const host = typeof l.host === 'string' && l.host ? l.host.toLowerCase() : undefined;
  const addr = typeof l.addr === 'string' && l.addr ? l.addr : undefined;
  if (!host && !addr) return undefined;
  const shown = host ?? (addr!.includes(':') ? `[${addr}]` : addr!);
  return { target: `${shown}:${l.port}`, op: { role: '', verb, port: l.port, ...(addr ? { addr } : {}), ...(host ? { host } : {}) } };
}

/** Policy names are [a-z0-9][a-z0-9._-]*. */
function policyName(role: string): string {
  const s = `suggested-${role}`.toLowerCase().replace(/[^a-z0-9._-]+/g, '-');
  return /^[a-z0-9]/.test(s) ? s : `s${s}`;
}

/** A YAML scalar for a target: plain where that cannot be misread, else double-quoted. */
function scalar(s: string): string {
  return /^[A-Za-z0-9_/.+@-][A-Za-z0-9_/.+@:\[\]-]*$/.test(s) && !/: |:$/.test(s) ? s : JSON.stringify(s);
}

function comment(s: string): string {
  return s.replace(/[\r\n]+/g, ' ');
}

/**
 * Groups exact paths bottom-up: a directory with at least `threshold` distinct
 * entries directly in it (files, or subtrees already grouped) becomes one
 * `dir/` subtree, and so on upwards; `/` never does.
 */
function groupPaths(seen: FileSeen[], threshold: number, role: string, verb: FileVerb): SuggestedTarget[] {
  interface Node {
    target: string;
    subtree: boolean;
    covers: { operation: Operation; count: number }[];
    files: number;
  }
  let nodes: Node[] = seen.map((s) => ({
    target: s.path,
    subtree: false,
    covers: [{ operation: { role, verb, path: s.path, ...(s.dir ? { isDir: true } : {}) }, count: s.count }],
    files: 1,
  }));
  for (;;) {
    const byParent = new Map<string, Node[]>();
    for (const n of nodes) {
      const bare = n.subtree ? n.target.slice(0, -1) : n.target;
      const parent = path.posix.dirname(bare);
      if (parent === '/' || parent === bare) continue;
      const list = byParent.get(parent) ?? [];
      list.push(n);
      byParent.set(parent, list);
    }
    // The deepest directory that qualifies first, so that grouping climbs one level at a time.
    const ready = [...byParent.entries()].filter(([, list]) => list.length >= threshold).sort((a, b) => b[0].split('/').length - a[0].split('/').length || byText(a[0], b[0]));
    if (ready.length === 0) break;
    const [dir] = ready[0];
    const target = `${dir}/`;
    const merged: Node = { target, subtree: true, covers: [], files: 0 };
    const inside = nodes.filter((n) => n.target === dir || n.target.startsWith(target));
    for (const n of inside) {
      merged.covers.push(...n.covers);
      merged.files += n.files;
    }
    nodes = [...nodes.filter((n) => !inside.includes(n)), merged];
  }
  return nodes
    .sort((a, b) => byText(a.target, b.target))
    .map((n) => {
      const lines = n.covers.reduce((a, c) => a + c.count, 0);
      const examples = n.covers
        .map((c) => (c.operation as { path: string }).path)
        .sort()
        .slice(0, 3);
      const note = n.subtree
        ? `${n.files} paths, ${lines} lines, e.g. ${examples.join(', ')}${n.files > 3 ? ', ...' : ''}`
        : `${lines} line${lines === 1 ? '' : 's'}${(n.covers[0].operation as { isDir?: boolean }).isDir ? ' (the directory itself)' : ''}`;
      return { target: n.target, covers: n.covers, note };
    });
}

export function suggestPolicy(lines: Iterable<AuditLineData>, opts: SuggestOptions): Suggestion {
  if (!Number.isInteger(opts.threshold) || opts.threshold < 2) throw new Error('the grouping threshold is a whole number of at least 2');
  const files = new Map<FileVerb, Map<string, FileSeen>>();
  const nets = new Map<NetVerb, Map<string, NetSeen>>();
  const refused = new Map<string, Refused>();
  let count = 0;
  let skipped = 0;
  for (const l of lines) {
    if (l.type !== 'decision' || l.decision !== 'would_deny' || l.role !== opts.role) continue;
    count++;
    const verb = String(l.op);
    if (!FILE_VERBS.has(verb) && !NET_VERBS.has(verb)) {
      skipped++;
      continue;
    }
    const target = FILE_VERBS.has(verb) ? (typeof l.path === 'string' ? l.path : '') : (netTarget(l)?.target ?? '');
    const reason = String(l.reason ?? 'default');
    if (!target || (reason !== 'default' && reason !== 'no-policy')) {
      // A block (by name or identity) or a contextual rule decided, or the kernel could not name the object.
      const rule = reason === 'rule' || reason === 'inode-rule' ? `${l.policy ?? '?'}/${l.rule}` : reason;
      const key = `${verb}\u0000${target}\u0000${rule}`;
      const r = refused.get(key) ?? { verb, target: target || '(unnamed)', rule, count: 0 };
      r.count++;
      refused.set(key, r);
      continue;
    }
    if (FILE_VERBS.has(verb)) {
      const m = files.get(verb as FileVerb) ?? new Map<string, FileSeen>();
      const dir = l.dir === true;
      const key = `${target}\u0000${dir}`;
      const s = m.get(key) ?? { path: target, dir, count: 0 };
      s.count++;
      m.set(key, s);
      files.set(verb as FileVerb, m);
    } else {
      const t = netTarget(l)!;
      const m = nets.get(verb as NetVerb) ?? new Map<string, NetSeen>();
      const s = m.get(t.target) ?? { target: t.target, op: { ...t.op, role: opts.role }, count: 0 };
      s.count++;
      m.set(t.target, s);
      nets.set(verb as NetVerb, m);
    }
  }
  const rules: Suggestion['rules'] = [];
  for (const verb of ['read', 'write', 'exec'] as const) {
    const seen = files.get(verb);
    if (seen?.size) rules.push({ id: `suggested-${verb}`, verb, targets: groupPaths([...seen.values()], opts.threshold, opts.role, verb) });
  }
  for (const verb of ['connect', 'bind'] as const) {
    const seen = nets.get(verb);
    if (seen?.size) {
      rules.push({
        id: `suggested-${verb}`,
        verb,
        targets: [...seen.values()].sort((a, b) => byText(a.target, b.target)).map((s) => ({ target: s.target, covers: [{ operation: s.op, count: s.count }], note: `${s.count} line${s.count === 1 ? '' : 's'}` })),
      });
    }
  }
  const name = opts.name ?? policyName(opts.role);
  const s: Suggestion = { role: opts.role, name, lines: count, rules, refused: [...refused.values()].sort((a, b) => b.count - a.count || byText(a.target, b.target)), skipped, yaml: '' };
  s.yaml = renderYaml(s, opts);
  return s;
}

function renderYaml(s: Suggestion, opts: SuggestOptions): string {
  const out: string[] = [];
  out.push(`# Drafted by \`helmctl policy suggest\` from ${comment(opts.sources.join(', '))}.`);
  out.push(`# Role ${comment(s.role)}: ${s.lines} would_deny lines. Every rule below admits something the agent did;`);
  out.push('# review each one (is it needed? is the subtree too wide?) before relying on it.');
  out.push('# mode is dry-run so that adding this draft changes no enforcement until you switch it.');
  out.push('apiVersion: helm/v1');
  out.push('kind: Policy');
  out.push('metadata:');
  out.push(`  name: ${s.name}`);
  out.push('spec:');
  out.push(`  roles: [${scalar(s.role)}]`);
  out.push('  mode: dry-run');
  if (s.rules.length === 0) out.push('  allow: []  # nothing to suggest');
  else out.push('  allow:');
  for (const r of s.rules) {
    out.push(`    - id: ${r.id}`);
    out.push(`      ${r.verb}:`);
    for (const t of r.targets) out.push(`        - ${scalar(t.target)}  # ${comment(t.note)}`);
  }
  if (s.refused.length) {
    out.push('# Not suggested: an allow cannot admit these (a block or contextual rule decided, or the object had no usable name).');
    for (const r of s.refused) out.push(`#   ${r.verb} ${comment(r.target)} — ${comment(r.rule)} (${r.count} line${r.count === 1 ? '' : 's'})`);
  }
  if (s.skipped) out.push(`# ${s.skipped} would_deny lines were not policy verbs (helm's self-protection applies whatever the policy).`);
  return out.join('\n') + '\n';
}
