// The audit trail's hash chain: each line ends with "chain", the SHA-256 of the
// previous line's chain and this line's own text, so deleting, reordering or
// editing a line breaks every chain after it. Computed on the raw text (never on
// re-serialised JSON), so verification does not depend on key order or spacing.
// A trail may span rotated files: the first line of each file (type "file")
// chains from the last line of the one before, so the chain runs through them all.
import crypto from 'node:crypto';

const SUFFIX = /,"chain":"([0-9a-f]{64})"\}$/;

// One call per line on the drain's path: crypto.hash (Node 20.12+) saves the Hash object createHash makes.
const sha256: (s: string) => string = crypto.hash ? (s) => crypto.hash('sha256', s, 'hex') : (s) => crypto.createHash('sha256').update(s).digest('hex');

/** SHA-256 of `data` in hex (the writer hashes each line where it lies in the batch buffer). */
export const sha256Hex: (data: string | Buffer) => string = crypto.hash
  ? (d) => crypto.hash('sha256', d, 'hex')
  : (d) => crypto.createHash('sha256').update(d).digest('hex');

/** The chain value before the first line of a trail. */
export const CHAIN_GENESIS = sha256('helm-audit-v1');

/** The line to write for `record` (which has no "chain" of its own), and its chain value. */
export function chainLine(prev: string, record: object): { line: string; chain: string } {
  return chainText(prev, JSON.stringify(record));
}

/** chainLine for a record already serialised: `body` is its JSON object text, without "chain". */
export function chainText(prev: string, body: string): { line: string; chain: string } {
  if (body.charCodeAt(0) !== 0x7b || body.charCodeAt(body.length - 1) !== 0x7d || body === '{}') throw new TypeError('an audit record is a non-empty object');
  const chain = sha256(`${prev}\n${body}`);
  return { line: `${body.slice(0, -1)},"chain":"${chain}"}`, chain };
}

/** The chain value a line carries, if it is a chained line. */
export function chainOf(line: string): string | undefined {
  return SUFFIX.exec(line)?.[1];
}

/** Does `line` carry the chain that follows `prev`? */
export function chainsFrom(prev: string, line: string): boolean {
  const c = chainOf(line);
  return c !== undefined && sha256(`${prev}\n${line.replace(SUFFIX, '}')}`) === c;
}

export type Verdict =
  | { ok: true; lines: number; last: string; notes: string[] }
  | { ok: false; line: number; reason: string; notes: string[] };

/** Where a line is: the file it is in and its 1-based number there. */
export interface LineAt {
  file: string;
  line: number;
}

export interface ChainBreak extends LineAt {
  reason: string;
}

/** The header every trail file starts with (type "file"). */
interface FileHeader {
  type: 'file';
  prev_file: string | null;
  prev_chain: string | null;
  prev_seq: number | null;
}

function parse(raw: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(raw);
    return v && typeof v === 'object' && !Array.isArray(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Checks a trail line by line, across as many files as it is given in order.
 * A line cut short by a crash is accepted only where helmd said so on restart:
 * the next line is a "recovered" record chained from the last good line.
 * `seq` must rise by one from line to line (a line recomputed with a valid chain
 * but dropped from the middle would still show there).
 */
export class ChainVerifier {
  private prev: string;
  private seq: number | undefined;
  private pendingTorn: LineAt | undefined;
  private started = false;
  private atFileStart = false;
  private file = '';
  private lastFile: string | undefined;
  private failed: ChainBreak | undefined;
  /** Chained lines checked so far. */
  lines = 0;
  readonly notes: string[] = [];

  constructor(start = CHAIN_GENESIS) {
    this.prev = start;
  }

  /** The chain value after the last line checked. */
  get last(): string {
    return this.prev;
  }

  get broken(): ChainBreak | undefined {
    return this.failed;
  }

  /** The next file of the sequence begins. */
  beginFile(file: string): void {
    this.file = file;
    this.atFileStart = true;
  }

  private fail(at: LineAt, reason: string): ChainBreak {
    this.failed ??= { ...at, reason };
    return this.failed;
  }

  /** Checks one line (without its newline); returns the first break found, then keeps returning it. */
  push(raw: string, lineNo: number): ChainBreak | undefined {
    if (this.failed) return this.failed;
    const at = { file: this.file, line: lineNo };
    const firstOfFile = this.atFileStart;
    this.atFileStart = false;
    const chain = chainOf(raw);

    if (this.pendingTorn) {
      const torn = this.pendingTorn;
      this.pendingTorn = undefined;
      if (chain === undefined || !raw.includes('"type":"recovered"') || !chainsFrom(this.prev, raw)) {
        return this.fail(torn, 'not a chained audit line (edited, inserted or cut short)');
      }
      this.notes.push(`${torn.file}:${torn.line}: cut short by a crash; helmd recorded the recovery on the next line`);
    } else if (chain === undefined) {
      // Possibly a line cut short by a crash: acceptable only if a recovery line follows.
      this.pendingTorn = at;
      return undefined;
    }

    const record = parse(raw);
    if (firstOfFile && record?.type === 'file') {
      const h = record as unknown as FileHeader;
      if (!this.started && h.prev_chain) {
        // The trail's earlier files were not given: start from what this file says it follows.
        this.prev = h.prev_chain;
        this.seq = typeof h.prev_seq === 'number' ? h.prev_seq : undefined;
        this.notes.push(`${this.file}: the trail starts earlier, in ${h.prev_file ?? 'a previous file'}, which was not given: checked from its last chain value as this file records it`);
      } else if (this.started && h.prev_chain !== this.prev) {
        return this.fail(at, `this file continues a different chain than ${this.lastFile ?? 'the file before'} ends with: a file between them is missing, or the files are out of order`);
      }
    } else if (firstOfFile && this.started) {
      return this.fail(at, `a rotated file starts with a "file" line chained to the previous file; this one does not`);
    }

    if (!chainsFrom(this.prev, raw)) {
      return this.fail(at, 'the chain is broken here: this line, or one before it, was edited, deleted or moved');
    }
    const seq = record?.seq;
    if (typeof seq === 'number') {
      if (this.seq !== undefined && seq !== this.seq + 1) {
        return this.fail(at, `seq ${seq} follows seq ${this.seq}: lines are missing or repeated`);
      }
      this.seq = seq;
    }
    this.prev = chain!;
    this.started = true;
    this.lastFile = this.file;
    this.lines++;
    return undefined;
  }

  /** The end of a file: `complete` says whether it ended with a newline. */
  endFile(lastLineNo: number, complete: boolean): ChainBreak | undefined {
    if (this.failed) return this.failed;
    if (!complete) return this.fail({ file: this.file, line: lastLineNo }, 'the last line is cut short (no newline): a write was interrupted and not yet recovered');
    return undefined;
  }

  /** The end of the sequence. */
  end(): ChainBreak | undefined {
    if (this.failed) return this.failed;
    if (this.pendingTorn) return this.fail(this.pendingTorn, 'not a chained audit line (edited, inserted or cut short)');
    return undefined;
  }
}

/** Checks a whole single-file trail held in memory. */
export function verifyChain(text: string, start = CHAIN_GENESIS): Verdict {
  const v = new ChainVerifier(start);
  v.beginFile('');
  const complete = text.endsWith('\n') || text === '';
  const lines = text.split('\n');
  if (complete) lines.pop();
  let broken: ChainBreak | undefined;
  for (let i = 0; i < lines.length && !broken; i++) {
    if (i === lines.length - 1 && !complete) break;
    broken = v.push(lines[i], i + 1);
  }
  broken ??= v.endFile(lines.length, complete) ?? v.end();
  if (broken) return { ok: false, line: broken.line, reason: broken.reason, notes: v.notes };
  return { ok: true, lines: v.lines, last: v.last, notes: v.notes };
}
