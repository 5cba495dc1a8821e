// `helmctl audit tail FILE|DIR`: follows a trail's active file as helmd appends
// to it, across rotations (when the name comes to mean a new file, the old one
// is read to its end first, then the new one from its start; if helmd rotated
// more than once meanwhile, the files in between are read from the rotated,
// possibly compressed, copies, by seq), with filters.
// Reads files only: following a running helmd over its socket is the control
// plane's.
import fs from 'node:fs';
import path from 'node:path';
import { compileFilter, type AuditLineData, type LineFilter } from './filter';
import { readLines, rotatedFiles } from './files';

export interface FollowOptions {
  /** How many of the matching lines already in the file to show first (Infinity: all). */
  backlog: number;
  /** Keep following (otherwise stop at the end of the file). */
  follow: boolean;
  filter: LineFilter;
  each: (l: AuditLineData, text: string) => void;
  /** Said when the follower moves on to a new file. */
  onNote?: (message: string) => void;
  pollMs?: number;
  signal?: AbortSignal;
}

const ROTATED = /\.\d{6,}\.\d{8}T\d{6}Z(\.jsonl)?(\.gz)?$/;

/** The file to follow: the target itself, or the one active trail file in a directory. */
export function activeFileOf(target: string): string {
  const st = fs.statSync(target);
  if (!st.isDirectory()) return target;
  const active = fs.readdirSync(target).filter((n) => n.endsWith('.jsonl') && !ROTATED.test(n));
  if (active.length === 1) return path.join(target, active[0]);
  if (active.length === 0) throw new Error(`${target}: no active audit file (*.jsonl) in this directory`);
  throw new Error(`${target}: several audit files (${active.join(', ')}); name the one to follow`);
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });

class LineReader {
  private pos = 0;
  private partial = Buffer.alloc(0);
  constructor(readonly fd: number) {}

  /** Complete lines appended since the last call; a line still being written waits for its newline. */
  read(): string[] {
    const lines: string[] = [];
    const buf = Buffer.alloc(1 << 16);
    for (;;) {
      const n = fs.readSync(this.fd, buf, 0, buf.length, this.pos);
      if (n <= 0) break;
      this.pos += n;
      let data = Buffer.concat([this.partial, buf.subarray(0, n)]);
      let nl: number;
      while ((nl = data.indexOf(0x0a)) >= 0) {
        lines.push(data.subarray(0, nl).toString('utf8'));
        data = data.subarray(nl + 1);
      }
      this.partial = Buffer.from(data);
    }
    return lines;
  }

  get offset(): number {
    return this.pos;
  }

  restart(): void {
    this.pos = 0;
    this.partial = Buffer.alloc(0);
  }
}

export async function followTrail(target: string, opts: FollowOptions): Promise<void> {
  const file = activeFileOf(target);
  const match = compileFilter(opts.filter);
  const pollMs = opts.pollMs ?? 250;
  const parse = (text: string): AuditLineData | undefined => {
    try {
      return JSON.parse(text) as AuditLineData;
    } catch {
      return undefined;
    }
  };
  let lastSeq = 0;
  const emit = (texts: string[]) => {
    for (const t of texts) {
      const l = parse(t);
      if (typeof l?.seq === 'number') lastSeq = l.seq;
      if (l && match(l)) opts.each(l, t);
    }
  };
  /**
   * Lines as they come; a file's first line that says more lines came before it
   * than we have seen (helmd rotated twice between two looks) is preceded by
   * those lines, read from the rotated files.
   */
  const deliver = async (texts: string[]) => {
    for (const text of texts) {
      const head = parse(text);
      const upTo = head?.type === 'file' && typeof head.prev_seq === 'number' ? head.prev_seq : undefined;
      if (upTo !== undefined && upTo > lastSeq) {
        for (const f of rotatedFiles(file)) {
          const take = ({ text: t }: { text: string }) => {
            const l = parse(t);
            if (typeof l?.seq === 'number' && l.seq > lastSeq && l.seq <= upTo) emit([t]);
          };
          try {
            await readLines(f.path, take);
          } catch (e) {
            // Compressed meanwhile: the .gz is renamed into place before the plain file goes.
            if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || f.compressed) throw e;
            await readLines(`${f.path}.gz`, take);
          }
        }
      }
      emit([text]);
    }
  };

  let reader = new LineReader(fs.openSync(file, 'r'));
  const existing = reader.read();
  const first = existing.filter((t) => {
    const l = parse(t);
    return !!l && match(l);
  });
  emit(opts.backlog === Infinity ? first : opts.backlog > 0 ? first.slice(-opts.backlog) : []);
  for (let i = existing.length - 1; i >= 0; i--) {
    const seq = parse(existing[i])?.seq;
    if (typeof seq === 'number') {
      lastSeq = seq;
      break;
    }
  }
  if (!opts.follow) {
    fs.closeSync(reader.fd);
    return;
  }
  try {
    while (!opts.signal?.aborted) {
      await sleep(pollMs, opts.signal);
      await deliver(reader.read());
      let now: fs.Stats | undefined;
      try {
        now = fs.statSync(file);
      } catch {
        now = undefined; // rotated away, the new file not there yet
      }
      const mine = fs.fstatSync(reader.fd);
      if (!now || now.ino !== mine.ino || now.dev !== mine.dev) {
        // helmd writes nothing more to a file once it has renamed it: read it to its end.
        await deliver(reader.read());
        if (now) {
          // Opened before the old one is closed: if it is gone again (rotated once more since
          // the stat), the old reader stays, read to its end, and the next look tries again.
          // (Closing first left reader.fd closed for the finally below to close twice.)
          let fd: number;
          try {
            fd = fs.openSync(file, 'r');
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
            throw e;
          }
          fs.closeSync(reader.fd);
          reader = new LineReader(fd);
          opts.onNote?.(`${file}: rotated; following the new file`);
          await deliver(reader.read());
        }
      } else if (now.size < reader.offset) {
        reader.restart();
        opts.onNote?.(`${file}: truncated; reading it from the start`);
      }
    }
  } finally {
    fs.closeSync(reader.fd);
  }
}
