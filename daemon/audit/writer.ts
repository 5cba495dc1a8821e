// auditWriter: appends hash-chained JSON lines to the audit file. A batch is
// written with one write(2) to an O_APPEND fd, so lines are never interleaved; a
// write error is reported loudly and never stops enforcement (the kernel keeps
// deciding). On open it continues the chain of what is there, and a last line cut
// short by a crash is closed and recorded.
import fs from 'node:fs';
import path from 'node:path';
import { CHAIN_GENESIS, chainLine, chainOf } from './chain';

/** The chain to continue from, and whether the file ends in a line cut short. */
function tailOf(fd: number): { prev: string; torn: boolean } {
  const size = fs.fstatSync(fd).size;
  if (size === 0) return { prev: CHAIN_GENESIS, torn: false };
  const len = Math.min(size, 1 << 20);
  const buf = Buffer.alloc(len);
  fs.readSync(fd, buf, 0, len, size - len);
  const text = buf.toString('utf8');
  const torn = !text.endsWith('\n');
  const lines = text.split('\n').filter(Boolean);
  if (torn) lines.pop();
  const last = lines.length ? chainOf(lines[lines.length - 1]) : undefined;
  // A file whose last complete line is not chained (or that is all one torn line) starts a new chain.
  return { prev: last ?? CHAIN_GENESIS, torn };
}

export interface AuditWriter {
  readonly path: string;
  /** Appends records; returns their lines as written (chain included). */
  append(records: object[]): string[];
  close(): void;
}

export function openAuditWriter(file: string, onError: (e: Error) => void, onTorn?: () => void): AuditWriter {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o750 });
  const fd = fs.openSync(file, 'a+', 0o640);
  let { prev, torn } = tailOf(fd);
  let failing = false;
  const write = (records: object[], prefix = ''): string[] => {
    if (records.length === 0) return [];
    let chain = prev;
    const lines = records.map((r) => {
      const c = chainLine(chain, r);
      chain = c.chain;
      return c.line;
    });
    const bytes = Buffer.from(prefix + lines.join('\n') + '\n');
    try {
      for (let off = 0; off < bytes.length; ) off += fs.writeSync(fd, bytes, off);
      prev = chain; // only what reached the file moves the chain on
      failing = false;
    } catch (e) {
      if (!failing) onError(e as Error);
      failing = true;
    }
    return lines;
  };
  if (torn) {
    // Close the cut line and say so, chained from the last good line.
    write([{ v: 1, ts: new Date().toISOString(), type: 'recovered', note: 'the line above was cut short by a crash or power loss' }], '\n');
    torn = false;
    onTorn?.();
  }
  return {
    path: file,
    append(records) {
      return write(records);
    },
    close() {
      fs.closeSync(fd);
    },
  };
}
