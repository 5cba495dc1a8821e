// `helmctl audit report`: a compliance summary of a trail per period (day, week,
// month, or the whole range): decisions by agent, role, rule and op; the most
// denied targets; dry-run would-denials; what the kernel counted per agent
// (allowed operations included, logged or not); losses; and the policy
// generations in force. Rendered as JSON or Markdown.
import { compileFilter, lineTime, targetOf, type AuditLineData, type LineFilter } from './filter';
import { readLines, trailFiles } from './files';

export type Period = 'day' | 'week' | 'month' | 'all';

export interface Tally {
  allow: number;
  deny: number;
  would_deny: number;
}

export interface TargetCount {
  target: string;
  op: string;
  count: number;
}

export interface AgentCounts {
  allowed: number;
  allow_logged: number;
  allow_unlogged: number;
  allow_lost: number;
  denied: number;
  would_deny: number;
  deny_lost: number;
}

export interface GenerationInForce {
  generation: number;
  installed: string;
  cause: string;
  digest: string;
  policies: string[];
}

export interface PeriodReport {
  period: string;
  first: string | null;
  last: string | null;
  decisions: Tally;
  by_agent: Record<string, Tally>;
  by_role: Record<string, Tally>;
  by_rule: Record<string, Tally>;
  by_op: Record<string, Tally>;
  top_denied: TargetCount[];
  would_deny: { total: number; by_agent: Record<string, number>; by_rule: Record<string, number>; top_targets: TargetCount[] };
  /** Sums of the kernel's per-agent counters lines in the period. */
  counters: Record<string, AgentCounts>;
  lost: Record<string, number>;
  generations: GenerationInForce[];
  agents: { attached: number; detached: number };
  recovered: number;
  helmd_starts: number;
}

export interface Report {
  files: string[];
  period: Period;
  since: string | null;
  until: string | null;
  lines: number;
  unreadable: number;
  periods: PeriodReport[];
}

export interface ReportOptions {
  period: Period;
  /** Time range and agent/role restriction (lines without an agent — lost, policy — are kept whatever the agent filter). */
  filter: LineFilter;
  top: number;
}

const tally = (): Tally => ({ allow: 0, deny: 0, would_deny: 0 });

function periodKey(ms: number, p: Period): string {
  const d = new Date(ms);
  const iso = d.toISOString();
  switch (p) {
    case 'all':
      return 'all';
    case 'month':
      return iso.slice(0, 7);
    case 'day':
      return iso.slice(0, 10);
    case 'week': {
      // ISO weeks begin on Monday: the key is that Monday's date.
      const back = (d.getUTCDay() + 6) % 7;
      return `week of ${new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() - back)).toISOString().slice(0, 10)}`;
    }
  }
}

/** Start (inclusive) of the period a key names, in ms; -Infinity for 'all'. */
function periodStart(key: string): number {
  if (key === 'all') return -Infinity;
  const date = key.replace(/^week of /, '');
  return Date.parse(date.length === 7 ? `${date}-01T00:00:00Z` : `${date}T00:00:00Z`);
}

class Bucket {
  readonly r: PeriodReport;
  private readonly denied = new Map<string, TargetCount>();
  private readonly would = new Map<string, TargetCount>();
  constructor(period: string) {
    this.r = {
      period,
      first: null,
      last: null,
      decisions: tally(),
      by_agent: {},
      by_role: {},
      by_rule: {},
      by_op: {},
      top_denied: [],
      would_deny: { total: 0, by_agent: {}, by_rule: {}, top_targets: [] },
      counters: {},
      lost: {},
      generations: [],
      agents: { attached: 0, detached: 0 },
      recovered: 0,
      helmd_starts: 0,
    };
  }

  seen(ts: string): void {
    if (!this.r.first || ts < this.r.first) this.r.first = ts;
    if (!this.r.last || ts > this.r.last) this.r.last = ts;
  }

  decision(l: AuditLineData): void {
    const d = l.decision as keyof Tally;
    if (d !== 'allow' && d !== 'deny' && d !== 'would_deny') return;
    const bump = (m: Record<string, Tally>, k: string) => (m[k] ??= tally())[d]++;
    this.r.decisions[d]++;
    bump(this.r.by_agent, String(l.agent ?? '(unknown)'));
    bump(this.r.by_role, String(l.role ?? '(unknown)'));
    bump(this.r.by_rule, ruleKey(l));
    bump(this.r.by_op, String(l.op ?? '?'));
    const target = targetOf(l);
    const k = `${l.op}\u0000${target}`;
    if (d === 'deny') {
      const c = this.denied.get(k) ?? { target, op: String(l.op), count: 0 };
      c.count++;
      this.denied.set(k, c);
    } else if (d === 'would_deny') {
      this.r.would_deny.total++;
      const agent = String(l.agent ?? '(unknown)');
      this.r.would_deny.by_agent[agent] = (this.r.would_deny.by_agent[agent] ?? 0) + 1;
      const rule = ruleKey(l);
      this.r.would_deny.by_rule[rule] = (this.r.would_deny.by_rule[rule] ?? 0) + 1;
      const c = this.would.get(k) ?? { target, op: String(l.op), count: 0 };
      c.count++;
      this.would.set(k, c);
    }
  }

  counters(l: AuditLineData): void {
    const agent = String(l.agent ?? '(unknown)');
    const c = (this.r.counters[agent] ??= { allowed: 0, allow_logged: 0, allow_unlogged: 0, allow_lost: 0, denied: 0, would_deny: 0, deny_lost: 0 });
    for (const k of Object.keys(c) as (keyof AgentCounts)[]) c[k] += typeof l[k] === 'number' ? (l[k] as number) : 0;
  }

  finish(top: number): PeriodReport {
    const order = (m: Map<string, TargetCount>) => [...m.values()].sort((a, b) => b.count - a.count || a.target.localeCompare(b.target) || a.op.localeCompare(b.op)).slice(0, top);
    this.r.top_denied = order(this.denied);
    this.r.would_deny.top_targets = order(this.would);
    return this.r;
  }
}

/**
 * A generation switched in, from helmd's control lines: every apply (at start, from
 * the API or the files, for a new role) and every switch of a policy's mode.
 */
function generationSwitched(l: AuditLineData): GenerationInForce | undefined {
  if (l.type !== 'control' || typeof l.generation !== 'number') return undefined;
  const isApply = l.action === 'apply';
  const isPolicyMode = l.action === 'mode' && l.target === 'policy';
  if (!isApply && !isPolicyMode) return undefined;
  const subject = l.subject as { policy?: string } | undefined;
  return {
    generation: l.generation,
    installed: String(l.ts),
    cause: isApply ? String(l.source ?? 'apply') : `mode ${l.mode} for policy ${subject?.policy ?? '?'}`,
    digest: typeof l.digest === 'string' ? l.digest : '',
    policies: Array.isArray(l.policies) ? l.policies.map(String) : [],
  };
}

/** How a decision's rule is named in a report: policy/rule, `default`, or the reason when no rule decided. */
export function ruleKey(l: AuditLineData): string {
  if (l.reason === 'self-protection') return 'self-protection';
  if (typeof l.policy === 'string' && l.policy) return `${l.policy}/${l.rule}`;
  if (l.reason && l.reason !== 'rule' && l.reason !== 'default') return `default (${l.reason})`;
  return String(l.rule ?? 'default');
}

export async function buildReport(args: string[], opts: ReportOptions): Promise<Report> {
  const groups = trailFiles(args);
  const files = groups.flatMap((g) => g.files);
  const timeOnly = compileFilter({ since: opts.filter.since, until: opts.filter.until });
  const who = compileFilter({ agent: opts.filter.agent, role: opts.filter.role });
  const buckets = new Map<string, Bucket>();
  const policies: { ms: number; g: GenerationInForce }[] = [];
  let lines = 0;
  let unreadable = 0;
  const bucket = (ms: number) => {
    const key = periodKey(ms, opts.period);
    let b = buckets.get(key);
    if (!b) buckets.set(key, (b = new Bucket(key)));
    return b;
  };
  for (const file of files) {
    await readLines(file, ({ text }) => {
      let l: AuditLineData;
      try {
        l = JSON.parse(text) as AuditLineData;
      } catch {
        unreadable++;
        return;
      }
      const ms = lineTime(l);
      if (ms === undefined) {
        unreadable++;
        return;
      }
      const generation = generationSwitched(l);
      if (generation) policies.push({ ms, g: generation });
      if (!timeOnly(l)) return;
      lines++;
      const hasAgent = 'agent' in l;
      if (hasAgent && !who(l)) return;
      const b = bucket(ms);
      b.seen(String(l.ts));
      switch (l.type) {
        case 'decision':
          b.decision(l);
          break;
        case 'counters':
          b.counters(l);
          break;
        case 'lost':
          b.r.lost[String(l.source ?? 'unknown')] = (b.r.lost[String(l.source ?? 'unknown')] ?? 0) + Number(l.count ?? 0);
          break;
        case 'control':
          if (l.action === 'attach') b.r.agents.attached++;
          else if (l.action === 'detach') b.r.agents.detached++;
          break;
        case 'recovered':
          b.r.recovered++;
          break;
        case 'start':
          b.r.helmd_starts++;
          break;
      }
    });
  }
  policies.sort((a, b) => a.ms - b.ms);
  const periods = [...buckets.entries()].sort((a, b) => periodStart(a[0]) - periodStart(b[0]) || a[0].localeCompare(b[0])).map(([, b]) => b.finish(opts.top));
  for (const p of periods) {
    // In force: the last generation installed before the period's first line, and every one installed up to its last.
    const first = p.first ? Date.parse(p.first) : Infinity;
    const last = p.last ? Date.parse(p.last) : -Infinity;
    const before = policies.filter((x) => x.ms <= first);
    const during = policies.filter((x) => x.ms > first && x.ms <= last);
    p.generations = [...before.slice(-1), ...during].map((x) => x.g);
  }
  return {
    files,
    period: opts.period,
    since: opts.filter.since === undefined ? null : new Date(opts.filter.since).toISOString(),
    until: opts.filter.until === undefined ? null : new Date(opts.filter.until).toISOString(),
    lines,
    unreadable,
    periods,
  };
}

function cell(v: unknown): string {
  return String(v).replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function table(head: string[], rows: unknown[][]): string {
  if (rows.length === 0) return '_none_\n';
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.map(cell).join(' | ')} |`)].join('\n') + '\n';
}

function tallyRows(m: Record<string, Tally>): unknown[][] {
  return Object.entries(m)
    .sort((a, b) => b[1].deny + b[1].would_deny + b[1].allow - (a[1].deny + a[1].would_deny + a[1].allow) || a[0].localeCompare(b[0]))
    .map(([k, t]) => [k, t.allow, t.deny, t.would_deny]);
}

export function reportMarkdown(r: Report): string {
  const out: string[] = [];
  out.push('# helm audit report\n');
  out.push(`- files: ${r.files.map((f) => `\`${f}\``).join(', ') || '_none_'}`);
  out.push(`- range: ${r.since ?? 'beginning'} to ${r.until ?? 'end'}; per ${r.period === 'all' ? 'whole range' : r.period}`);
  out.push(`- lines read: ${r.lines}${r.unreadable ? `; **${r.unreadable} lines could not be read** (run helmctl audit verify)` : ''}\n`);
  if (r.periods.length === 0) out.push('_No lines in this range._\n');
  for (const p of r.periods) {
    const d = p.decisions;
    out.push(`## ${p.period === 'all' ? 'Whole range' : p.period}\n`);
    out.push(`${p.first ?? '?'} to ${p.last ?? '?'}\n`);
    out.push(`**Decision lines: ${d.allow + d.deny + d.would_deny}** — allow ${d.allow}, deny ${d.deny}, would_deny ${d.would_deny}.`);
    const lostTotal = Object.values(p.lost).reduce((a, b) => a + b, 0);
    out.push(lostTotal ? `**Lost: ${lostTotal}** (${Object.entries(p.lost).map(([k, v]) => `${k} ${v}`).join(', ')}).\n` : 'Lost: none.\n');
    out.push('### Decisions by agent\n');
    out.push(table(['agent', 'allow', 'deny', 'would_deny'], tallyRows(p.by_agent)));
    out.push('### Decisions by role\n');
    out.push(table(['role', 'allow', 'deny', 'would_deny'], tallyRows(p.by_role)));
    out.push('### Decisions by rule\n');
    out.push(table(['rule', 'allow', 'deny', 'would_deny'], tallyRows(p.by_rule)));
    out.push('### Decisions by operation\n');
    out.push(table(['op', 'allow', 'deny', 'would_deny'], tallyRows(p.by_op)));
    out.push('### Most denied targets\n');
    out.push(table(['target', 'op', 'denials'], p.top_denied.map((t) => [t.target, t.op, t.count])));
    out.push('### Dry-run: would-have-been denials\n');
    out.push(`${p.would_deny.total} in all.\n`);
    out.push(table(['target', 'op', 'would_deny'], p.would_deny.top_targets.map((t) => [t.target, t.op, t.count])));
    out.push('### Every decision, as the kernel counted it\n');
    out.push('Includes allowed operations that were not logged (by the allow-log level or the sampler).\n');
    out.push(
      table(
        ['agent', 'allowed', 'logged', 'unlogged', 'allow lost', 'denied', 'would_deny', 'deny lost'],
        Object.entries(p.counters)
          .sort((a, b) => a[0].localeCompare(b[0]))
          .map(([a, c]) => [a, c.allowed, c.allow_logged, c.allow_unlogged, c.allow_lost, c.denied, c.would_deny, c.deny_lost]),
      ),
    );
    out.push('### Policy generations in force\n');
    out.push(table(['generation', 'installed', 'cause', 'digest', 'policies'], p.generations.map((g) => [g.generation, g.installed, g.cause, g.digest.slice(0, 16), g.policies.join(', ')])));
    out.push(`Agents attached: ${p.agents.attached}, detached: ${p.agents.detached}. helmd starts: ${p.helmd_starts}. Lines cut short by a crash and recovered: ${p.recovered}.\n`);
  }
  return out.join('\n');
}
