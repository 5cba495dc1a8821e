// The policy model shared by the parser, the compiler and the reference evaluator.
// Semantics are fixed by ../shared/docs/POLICY.md; this file only gives them types.

export const VERBS = ['read', 'write', 'exec', 'connect', 'bind'] as const;
export type Verb = (typeof VERBS)[number];
export const FILE_VERBS = ['read', 'write', 'exec'] as const;
export type FileVerb = (typeof FILE_VERBS)[number];

export type Mode = 'enforce' | 'dry-run';
export type RuleKind = 'allow' | 'block' | 'contextual';

/** Where a value came from in its source file, for `file:line:col: message` errors. */
export interface SourceLocation {
  file: string;
  line: number; // 1-based
  col: number; // 1-based
  /** JSON Pointer to the value (always set; most useful for JSON sources). */
  pointer: string;
}

/** A path target as written and after canonicalisation. */
export interface PathTarget {
  kind: 'path';
  written: string;
  /** Canonical absolute path; ends with '/' when `subtree`. */
  canonical: string;
  /** true when written with a trailing '/': the directory and everything below it. */
  subtree: boolean;
  loc: SourceLocation;
}

/** A network target `ADDRESS:PORTS` (parsed and validated; enforcement lands with the network issue). */
export interface NetTarget {
  kind: 'net';
  written: string;
  address:
    | { type: 'any' }
    | { type: 'ip'; family: 4 | 6; addr: string; prefix: number } // a plain address has prefix 32/128
    | { type: 'host'; name: string }
    | { type: 'domain'; suffix: string }; // "*.github.com" → suffix "github.com" (subdomains only)
  ports: { from: number; to: number }; // '*' = 0..65535
  loc: SourceLocation;
}

/**
 * A socket that is not an IP destination, under `connect`: a unix-domain socket by path
 * (`unix:/run/app.sock`, `unix:/run/app/` for every socket below) or abstract name
 * (`unix:@name`, `unix:@*` for every abstract name), a raw IP socket by protocol (`raw:icmp`,
 * `raw:6`, `raw:*`), a packet socket (`packet:*`, or an EtherType such as `packet:0x0806`).
 */
export interface SocketTarget {
  kind: 'socket';
  written: string;
  socket:
    | { family: 'unix'; path: PathTarget }
    | { family: 'unix'; abstract: string } // '*' = every abstract name
    | { family: 'raw' | 'packet'; protocol: number | '*' };
  loc: SourceLocation;
}

export type Target = PathTarget | NetTarget | SocketTarget;

export interface Conditions {
  role?: string[];
  exe?: PathTarget[];
  label?: Record<string, string>;
  uid?: number[];
  loc: SourceLocation;
}

export interface Rule {
  /** The id as written, or a generated `<kind>[<index>]` when absent (never empty). */
  id: string;
  idWritten: boolean;
  kind: RuleKind;
  /** Targets per verb; only verbs the rule names are present, each non-empty. */
  verbs: Partial<Record<Verb, Target[]>>;
  when?: Conditions;
  loc: SourceLocation;
}

export interface Policy {
  name: string;
  roles: string[]; // ["*"] = every role
  mode: Mode;
  rules: Rule[]; // allow, then block, then contextual, each in file order
  loc: SourceLocation;
}

/** One problem found in a policy source. */
export interface PolicyDiagnostic {
  severity: 'error' | 'warning';
  message: string;
  loc: SourceLocation;
}

export class PolicyError extends Error {
  constructor(public readonly diagnostics: PolicyDiagnostic[]) {
    super(diagnostics.map(formatDiagnostic).join('\n'));
    this.name = 'PolicyError';
  }
}

export function formatDiagnostic(d: PolicyDiagnostic): string {
  const where = `${d.loc.file}:${d.loc.line}:${d.loc.col}`;
  const ptr = d.loc.file.endsWith('.json') ? ` (at ${d.loc.pointer || '/'})` : '';
  return `${where}: ${d.severity === 'warning' ? 'warning: ' : ''}${d.message}${ptr}`;
}
