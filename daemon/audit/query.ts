// `helmctl audit query` (and the output of `tail`): the lines of a trail's
// files that match a filter, as JSON lines or as a table.
import { compileFilter, targetOf, type AuditLineData, type LineFilter } from './filter';
import { readLines, trailFiles } from './files';
import { ruleKey } from './report';

export interface QueryResult {
  files: string[];
  read: number;
  matched: number;
  /** Lines that are not JSON (a line cut short, or not an audit line). */
  unreadable: number;
}

/** Hands each matching line (parsed, and its text) to `each`, in trail order; stops after `limit` matches. */
export async function queryTrail(args: string[], filter: LineFilter, each: (l: AuditLineData, text: string) => void, limit = Infinity): Promise<QueryResult> {
  const files = trailFiles(args).flatMap((g) => g.files);
  const match = compileFilter(filter);
  const r: QueryResult = { files, read: 0, matched: 0, unreadable: 0 };
  for (const file of files) {
    if (r.matched >= limit) break;
    await readLines(file, ({ text }) => {
      r.read++;
      let l: AuditLineData;
      try {
        l = JSON.parse(text) as AuditLineData;
      } catch {
        r.unreadable++;
        return;
      }
      if (!match(l)) return;
      r.matched++;
      each(l, text);
      if (r.matched >= limit) return false;
    });
  }
  return r;
}

export const TABLE_COLUMNS = ['ts', 'seq', 'type', 'decision', 'op', 'agent', 'role', 'rule', 'target', 'exe'] as const;

/** What a line that is not a decision says, in a word or two, for the table's target column. */
function summary(l: AuditLineData): string {
  switch (l.type) {
    case 'lost':
      return `${l.count} lost (${l.source}) since ${l.since}`;
    case 'counters':
      return `allowed ${l.allowed} (logged ${l.allow_logged}), denied ${l.denied}, would_deny ${l.would_deny}`;
    case 'control': {
      const subject = l.subject as { agent?: string; policy?: string } | undefined;
      const what = subject?.agent ?? subject?.policy ?? (l.target === 'helmd' ? 'helmd' : '');
      return [l.action, what, l.mode, l.source, l.generation !== undefined ? `generation ${l.generation}` : '', l.error].filter(Boolean).join(' ');
    }
    case 'dns':
      return `${l.host} ${l.qtype ?? ''} ${l.outcome ?? ''}`.trim();
    case 'file':
      return `${l.file}${l.prev_file ? ` after ${l.prev_file}` : ''}`;
    default:
      return '';
  }
}

export function tableRow(l: AuditLineData): string[] {
  const isDecision = l.type === 'decision';
  return [
    String(l.ts ?? ''),
    String(l.seq ?? ''),
    String(l.type ?? ''),
    isDecision ? String(l.decision ?? '') : '',
    isDecision ? String(l.op ?? '') : '',
    String(l.agent ?? ''),
    String(l.role ?? ''),
    isDecision ? ruleKey(l) : '',
    isDecision ? targetOf(l) + (Array.isArray(l.argv) ? ` [${(l.argv as string[]).join(' ')}]` : '') : summary(l),
    isDecision ? String(l.exe ?? '') : '',
  ];
}

/** Rows padded to their columns' widths (the last column is not padded). */
export function formatTable(rows: string[][], header: readonly string[] = TABLE_COLUMNS): string {
  const all = [header as string[], ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd()).join('\n') + '\n';
}
