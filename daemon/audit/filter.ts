// Which audit lines a reader wants: time range, agent, role, decision, op, line
// type, and a path or address prefix. Shared by `helmctl audit tail`, `query`
// and `report`.
import { inNetwork, ipBytes } from '../policy/evaluate';

export interface LineFilter {
  /** Epoch milliseconds, inclusive. */
  since?: number;
  /** Epoch milliseconds, exclusive. */
  until?: number;
  agent?: string[];
  role?: string[];
  decision?: string[];
  op?: string[];
  /** Line types; undefined: every type. */
  type?: string[];
  /** Path prefixes (string prefixes of `path`), host name prefixes, or addresses/CIDRs for `addr`. */
  prefix?: string[];
}

/** An audit line as the readers see it: every field optional. */
export interface AuditLineData {
  v?: number;
  ts?: string;
  seq?: number;
  type?: string;
  decision?: string;
  op?: string;
  path?: string | null;
  addr?: string | null;
  port?: number;
  host?: string | null;
  agent?: string | null;
  role?: string | null;
  [k: string]: unknown;
}

const RELATIVE = /^(\d+)(s|m|h|d|w)$/;

/**
 * A point in time: RFC 3339 / ISO 8601 (a date alone is its midnight; without a
 * zone, UTC), `now`, or a span ago (`90s`, `15m`, `2h`, `7d`, `1w`).
 */
export function parseTime(text: string, now = Date.now()): number {
  if (text === 'now') return now;
  const rel = RELATIVE.exec(text);
  if (rel) return now - Number(rel[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[rel[2] as 's' | 'm' | 'h' | 'd' | 'w'];
  let iso = text;
  if (/^\d{4}-\d{2}-\d{2}T[^Z+]*$/.test(iso) && !/[+-]\d{2}:?\d{2}$/.test(iso)) iso += 'Z';
  const t = Date.parse(iso);
  if (!/^\d{4}-\d{2}-\d{2}/.test(text) || Number.isNaN(t)) {
    throw new Error(`time ${JSON.stringify(text)}: expected RFC 3339 (2026-11-30T14:20:00Z), a date (2026-11-30), "now", or a span ago (15m, 2h, 7d)`);
  }
  return t;
}

/** Epoch ms of a line's ts (ns precision is dropped; ranges are in ms). */
export function lineTime(l: AuditLineData): number | undefined {
  if (typeof l.ts !== 'string') return undefined;
  const t = Date.parse(l.ts);
  return Number.isNaN(t) ? undefined : t;
}

interface CompiledPrefix {
  text: string;
  net?: { bytes: number[]; prefix: number };
}

function compilePrefix(p: string): CompiledPrefix {
  // 10.0.0.0/8, 2001:db8::/32, [2001:db8::/32] (as policies write it) or [2001:db8::]/32
  const m = /^\[?([0-9a-fA-F:.]+)(?:\/(\d{1,3}))?\]?(?:\/(\d{1,3}))?$/.exec(p);
  if (m && (m[1].includes('.') || m[1].includes(':')) && !(m[2] && m[3])) {
    const bytes = ipBytes(m[1]);
    if (bytes) {
      const max = bytes.length * 8;
      const len = m[2] ?? m[3];
      const prefix = len === undefined ? max : Number(len);
      if (prefix <= max) return { text: p, net: { bytes, prefix } };
    }
  }
  return { text: p };
}

export function compileFilter(f: LineFilter): (l: AuditLineData) => boolean {
  const prefixes = f.prefix?.map(compilePrefix);
  const inList = (list: string[] | undefined, v: unknown) => !list || (typeof v === 'string' && list.includes(v));
  return (l) => {
    if (f.type && !f.type.includes(String(l.type))) return false;
    if (f.since !== undefined || f.until !== undefined) {
      const t = lineTime(l);
      if (t === undefined) return false;
      if (f.since !== undefined && t < f.since) return false;
      if (f.until !== undefined && t >= f.until) return false;
    }
    if (!inList(f.agent, l.agent) || !inList(f.role, l.role) || !inList(f.decision, l.decision) || !inList(f.op, l.op)) return false;
    if (prefixes) {
      const hit = prefixes.some((p) => {
        if (p.net) {
          const ip = typeof l.addr === 'string' ? ipBytes(l.addr) : undefined;
          return !!ip && ip.length === p.net.bytes.length && inNetwork(ip, p.net.bytes, p.net.prefix);
        }
        return (typeof l.path === 'string' && l.path.startsWith(p.text)) || (typeof l.host === 'string' && l.host.startsWith(p.text)) || (typeof l.addr === 'string' && l.addr.startsWith(p.text));
      });
      if (!hit) return false;
    }
    return true;
  };
}

/** What an operation was done to: a path, or ADDRESS:PORT (with the host name when known). */
export function targetOf(l: AuditLineData): string {
  if (typeof l.path === 'string' && l.path) return l.path;
  if (typeof l.addr === 'string' || typeof l.host === 'string') {
    const a = typeof l.addr === 'string' ? (l.addr.includes(':') ? `[${l.addr}]` : l.addr) : '?';
    const port = l.port === undefined ? '' : `:${l.port}`;
    return typeof l.host === 'string' && l.host ? `${l.host}${port} (${a})` : `${a}${port}`;
  }
  return '';
}
