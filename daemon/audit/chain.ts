// The audit trail's hash chain: each line ends with "chain", the SHA-256 of the
// previous line's chain and this line's own text, so deleting, reordering or
// editing a line breaks every chain after it. Computed on the raw text (never on
// re-serialised JSON), so verification does not depend on key order or spacing.
import { createHash } from 'node:crypto';

/** The chain value before the first line of a trail. */
export const CHAIN_GENESIS = sha256('helm-audit-v1');

const SUFFIX = /,"chain":"([0-9a-f]{64})"\}$/;

function sha256(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

/** The line to write for `record` (which has no "chain" of its own), and its chain value. */
export function chainLine(prev: string, record: object): { line: string; chain: string } {
  const body = JSON.stringify(record);
  if (!body.startsWith('{') || body === '{}') throw new TypeError('an audit record is a non-empty object');
  const chain = sha256(`${prev}\n${body}`);
  return { line: `${body.slice(0, -1)},"chain":"${chain}"}`, chain };
}

/** The chain value a line carries, if it is a chained line. */
export function chainOf(line: string): string | undefined {
  return SUFFIX.exec(line)?.[1];
}

export type Verdict =
  | { ok: true; lines: number; last: string; notes: string[] }
  | { ok: false; line: number; reason: string; notes: string[] };

/**
 * Checks a whole trail. A line cut short by a crash is accepted only where helmd
 * said so on restart: the next line is a "recovered" record chained from the last
 * good line.
 */
export function verifyChain(text: string, start = CHAIN_GENESIS): Verdict {
  const notes: string[] = [];
  const lines = text.split('\n');
  const complete = text.endsWith('\n') || text === '';
  if (!complete) return { ok: false, line: lines.length, reason: 'the last line is cut short (no newline): a write was interrupted and not yet recovered', notes };
  lines.pop();
  let prev = start;
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i];
    const chain = chainOf(raw);
    const recoveredNext = () => {
      const next = lines[i + 1];
      if (next === undefined || !next.includes('"type":"recovered"')) return false;
      const body = next.replace(SUFFIX, '}');
      const c = chainOf(next);
      return c !== undefined && sha256(`${prev}\n${body}`) === c;
    };
    if (chain === undefined) {
      if (recoveredNext()) {
        notes.push(`line ${i + 1}: cut short by a crash; helmd recorded the recovery on line ${i + 2}`);
        continue;
      }
      return { ok: false, line: i + 1, reason: 'not a chained audit line (edited, inserted or cut short)', notes };
    }
    const body = raw.replace(SUFFIX, '}');
    if (sha256(`${prev}\n${body}`) !== chain) {
      return { ok: false, line: i + 1, reason: 'the chain is broken here: this line, or one before it, was edited, deleted or moved', notes };
    }
    prev = chain;
  }
  return { ok: true, lines: lines.length, last: prev, notes };
}
