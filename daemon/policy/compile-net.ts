// compileNetwork: the `connect` and `bind` rules of one role → the kernel's network entries.
//
// Address rules go into an LPM trie over (role, family, address). As for paths, every
// stored network gets the fold of every rule whose network contains it, so the kernel's
// one longest-prefix lookup carries the whole decision. Ports live in the value: sorted,
// disjoint ranges, each with the folded verdict of connect and bind.
//
// Host-name rules (`api.stripe.com`, `*.github.com`) are folded per pattern into the name
// table; the kernel joins them with the address verdict for addresses that the agent's own
// DNS lookups returned for a matching name (learned by helmd's forwarder).
import { C, NO_VERDICT, type PortRange, type Verdict } from '../kernel/layout';
import type { Candidate } from './compile';
import { inNetwork, ruleNetwork } from './evaluate';
import type { NetTarget, PolicyDiagnostic } from './types';

export interface NetEntry {
  roleId: number;
  /** The network: 4 bytes (IPv4) or 16 (IPv6), masked to `prefix`; undefined for the role's root entry (`*`). */
  bytes?: number[];
  prefix: number;
  ranges: PortRange[];
  defaultMode: number;
}

export interface NameEntry {
  roleId: number;
  nameId: number;
  /** The pattern: `api.stripe.com`, or `*.github.com` for its subdomains. */
  pattern: string;
  ranges: PortRange[];
  defaultMode: number;
  /**
   * Could any port of any verb be allowed by this pattern's rules, for some process of the role?
   * (If not, its DNS queries are refused. The forwarder cannot tell which process asks, so a
   * rule whose exe, label or uid condition might hold counts.)
   */
  allowsSomething: boolean;
}

const NET_VERBS = ['connect', 'bind'] as const;
type NetVerb = (typeof NET_VERBS)[number];
const NET_INDEX: Record<NetVerb, number> = { connect: C.HELM_NET_CONNECT, bind: C.HELM_NET_BIND };

interface Covering {
  c: Candidate;
  verb: number; // HELM_NET_*
  from: number;
  to: number;
  target: NetTarget;
}

export type Decide = (cands: Candidate[], role: string) => Verdict;

/** The pattern text a host or domain target is known by (and keyed in name ids). */
export function namePattern(t: NetTarget): string | undefined {
  if (t.address.type === 'host') return t.address.name;
  if (t.address.type === 'domain') return `*.${t.address.suffix}`;
  return undefined;
}

/** Does a query name match a pattern (exact host, or a strict subdomain of `*.suffix`)? */
export function nameMatches(pattern: string, name: string): boolean {
  return pattern.startsWith('*.') ? name.endsWith(pattern.slice(1)) && name.length > pattern.length - 1 : name === pattern;
}

function sameVerdict(a: Verdict, b: Verdict): boolean {
  return a.policyId === b.policyId && a.ruleId === b.ruleId && a.action === b.action && a.mode === b.mode && a.rank === b.rank && a.condList === b.condList;
}

/**
 * Port ranges with their folded verdicts: the ports are cut wherever a covering rule's range
 * starts or ends, each piece decided over the rules that cover it, equal neighbours merged,
 * and pieces no rule covers dropped.
 */
export function foldPorts(covering: Covering[], role: string, decide: Decide): PortRange[] {
  const cuts = new Set<number>([0, 65536]);
  for (const k of covering) {
    cuts.add(k.from);
    cuts.add(k.to + 1);
  }
  const points = [...cuts].sort((a, b) => a - b);
  const out: PortRange[] = [];
  for (let i = 0; i + 1 < points.length; i++) {
    const from = points[i];
    const to = points[i + 1] - 1;
    const verdicts = [C.HELM_NET_CONNECT, C.HELM_NET_BIND].map((verb) => {
      const cands = covering.filter((k) => k.verb === verb && k.from <= from && from <= k.to).map((k) => k.c);
      return cands.length ? decide([...new Set(cands)], role) : NO_VERDICT;
    });
    if (verdicts.every((v) => v.action === C.HELM_ACTION_NONE)) continue;
    const last = out[out.length - 1];
    if (last && last.to + 1 === from && last.verdicts.every((v, j) => sameVerdict(v, verdicts[j]))) last.to = to;
    else out.push({ from, to, verdicts });
  }
  return out;
}

function masked(bytes: number[], prefix: number): number[] {
  return bytes.map((b, i) => {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    return b & ((0xff << (8 - bits)) & 0xff);
  });
}

const netKey = (bytes: number[], prefix: number) => `${bytes.length}/${prefix}/${bytes.join('.')}`;

/**
 * One role's network entries. `nameIds` assigns (and is extended with) stable ids for host-name
 * patterns. Errors (too many port ranges for one entry) are appended to `errors`.
 */
export function compileNetwork(
  governing: Candidate[],
  role: string,
  roleId: number,
  defaultMode: number,
  nameIds: Map<string, number>,
  decide: Decide,
  errors: PolicyDiagnostic[],
): { netEntries: NetEntry[]; nameEntries: NameEntry[] } {
  const any: Covering[] = [];
  const byNetwork = new Map<string, { bytes: number[]; prefix: number; covering: Covering[] }>();
  const byName = new Map<string, Covering[]>();
  for (const c of governing) {
    if (!c.rule.verbs.connect && !c.rule.verbs.bind) continue; // most rules: a named look-up each, not a keyed one per verb
    for (const verb of NET_VERBS) {
      for (const t of c.rule.verbs[verb] ?? []) {
        if (t.kind !== 'net') continue;
        const k: Covering = { c, verb: NET_INDEX[verb], from: t.ports.from, to: t.ports.to, target: t };
        const a = t.address;
        if (a.type === 'any') any.push(k);
        else if (a.type === 'ip') {
          const n = ruleNetwork(a);
          const bytes = masked(n.bytes, n.prefix);
          const key = netKey(bytes, n.prefix);
          const e = byNetwork.get(key) ?? { bytes, prefix: n.prefix, covering: [] };
          e.covering.push(k);
          byNetwork.set(key, e);
        } else {
          const pattern = namePattern(t) as string;
          byName.set(pattern, [...(byName.get(pattern) ?? []), k]);
        }
      }
    }
  }

  const fold = (covering: Covering[]): PortRange[] => {
    const ranges = foldPorts(covering, role, decide);
    if (ranges.length > C.HELM_NET_SEGMENTS) {
      const first = [...covering].sort((a, b) => a.c.ruleId - b.c.ruleId)[0].target;
      errors.push({
        severity: 'error',
        loc: first.loc,
        message: `the rules covering ${first.written} for role ${JSON.stringify(role)} cut its ports into ${ranges.length} ranges with different decisions; the kernel holds ${C.HELM_NET_SEGMENTS} per address`,
      });
    }
    return ranges;
  };

  // The networks contained in each stored network: look each shorter prefix up by its masked form.
  const prefixesByFamily = new Map<number, number[]>();
  for (const e of byNetwork.values()) {
    const list = prefixesByFamily.get(e.bytes.length) ?? [];
    if (!list.includes(e.prefix)) list.push(e.prefix);
    prefixesByFamily.set(e.bytes.length, list);
  }
  const netEntries: NetEntry[] = [{ roleId, prefix: 0, ranges: fold(any), defaultMode }];
  const sorted = [...byNetwork.values()].sort((a, b) => a.bytes.length - b.bytes.length || a.prefix - b.prefix || Buffer.compare(Buffer.from(a.bytes), Buffer.from(b.bytes)));
  for (const e of sorted) {
    const covering = [...any];
    for (const p of prefixesByFamily.get(e.bytes.length) ?? []) {
      if (p > e.prefix) continue;
      const outer = byNetwork.get(netKey(masked(e.bytes, p), p));
      if (outer && inNetwork(e.bytes, outer.bytes, p)) covering.push(...outer.covering);
    }
    netEntries.push({ roleId, bytes: e.bytes, prefix: e.prefix, ranges: fold(covering), defaultMode });
  }

  const nameEntries: NameEntry[] = [];
  for (const pattern of [...byName.keys()].sort()) {
    let nameId = nameIds.get(pattern);
    if (nameId === undefined) {
      nameId = Math.max(0, ...nameIds.values()) + 1;
      nameIds.set(pattern, nameId);
    }
    const ranges = fold(byName.get(pattern) as Covering[]);
    const allowsSomething = ranges.some((r) => r.verdicts.some((v) => v.action === C.HELM_ACTION_ALLOW || v.condList !== 0));
    nameEntries.push({ roleId, nameId, pattern, ranges, defaultMode, allowsSomething });
  }
  return { netEntries, nameEntries };
}
