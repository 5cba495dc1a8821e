// helmd's configuration file (/etc/helm/helmd.yaml, given with --config): where
// policies, the audit trail, the socket, state and pins live. Parsed as strictly
// as a policy: every unknown key, wrong type or relative path is an error located
// `file:line:col`, all reported at once, and a file with any error is not used.
import fs from 'node:fs';
import path from 'node:path';
import { LineCounter, isMap, isScalar, isSeq, parseDocument, type Pair, type Scalar, type YAMLMap, type YAMLSeq } from 'yaml';
import { describe, suggest } from './policy/parse';
import { formatDiagnostic, type PolicyDiagnostic, type SourceLocation } from './policy/types';
import { DEFAULT_PIN_DIR } from './kernel/pins';

export const DEFAULT_CONFIG = '/etc/helm/helmd.yaml';
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
/** Allow logging levels of the configuration language (audit.allows; --audit-allows overrides it). */
export const ALLOW_LEVELS = ['none', 'sampled', 'all'] as const;

export interface HelmdConfig {
  /** Policy files or directories. */
  policy: string[];
  audit: { log: string; allows: (typeof ALLOW_LEVELS)[number] };
  socket: { path: string; group?: string };
  log: { level: LogLevel };
  dryRun: boolean;
  /** helmd's own state (names for kernel ids, counters): /var/lib/helm. */
  stateDir: string;
  /** Where enforcement is pinned on bpffs. */
  pinDir: string;
}

export const DEFAULTS: Omit<HelmdConfig, 'policy'> = {
  audit: { log: '/var/log/helm/audit.jsonl', allows: 'none' },
  socket: { path: '/run/helm/helmd.sock' },
  log: { level: 'info' },
  dryRun: false,
  stateDir: '/var/lib/helm',
  pinDir: DEFAULT_PIN_DIR,
};

export class ConfigError extends Error {
  constructor(public readonly diagnostics: PolicyDiagnostic[]) {
    super(diagnostics.map(formatDiagnostic).join('\n'));
    this.name = 'ConfigError';
  }
}

const GROUP_RE = /^[a-z_][a-z0-9_-]{0,31}$/;

interface Ctx {
  file: string;
  lines: LineCounter;
  diags: PolicyDiagnostic[];
}

function loc(ctx: Ctx, node: unknown, pointer: string, fallback = 0): SourceLocation {
  const range = (node as { range?: [number, number, number] } | null)?.range;
  const { line, col } = ctx.lines.linePos(range ? range[0] : fallback);
  return { file: ctx.file, line, col, pointer };
}

function err(ctx: Ctx, where: SourceLocation, message: string): void {
  ctx.diags.push({ severity: 'error', loc: where, message });
}

interface Entry {
  key: Scalar;
  value: unknown;
  pointer: string;
}

/** A mapping's entries; unknown keys are errors (with a did-you-mean). */
function mapping(ctx: Ctx, node: unknown, pointer: string, what: string, allowed: readonly string[]): Map<string, Entry> | undefined {
  if (!isMap(node)) {
    err(ctx, loc(ctx, node, pointer), `${what} must be a mapping, got ${describe(node)}`);
    return undefined;
  }
  const out = new Map<string, Entry>();
  for (const pair of (node as YAMLMap).items as Pair<unknown, unknown>[]) {
    const k = pair.key;
    if (!isScalar(k) || typeof k.value !== 'string') {
      err(ctx, loc(ctx, k, pointer, (node as YAMLMap).range?.[0]), `keys in ${what} must be strings, got ${describe(k)}`);
      continue;
    }
    const p = `${pointer}/${k.value}`;
    if (!allowed.includes(k.value)) {
      const s = suggest(k.value, allowed);
      err(ctx, loc(ctx, k, p), `unknown key ${JSON.stringify(k.value)} in ${what}${s ? ` (did you mean ${JSON.stringify(s)}?)` : ` (expected one of: ${allowed.join(', ')})`}`);
      continue;
    }
    out.set(k.value, { key: k, value: pair.value, pointer: p });
  }
  return out;
}

function where(ctx: Ctx, e: Entry): SourceLocation {
  return loc(ctx, e.value ?? e.key, e.pointer, e.key.range?.[0]);
}

function str(ctx: Ctx, e: Entry, what: string): string | undefined {
  if (isScalar(e.value) && typeof e.value.value === 'string' && e.value.value !== '') return e.value.value;
  err(ctx, where(ctx, e), `${what} must be a non-empty string, got ${describe(e.value)}`);
  return undefined;
}

function absolutePath(ctx: Ctx, e: Entry, what: string): string | undefined {
  const s = str(ctx, e, what);
  if (s === undefined) return undefined;
  if (!path.isAbsolute(s)) {
    err(ctx, where(ctx, e), `${what} must be an absolute path, got ${JSON.stringify(s)}`);
    return undefined;
  }
  return path.normalize(s);
}

function oneOf<T extends string>(ctx: Ctx, e: Entry, what: string, values: readonly T[]): T | undefined {
  const s = str(ctx, e, what);
  if (s === undefined) return undefined;
  if ((values as readonly string[]).includes(s)) return s as T;
  const close = suggest(s, values);
  err(ctx, where(ctx, e), `${what} must be one of ${values.join(', ')}, got ${JSON.stringify(s)}${close ? ` (did you mean ${JSON.stringify(close)}?)` : ''}`);
  return undefined;
}

function bool(ctx: Ctx, e: Entry, what: string): boolean | undefined {
  if (isScalar(e.value) && typeof e.value.value === 'boolean') return e.value.value;
  err(ctx, where(ctx, e), `${what} must be true or false, got ${describe(e.value)}`);
  return undefined;
}

/** Parses configuration text. Throws ConfigError with every problem, located. */
export function parseConfig(text: string, file: string): HelmdConfig {
  const ctx: Ctx = { file, lines: new LineCounter(), diags: [] };
  const doc = parseDocument(text, { lineCounter: ctx.lines, prettyErrors: false, uniqueKeys: true });
  for (const e of doc.errors) {
    const { line, col } = ctx.lines.linePos(e.pos[0]);
    err(ctx, { file, line, col, pointer: '' }, e.message.split('\n')[0]);
  }
  if (ctx.diags.length) throw new ConfigError(ctx.diags);
  const cfg: HelmdConfig = structuredClone({ ...DEFAULTS, policy: [] });
  const top = mapping(ctx, doc.contents, '', 'the configuration', ['policy', 'audit', 'socket', 'log', 'dryRun', 'stateDir', 'pinDir']);
  if (top) {
    const policy = top.get('policy');
    if (!policy) err(ctx, loc(ctx, doc.contents, ''), 'the configuration is missing required key "policy" (policy files or directories)');
    else if (isSeq(policy.value)) {
      const seq = policy.value as YAMLSeq;
      if (seq.items.length === 0) err(ctx, where(ctx, policy), 'policy is an empty list; give at least one file or directory');
      seq.items.forEach((item, i) => {
        const p = absolutePath(ctx, { key: policy.key, value: item, pointer: `/policy/${i}` }, 'a policy source');
        if (p) cfg.policy.push(p);
      });
    } else {
      const p = absolutePath(ctx, policy, 'policy');
      if (p) cfg.policy.push(p);
    }

    const audit = top.get('audit');
    if (audit) {
      const a = mapping(ctx, audit.value, audit.pointer, 'audit', ['log', 'allows']);
      const log = a?.get('log');
      if (log) cfg.audit.log = absolutePath(ctx, log, 'audit.log') ?? cfg.audit.log;
      const allows = a?.get('allows');
      if (allows) {
        const level = oneOf(ctx, allows, 'audit.allows', ALLOW_LEVELS);
        if (level) cfg.audit.allows = level;
      }
    }

    const socket = top.get('socket');
    if (socket) {
      const s = mapping(ctx, socket.value, socket.pointer, 'socket', ['path', 'group']);
      const p = s?.get('path');
      if (p) cfg.socket.path = absolutePath(ctx, p, 'socket.path') ?? cfg.socket.path;
      const g = s?.get('group');
      if (g) {
        const name = str(ctx, g, 'socket.group');
        if (name !== undefined && !GROUP_RE.test(name)) err(ctx, where(ctx, g), `socket.group must be a group name (${GROUP_RE.source}), got ${JSON.stringify(name)}`);
        else if (name !== undefined) cfg.socket.group = name;
      }
    }

    const log = top.get('log');
    if (log) {
      const l = mapping(ctx, log.value, log.pointer, 'log', ['level']);
      const level = l?.get('level');
      if (level) cfg.log.level = oneOf(ctx, level, 'log.level', LOG_LEVELS) ?? cfg.log.level;
    }

    const dryRun = top.get('dryRun');
    if (dryRun) cfg.dryRun = bool(ctx, dryRun, 'dryRun') ?? cfg.dryRun;
    const stateDir = top.get('stateDir');
    if (stateDir) cfg.stateDir = absolutePath(ctx, stateDir, 'stateDir') ?? cfg.stateDir;
    const pinDir = top.get('pinDir');
    if (pinDir) cfg.pinDir = absolutePath(ctx, pinDir, 'pinDir') ?? cfg.pinDir;
  }
  if (ctx.diags.length) throw new ConfigError(ctx.diags.sort((a, b) => a.loc.line - b.loc.line || a.loc.col - b.loc.col));
  return cfg;
}

/** Reads and parses a configuration file; a file that cannot be read is a ConfigError too. */
export function loadConfig(file: string): HelmdConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError([{ severity: 'error', loc: { file, line: 1, col: 1, pointer: '' }, message: `cannot read the configuration: ${code === 'ENOENT' ? 'no such file' : (e as Error).message}` }]);
  }
  return parseConfig(text, file);
}

/** The gid of a group named in /etc/group (Node has no getgrnam). */
export function groupId(name: string, groupFile = '/etc/group'): number | undefined {
  for (const line of fs.readFileSync(groupFile, 'utf8').split('\n')) {
    const [g, , gid] = line.split(':');
    if (g === name && /^\d+$/.test(gid ?? '')) return Number(gid);
  }
  return undefined;
}
