// The files of an audit trail: the active file (e.g. audit.jsonl) and the files
// rotated out of it (audit.000001.20261130T142041Z.jsonl, gzip-compressed as
// .jsonl.gz), how they are named, found, ordered and read line by line.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';

const EXT = '.jsonl';

/** The parts of an active file's name: audit.jsonl → stem "audit", ext ".jsonl". */
export function trailName(active: string): { dir: string; stem: string; ext: string } {
  const base = path.basename(active);
  const ext = base.endsWith(EXT) && base.length > EXT.length ? EXT : '';
  return { dir: path.dirname(active), stem: base.slice(0, base.length - ext.length), ext };
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** UTC, for file names: 20261130T142041Z. */
export function fileStamp(d: Date): string {
  return d.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

/** The name a file gets when it is rotated out: its index in the trail and when. */
export function rotatedName(active: string, index: number, when: Date): string {
  const { dir, stem, ext } = trailName(active);
  return path.join(dir, `${stem}.${String(index).padStart(6, '0')}.${fileStamp(when)}${ext}`);
}

export interface RotatedFile {
  path: string;
  index: number;
  compressed: boolean;
}

/** Rotated files of the trail whose active file is `active`, oldest first (one entry per index; .gz preferred). */
export function rotatedFiles(active: string): RotatedFile[] {
  const { dir, stem, ext } = trailName(active);
  const re = new RegExp(`^${escapeRe(stem)}\\.(\\d{6,})\\.\\d{8}T\\d{6}Z${escapeRe(ext)}(\\.gz)?$`);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const byIndex = new Map<number, RotatedFile>();
  for (const name of names) {
    const m = re.exec(name);
    if (!m) continue;
    const f = { path: path.join(dir, name), index: Number(m[1]), compressed: !!m[2] };
    const had = byIndex.get(f.index);
    // A compressed copy is only ever renamed into place complete; the plain file may still be there after a crash.
    if (!had || (f.compressed && !had.compressed)) byIndex.set(f.index, f);
  }
  return [...byIndex.values()].sort((a, b) => a.index - b.index);
}

const ROTATED_RE = /^(.*)\.(\d{6,})\.\d{8}T\d{6}Z(\.jsonl)?(\.gz)?$/;

/** Sort key: trail (directory and stem), then rotation index; the active file last. */
function orderKey(file: string): { trail: string; index: number } {
  const dir = path.dirname(path.resolve(file));
  const base = path.basename(file);
  const m = ROTATED_RE.exec(base);
  if (m) return { trail: path.join(dir, m[1]), index: Number(m[2]) };
  const { stem } = trailName(base);
  return { trail: path.join(dir, stem), index: Number.MAX_SAFE_INTEGER };
}

export interface TrailGroup {
  /** Directory and stem: one trail. */
  trail: string;
  files: string[];
}

/**
 * What the reading commands read, in trail order: a directory stands for every
 * trail file in it (rotated ones first, by index, then the active file); a file
 * for itself. Files are grouped by trail.
 */
export function trailFiles(args: string[]): TrailGroup[] {
  const files: string[] = [];
  for (const a of args) {
    let st: fs.Stats;
    try {
      st = fs.statSync(a);
    } catch (e) {
      throw new Error(`${a}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or directory' : (e as Error).message}`);
    }
    if (st.isDirectory()) {
      for (const name of fs.readdirSync(a).sort()) {
        if (name.endsWith('.jsonl') || name.endsWith('.jsonl.gz')) files.push(path.join(a, name));
      }
    } else files.push(a);
  }
  const groups = new Map<string, { file: string; index: number; order: number }[]>();
  files.forEach((file, order) => {
    const k = orderKey(file);
    const g = groups.get(k.trail) ?? [];
    if (!g.some((x) => path.resolve(x.file) === path.resolve(file))) g.push({ file, index: k.index, order });
    groups.set(k.trail, g);
  });
  return [...groups.entries()].map(([trail, g]) => ({ trail, files: g.sort((a, b) => a.index - b.index || a.order - b.order).map((x) => x.file) }));
}

export interface LineEvent {
  text: string;
  /** 1-based, within its file. */
  line: number;
}

/** The bytes of a file, decompressed if it is gzip (by its magic number, whatever its name). */
export function openTrailStream(file: string): NodeJS.ReadableStream {
  const fd = fs.openSync(file, 'r');
  const magic = Buffer.alloc(2);
  const n = fs.readSync(fd, magic, 0, 2, 0);
  const raw = fs.createReadStream('', { fd, start: 0 });
  if (n === 2 && magic[0] === 0x1f && magic[1] === 0x8b) return raw.pipe(zlib.createGunzip());
  return raw;
}

/**
 * Lines of one trail file, streamed (a rotated file may be large). Returns
 * whether the file ended with a newline: a last line without one was cut short.
 */
export async function readLines(file: string, each: (l: LineEvent) => void | false): Promise<{ lines: number; complete: boolean }> {
  const stream = openTrailStream(file);
  let rest = '';
  let line = 0;
  let stopped = false;
  const decoder = new TextDecoder('utf-8');
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    if (stopped) break;
    rest += decoder.decode(chunk, { stream: true });
    let nl: number;
    let start = 0;
    while ((nl = rest.indexOf('\n', start)) >= 0) {
      line++;
      if (each({ text: rest.slice(start, nl), line }) === false) {
        stopped = true;
        break;
      }
      start = nl + 1;
    }
    rest = rest.slice(start);
  }
  (stream as unknown as { destroy?: () => void }).destroy?.();
  if (stopped) return { lines: line, complete: true };
  rest += decoder.decode();
  if (rest.length > 0) {
    line++;
    each({ text: rest, line });
    return { lines: line, complete: false };
  }
  return { lines: line, complete: true };
}

/** The last complete line of a file (compressed or not), or undefined if it has none. */
export async function lastCompleteLine(file: string): Promise<string | undefined> {
  if (!isGzip(file)) return lastCompleteLineSync(file);
  let last: string | undefined;
  let prev: string | undefined;
  const r = await readLines(file, (l) => {
    prev = last;
    last = l.text;
  });
  return r.complete ? last : prev;
}

function isGzip(file: string): boolean {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(2);
    return fs.readSync(fd, b, 0, 2, 0) === 2 && b[0] === 0x1f && b[1] === 0x8b;
  } finally {
    fs.closeSync(fd);
  }
}

/** The last complete line of a plain file, reading backwards from its end. */
export function lastCompleteLineSync(file: string): string | undefined {
  const fd = fs.openSync(file, 'r');
  try {
    let pos = fs.fstatSync(fd).size;
    let tail = Buffer.alloc(0);
    while (pos > 0) {
      const len = Math.min(1 << 16, pos);
      pos -= len;
      const buf = Buffer.alloc(len);
      fs.readSync(fd, buf, 0, len, pos);
      tail = Buffer.concat([buf, tail]);
      // A last line cut short (no newline) is skipped: the last complete line ends at the last newline.
      const lastNl = tail.lastIndexOf(0x0a);
      if (lastNl < 0) continue;
      const before = lastNl > 0 ? tail.lastIndexOf(0x0a, lastNl - 1) : -1;
      if (before >= 0 || pos === 0) return tail.subarray(before + 1, lastNl).toString('utf8');
    }
    return undefined;
  } finally {
    fs.closeSync(fd);
  }
}
