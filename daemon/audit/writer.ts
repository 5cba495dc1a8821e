// AuditTrail: appends hash-chained JSON lines to the audit file, durably.
//
// - Batched: records queue up while a write is in flight; the next write takes
//   all of them (one write(2) of whole lines to an O_APPEND fd), so lines are
//   never interleaved and the kernel ring keeps draining during a slow fsync.
// - fsync per policy: after every batch, on an interval, or never.
// - Rotation by size and age: the file is renamed to audit.NNNNNN.<UTC>.jsonl
//   (then gzip-compressed in the background if asked) and a new file begins with
//   a "file" line chained to the last line of the old one.
// - Nothing torn: a batch that cannot be written whole (disk full, I/O error) is
//   cut back off the file, its lines are counted as lost and said so in a `lost`
//   line (source "disk") as soon as writing works again; the error is reported
//   loudly and enforcement is never stopped. A last line cut short by a crash is
//   closed and recorded on open.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import zlib from 'node:zlib';
import { pipeline } from 'node:stream/promises';
import { CHAIN_GENESIS, chainOf, sha256Hex } from './chain';
import { native } from '../kernel/native';
import { lastCompleteLine, lastCompleteLineSync, rotatedFiles, rotatedName } from './files';
import { AUDIT_SCHEMA_VERSION, FormattedLine, LineRun } from './record';

export type FsyncPolicy = { kind: 'every-batch' } | { kind: 'interval'; ms: number } | { kind: 'none' };

/** `every-batch`, `interval:MS` or `none`. */
export function parseFsyncPolicy(text: string): FsyncPolicy {
  if (text === 'every-batch' || text === 'none') return { kind: text };
  const m = /^interval:(\d+)$/.exec(text);
  if (m && Number(m[1]) > 0) return { kind: 'interval', ms: Number(m[1]) };
  throw new Error(`fsync policy ${JSON.stringify(text)}: expected every-batch, interval:MS (MS > 0) or none`);
}

export function formatFsyncPolicy(p: FsyncPolicy): string {
  return p.kind === 'interval' ? `interval:${p.ms}` : p.kind;
}

/** `0` (never), or a size like 64M, 512K, 1G, 1048576. */
export function parseSize(text: string): number {
  const m = /^(\d+)([KMG]?)$/i.exec(text);
  if (!m) throw new Error(`size ${JSON.stringify(text)}: expected a number of bytes with an optional K, M or G`);
  return Number(m[1]) * { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2].toUpperCase() as '' | 'K' | 'M' | 'G'];
}

/** `0` (never), or a duration like 90s, 30m, 24h, 7d, 500ms. */
export function parseDuration(text: string): number {
  const m = /^(\d+)(ms|s|m|h|d)?$/.exec(text);
  if (!m) throw new Error(`duration ${JSON.stringify(text)}: expected a number with ms, s, m, h or d`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 'ms') as 'ms' | 's' | 'm' | 'h' | 'd'];
}

export interface RotationPolicy {
  /** Rotate once the file holds this many bytes (0: never). */
  maxBytes: number;
  /** Rotate at the first write after the file is this old (0: never). */
  maxAgeMs: number;
  /** gzip rotated files. */
  compress: boolean;
}

export interface TrailOptions {
  file: string;
  fsync: FsyncPolicy;
  rotation: RotationPolicy;
  /** Written into each file's first line: who wrote it. */
  origin: { host: string; version: string };
  /** A write, fsync, rotation or compression failed. Called at once, then at most every `reminderMs` while it lasts. */
  onError: (e: Error, what: string) => void;
  /** Writing works again after a failure; `lost` lines were not written meanwhile. */
  onRecovered?: (lost: number) => void;
  /** The file ended in a line cut short by a crash; it has been closed and recorded. */
  onTorn?: () => void;
  /** Lines that reached the file (chain included, no newline), in order; readable during the call only. */
  onWritten?: (lines: WrittenLines) => void;
  /** Most records taken into one write (bounds a batch's size and the rotation overshoot). */
  maxBatch?: number;
  /** How the hash chain is computed: in native code where it loads (the default), or in JS (the same bytes). */
  chain?: 'native' | 'js';
  reminderMs?: number;
  now?: () => Date;
}

export interface TrailStatus {
  file: string;
  state: 'ok' | 'failing';
  error?: string;
  failingSince?: string;
  linesWritten: number;
  /** Records that could not be written (disk full, I/O errors), since open. */
  linesLost: number;
  /** Records appended and not yet written nor counted lost (the batch being written included). */
  backlog: number;
  bytes: number;
  rotations: number;
  seq: number;
}

/** A record as queued: an object (seq set when written), a line formatted but for its seq, or a run of such lines. */
type Queued = Record<string, unknown> | FormattedLine | LineRun;

interface DiskLoss {
  count: number;
  since: string;
  error: string;
}

/**
 * Most records in one write (and fsync): at 200,000 lines a second, some 25
 * writes a second, so that an fsync of a few milliseconds is paid per
 * thousands of lines; about 5 MB of text.
 */
export const MAX_BATCH = 8192;
const DIR_MODE = 0o750;
const FILE_MODE = 0o640;
const ROTATE_RETRY_MS = 60_000;
/** While writes fail, how often to try again when nothing new arrives (to record the loss once the disk has room). */
const RETRY_MS = 2_000;

/**
 * Room left before each line's body in the batch buffer: what the line grows by once chained
 * (`,"chain":"`, 64 hex digits, `"}` and a newline, less the body's own closing brace). The
 * prev chain and a newline, hashed with the body, are put in its last 65 bytes.
 */
const CHAIN_GAP = 10 + 64 + 3 - 1;
const ENOSYS = 38;

type ChainLines = (buf: Buffer, start: number, ends: Int32Array, n: number, prev: Buffer) => number;
let nativeChain: ChainLines | null | undefined;
type PlaceLines = (src: Buffer, pos: Int32Array, first: number, n: number, out: Buffer, off: number, cap: number, seq: number, ends: Int32Array, endsAt: number) => number;
let nativePlace: PlaceLines | null | undefined;

/** build/libhelm.so's helm_place_lines, or null where it cannot be loaded. */
function placeLinesNative(): PlaceLines | null {
  if (nativePlace === undefined) {
    try {
      nativePlace = native().helm_place_lines;
    } catch {
      nativePlace = null;
    }
  }
  return nativePlace;
}

/** The native chain (build/libhelm.so's helm_chain_lines), or null where it cannot be loaded. */
function chainLinesNative(): ChainLines | null {
  if (nativeChain === undefined) {
    try {
      nativeChain = native().helm_chain_lines;
    } catch {
      nativeChain = null;
    }
  }
  return nativeChain;
}

/**
 * The chain over a batch in the layout helm_chain_lines (native/helm_shim.c) takes, in JS: slot
 * i is CHAIN_GAP bytes of room then line i's body, ending at ends[i]; each slot becomes the body
 * chained. Returns the last chain.
 */
function chainLinesJs(out: Buffer, start: number, ends: Int32Array, n: number, prev: string): string {
  let chain = prev;
  let slot = start;
  for (let i = 0; i < n; i++) {
    const b = slot + CHAIN_GAP;
    const e = ends[i];
    out.write(chain, b - 65, 'latin1');
    out[b - 1] = 0x0a;
    chain = sha256Hex(out.subarray(b - 65, e));
    out.copyWithin(slot, b, e - 1);
    let o = slot + e - 1 - b;
    o += out.write(',"chain":"', o, 'latin1');
    o += out.write(chain, o, 'latin1');
    out[o++] = 0x22;
    out[o++] = 0x7d;
    out[o++] = 0x0a;
    slot = e;
  }
  return chain;
}

/**
 * The lines of a batch just written, read out of the batch's buffer as asked
 * for (most never are: the live tail keeps the last thousand). Valid during
 * the onWritten call only: the buffer is reused by the next batch.
 */
export class WrittenLines {
  private readonly n: number;

  constructor(
    private readonly buf: Buffer,
    /** Where each line starts; entry `n` (by default the last) is the end of the batch. */
    private readonly starts: ArrayLike<number>,
    n = starts.length - 1,
  ) {
    this.n = n;
  }

  get length(): number {
    return this.n;
  }

  /** Line i, chain included, without its newline. */
  at(i: number): string {
    return this.buf.toString('utf8', this.starts[i], this.starts[i + 1] - 1);
  }

  /** The bytes of the lines, each followed by its newline, and where each starts (one more entry: the end). */
  raw(): { buf: Buffer; starts: ArrayLike<number> } {
    return { buf: this.buf, starts: this.starts };
  }

  *[Symbol.iterator](): IterableIterator<string> {
    for (let i = 0; i < this.length; i++) yield this.at(i);
  }
}

/** `n` (a whole number >= 0) in decimal ASCII at `off`; returns the offset after it. */
function writeUint(buf: Buffer, off: number, n: number): number {
  let len = 1;
  for (let x = n; x >= 10; x = (x - (x % 10)) / 10) len++;
  for (let i = off + len - 1; i >= off; i--) {
    const d = n % 10;
    buf[i] = 0x30 + d;
    n = (n - d) / 10;
  }
  return off + len;
}

function nowIso(d: Date): string {
  return d.toISOString().replace(/(\.\d{3})Z$/, '$1000000Z');
}

async function writeFully(fd: number, buf: Buffer): Promise<void> {
  for (let off = 0; off < buf.length; ) {
    const { bytesWritten } = await new Promise<{ bytesWritten: number }>((resolve, reject) =>
      fs.write(fd, buf, off, buf.length - off, null, (err, bytesWritten) => (err ? reject(err) : resolve({ bytesWritten }))),
    );
    if (bytesWritten <= 0) throw Object.assign(new Error('write wrote nothing'), { code: 'EIO' });
    off += bytesWritten;
  }
}

function fdatasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
}

function ftruncate(fd: number, len: number): Promise<void> {
  return new Promise((resolve, reject) => fs.ftruncate(fd, len, (err) => (err ? reject(err) : resolve())));
}

/** Makes a rename or unlink in `dir` durable. */
async function syncDir(dir: string): Promise<void> {
  const h = await fsp.open(dir, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

function parseLine(text: string | undefined): Record<string, unknown> | undefined {
  if (!text) return undefined;
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/** The first line of a plain file, if it is complete within the first 64 KiB. */
function firstLineSync(file: string): string | undefined {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(1 << 16);
    const n = fs.readSync(fd, buf, 0, buf.length, 0);
    const nl = buf.subarray(0, n).indexOf(0x0a);
    return nl < 0 ? undefined : buf.subarray(0, nl).toString('utf8');
  } finally {
    fs.closeSync(fd);
  }
}

export class AuditTrail {
  private fd: number;
  private size: number;
  private createdAt: number;
  private linesInFile: number;
  private prev: string;
  private seq: number;
  private lastIndex: number;
  private queue: Queued[] = [];
  /** Lines that must start the next write: the file header, a recovery note. */
  private head: Record<string, unknown>[] = [];
  /** Bytes before the next write's lines: a newline that closes a line cut short. */
  private prefix = '';
  /** Where a batch is written before it goes to the file (reused: one batch is written at a time). */
  private out: Buffer = Buffer.allocUnsafeSlow(0);
  /** Where each line of the batch being built ends (reused). */
  private ends = new Int32Array(0);
  /** Where each line of the batch built starts, and its end (reused; WrittenLines reads it). */
  private starts = new Int32Array(0);
  /** Lines queued (a LineRun counts its lines). */
  private queuedLines = 0;
  /** The chain before a batch and after it, as helm_chain_lines takes it. */
  private readonly chainHex = Buffer.alloc(64);
  private running: Promise<void> | undefined;
  private diskLoss: DiskLoss | undefined;
  private lossTotal = 0;
  private failing: { error: string; since: string; lastReport: number } | undefined;
  private linesWritten = 0;
  private rotations = 0;
  private rotateRetryAt = 0;
  private dirty = false;
  private syncTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private compressing: Promise<void> = Promise.resolve();
  private closed = false;
  /** Records appended, and records written or counted lost: written() waits for the second to reach the first. */
  private appended = 0;
  private settled = 0;
  private waiters: { upTo: number; resolve: () => void }[] = [];
  private progressWaiters: (() => void)[] = [];
  private readonly now: () => Date;
  private readonly maxBatch: number;
  private readonly reminderMs: number;

  private constructor(private readonly opts: TrailOptions, state: { fd: number; size: number; createdAt: number; linesInFile: number; prev: string; seq: number; lastIndex: number }) {
    this.fd = state.fd;
    this.size = state.size;
    this.createdAt = state.createdAt;
    this.linesInFile = state.linesInFile;
    this.prev = state.prev;
    this.seq = state.seq;
    this.lastIndex = state.lastIndex;
    this.now = opts.now ?? (() => new Date());
    this.maxBatch = opts.maxBatch ?? MAX_BATCH;
    this.reminderMs = opts.reminderMs ?? 60_000;
    if (opts.fsync.kind === 'interval') {
      this.syncTimer = setInterval(() => void this.syncIfDirty(), opts.fsync.ms);
      this.syncTimer.unref();
    }
  }

  get file(): string {
    return this.opts.file;
  }

  /**
   * Opens (or creates) the trail: continues the chain and seq of what is there
   * (the active file, or the last rotated one if the active file is missing or
   * empty), closes a line cut short by a crash, finishes what a crash
   * interrupted (compression), and starts a new file with its "file" line.
   */
  static async open(opts: TrailOptions): Promise<AuditTrail> {
    const file = opts.file;
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: DIR_MODE });
    const rotated = rotatedFiles(file);
    const fd = fs.openSync(file, 'a', FILE_MODE);
    const size = fs.fstatSync(fd).size;
    const now = (opts.now ?? (() => new Date()))();
    let prev = CHAIN_GENESIS;
    let seq = 0;
    let torn = false;
    let createdAt = now.getTime();
    let linesInFile = 0;
    const head: Record<string, unknown>[] = [];
    let chained = false;
    if (size > 0) {
      const last = lastCompleteLineSync(file);
      torn = !(await endsWithNewline(file, size));
      const c = last && chainOf(last);
      if (c) {
        chained = true;
        prev = c;
        const r = parseLine(last);
        seq = typeof r?.seq === 'number' ? r.seq : 0;
      }
      const first = parseLine(firstLineSync(file));
      if (typeof first?.ts === 'string' && !Number.isNaN(Date.parse(first.ts))) createdAt = Date.parse(first.ts);
      linesInFile = 2; // not just a header: a restart may rotate an old file
    }
    let prevFile: string | null = null;
    const lastRotated = rotated[rotated.length - 1];
    if (!chained && lastRotated) {
      // A new file (or one whose only line was cut short): it continues the last rotated one.
      const last = await lastCompleteLine(lastRotated.path);
      const c = last && chainOf(last);
      if (c) {
        prev = c;
        const r = parseLine(last);
        seq = typeof r?.seq === 'number' ? r.seq : 0;
        prevFile = path.basename(lastRotated.path);
      }
    }
    if (size === 0) {
      head.push(fileHeader(opts, now, path.basename(file), prevFile, prevFile ? prev : null, prevFile ? seq : null));
    }
    const trail = new AuditTrail(opts, { fd, size, createdAt, linesInFile, prev, seq, lastIndex: rotated.length ? rotated[rotated.length - 1].index : 0 });
    if (torn) {
      // Close the cut line and say so, chained from the last good line.
      trail.prefix = '\n';
      head.push({ v: AUDIT_SCHEMA_VERSION, ts: nowIso(now), seq: 0, type: 'recovered', note: 'the line above was cut short by a crash or power loss' });
      opts.onTorn?.();
    }
    trail.head = head;
    trail.finishInterrupted(rotated);
    if (head.length) trail.kick();
    return trail;
  }

  /** Queues records (objects, or lines formatted but for their seq); each gets its seq and chain when written. Never blocks, never throws. */
  append(records: (object | FormattedLine)[]): void {
    if (this.closed || records.length === 0) return;
    let lines = 0;
    for (const r of records) {
      this.queue.push(r as Queued);
      lines += r instanceof LineRun ? r.count : 1;
    }
    this.queuedLines += lines;
    this.appended += lines;
    this.kick();
  }

  /** Resolves once every record appended so far is written (or counted lost); later appends do not hold it up. */
  written(): Promise<void> {
    const upTo = this.appended;
    if (this.settled >= upTo || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ upTo, resolve }));
  }

  /**
   * Resolves true once the batch being written is written (or counted lost);
   * false at once when nothing is being written.
   */
  progress(): Promise<boolean> {
    if (!this.running) return Promise.resolve(false);
    return new Promise((resolve) => this.progressWaiters.push(() => resolve(true)));
  }

  private settle(n: number): void {
    this.settled += n;
    if (this.progressWaiters.length) {
      const ws = this.progressWaiters;
      this.progressWaiters = [];
      for (const w of ws) w();
    }
    if (!this.waiters.length) return;
    const still: typeof this.waiters = [];
    for (const w of this.waiters) (this.settled >= w.upTo ? w.resolve() : still.push(w));
    this.waiters = still;
  }

  /** Records queued and not yet written. */
  get backlog(): number {
    return this.queuedLines;
  }

  /** Resolves once everything queued so far has been written (or counted lost). */
  async flush(): Promise<void> {
    while (this.running) await this.running;
  }

  status(): TrailStatus {
    return {
      file: this.opts.file,
      state: this.failing ? 'failing' : 'ok',
      ...(this.failing ? { error: this.failing.error, failingSince: this.failing.since } : {}),
      linesWritten: this.linesWritten,
      linesLost: this.lossTotal,
      backlog: this.appended - this.settled,
      bytes: this.size,
      rotations: this.rotations,
      seq: this.seq,
    };
  }

  /** Writes what is queued, syncs (unless the policy is none), waits for compression, closes. */
  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    if (this.syncTimer) clearInterval(this.syncTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.opts.fsync.kind !== 'none') await fdatasync(this.fd).catch((e) => this.report(e as Error, 'fsync'));
    await this.compressing;
    fs.closeSync(this.fd);
    for (const w of this.waiters) w.resolve();
    this.waiters = [];
  }

  private kick(): void {
    if (this.running) return;
    this.running = this.pump().finally(() => {
      this.running = undefined;
      if (this.queue.length && !this.failing) this.kick();
    });
  }

  /** Writes until the queue is empty, or until a write fails (then a timer, or the next append, tries again). */
  private async pump(): Promise<void> {
    while (this.queue.length || this.head.length || this.diskLoss) {
      // Hashing and serialising a batch is synchronous work: let other callbacks (the control socket) in between.
      await new Promise((r) => setImmediate(r));
      const { batch, lines } = this.take(this.maxBatch);
      if (this.rotationDue()) await this.rotate();
      const ok = await this.writeBatch(batch, lines);
      this.settle(lines);
      if (!ok) {
        // What is queued meanwhile is tried once, then counted too: memory stays bounded while the disk is full.
        if (this.queue.length) continue;
        this.retryLater();
        return;
      }
    }
  }

  /** The first `max` lines queued (a run split if need be), out of the queue. */
  private take(max: number): { batch: Queued[]; lines: number } {
    const q = this.queue;
    let lines = 0;
    let i = 0;
    for (; i < q.length && lines < max; i++) {
      const r = q[i];
      if (!(r instanceof LineRun)) lines++;
      else if (lines + r.count <= max) lines += r.count;
      else {
        const [head, rest] = r.split(max - lines);
        q[i] = rest;
        lines = max;
        const batch = q.slice(0, i);
        batch.push(head);
        q.splice(0, i);
        this.queuedLines -= lines;
        return { batch, lines };
      }
    }
    const batch = q.splice(0, i);
    this.queuedLines -= lines;
    return { batch, lines };
  }

  private retryLater(): void {
    if (this.retryTimer || this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.kick();
    }, RETRY_MS);
    this.retryTimer.unref();
  }

  private rotationDue(): boolean {
    const r = this.opts.rotation;
    if (this.linesInFile < 2 || this.now().getTime() < this.rotateRetryAt) return false;
    return (r.maxBytes > 0 && this.size >= r.maxBytes) || (r.maxAgeMs > 0 && this.now().getTime() - this.createdAt >= r.maxAgeMs);
  }

  /** One write of whole lines; false if it failed (then nothing of it is in the file, and the batch is counted lost). */
  private async writeBatch(batch: Queued[], batchLines: number): Promise<boolean> {
    const now = this.now();
    const records: Queued[] = [...this.head];
    if (this.diskLoss) {
      records.push({
        v: AUDIT_SCHEMA_VERSION,
        ts: nowIso(now),
        seq: 0,
        type: 'lost',
        source: 'disk',
        count: String(this.diskLoss.count),
        total: String(this.lossTotal),
        since: this.diskLoss.since,
        error: this.diskLoss.error,
      });
    }
    for (const r of batch) records.push(r);
    // The batch is written into one reused buffer: each line's body after room for its chain,
    // then the chain computed over the whole batch in one pass (natively where it can), each
    // line's `prev chain, newline, body` hashed where it lies and the chained line put in its
    // slot. No string per line, no join, no second copy into a Buffer.
    let out = this.out;
    let o = 0;
    if (this.prefix) {
      if (out.length < this.prefix.length) out = this.grow(0, this.prefix.length);
      o = out.write(this.prefix, 0, 'latin1');
    }
    const first = o;
    const nLines = records.length - batch.length + batchLines;
    if (this.ends.length < nLines) this.ends = new Int32Array(Math.max(nLines, 2 * this.ends.length));
    if (this.starts.length < nLines + 1) this.starts = new Int32Array(Math.max(nLines + 1, 2 * this.starts.length));
    const ends = this.ends;
    const place = this.opts.chain === 'js' ? null : placeLinesNative();
    let seq = this.seq;
    let line = 0;
    for (let i = 0; i < records.length; i++) {
      const r = records[i];
      if (r instanceof LineRun) {
        // A run: each line after its chain's room, its seq put in, in one native call (or the same in JS).
        const need = r.bytes + r.count * (20 + CHAIN_GAP);
        // Grown at once for the batch's lines, if the others are like these (not doubled step by step:
        // each buffer left behind stays resident until V8 collects it).
        if (out.length - o < need) out = this.grow(o, Math.ceil((need / r.count) * (nLines - line)));
        if (place) {
          const e = place(r.buf, r.pos, r.first, r.count, out, o, out.length, seq + 1, ends, line);
          if (e < 0) throw new Error(`cannot place the audit lines (errno ${-e})`);
          o = e;
        } else {
          for (let k = 4 * r.first, j = 0; j < r.count; j++, k += 4) {
            const b = o + CHAIN_GAP;
            let e = b + r.buf.copy(out, b, r.pos[k + 1], r.pos[k + 2]);
            e = writeUint(out, e, seq + 1 + j);
            e += r.buf.copy(out, e, r.pos[k + 2], r.pos[k + 3]);
            ends[line + j] = e;
            o = e;
          }
        }
        seq += r.count;
        line += r.count;
        r.arena?.consumedBuf(r.buf);
        continue;
      }
      seq++;
      let text: string | undefined;
      let need: number;
      if (r instanceof FormattedLine) need = r.end - r.start + 20;
      else {
        r.seq = seq;
        text = JSON.stringify(r);
        need = text.length * 3;
      }
      need += CHAIN_GAP;
      if (out.length - o < need) out = this.grow(o, need);
      const b = o + CHAIN_GAP;
      let e: number;
      if (text === undefined) {
        const f = r as FormattedLine;
        e = b + f.buf.copy(out, b, f.start, f.at);
        e = writeUint(out, e, seq);
        e += f.buf.copy(out, e, f.at, f.end);
        f.arena?.consumed(f);
      } else e = b + out.write(text, b);
      if (out[b] !== 0x7b || out[e - 1] !== 0x7d || e - b < 3) throw new TypeError('an audit record is a non-empty object');
      ends[line++] = e;
      o = e;
    }
    // Slots are back to back: each line starts where the one before ends.
    const starts = this.starts;
    starts[0] = first;
    starts.set(ends.subarray(0, nLines), 1);
    let chain: string | undefined;
    const chainNative = this.opts.chain === 'js' ? null : chainLinesNative();
    if (chainNative) {
      this.chainHex.write(this.prev, 0, 'latin1');
      const rc = chainNative(out, first, ends, nLines, this.chainHex);
      if (rc === 0) chain = this.chainHex.toString('latin1');
      else if (rc === -ENOSYS) nativeChain = null; // no OpenSSL in this process: nothing was touched, JS does it
      else throw new Error(`cannot chain the audit lines (errno ${-rc})`);
    }
    chain ??= chainLinesJs(out, first, ends, nLines, this.prev);
    const buf = out.subarray(0, o);
    const lines = new WrittenLines(out, starts, nLines);
    const at = this.size;
    try {
      await writeFully(this.fd, buf);
    } catch (e) {
      // Nothing half-written stays in the file: cut it back to where this batch began.
      let grown = true;
      try {
        grown = fs.fstatSync(this.fd).size > at;
      } catch {
        /* unknown: truncate to be sure */
      }
      if (grown) await ftruncate(this.fd, at).catch((e2) => this.report(e2 as Error, 'truncating a failed write'));
      this.lossTotal += batchLines;
      this.diskLoss = { count: (this.diskLoss?.count ?? 0) + batchLines, since: this.diskLoss?.since ?? nowIso(now), error: (e as Error).message };
      this.fail(e as Error, 'write');
      return false;
    }
    this.size += buf.length;
    this.prev = chain;
    this.seq = seq;
    try {
      // The lines are read out of the batch buffer: only during this call.
      this.opts.onWritten?.(lines);
    } catch (e) {
      this.report(e as Error, 'handing written lines on');
    }
    this.linesWritten += lines.length;
    this.linesInFile += lines.length;
    this.head = [];
    this.prefix = '';
    const recovered = this.diskLoss?.count;
    this.diskLoss = undefined;
    if (this.opts.fsync.kind === 'every-batch') {
      try {
        await fdatasync(this.fd);
      } catch (e) {
        // The lines are written (the page cache has them) but may not be durable: reported, not counted lost.
        this.fail(e as Error, 'fsync');
        return true;
      }
    } else this.dirty = true;
    if (this.failing) {
      this.failing = undefined;
      this.opts.onRecovered?.(recovered ?? 0);
    }
    return true;
  }

  /** The batch buffer with room for `need` more bytes after the `used` ones (which it keeps). */
  private grow(used: number, need: number): Buffer {
    const bigger = Buffer.allocUnsafeSlow(Math.max(2 * this.out.length, used + need, 1 << 16));
    this.out.copy(bigger, 0, 0, used);
    this.out = bigger;
    return bigger;
  }

  private fail(e: Error, what: string): void {
    const t = this.now().getTime();
    if (!this.failing) {
      this.failing = { error: `${what}: ${e.message}`, since: nowIso(this.now()), lastReport: t };
      this.opts.onError(e, what);
    } else if (t - this.failing.lastReport >= this.reminderMs) {
      this.failing.lastReport = t;
      this.failing.error = `${what}: ${e.message}`;
      this.opts.onError(e, `${what} (still failing; ${this.lossTotal} lines lost so far)`);
    }
  }

  private report(e: Error, what: string): void {
    this.opts.onError(e, what);
  }

  private async syncIfDirty(): Promise<void> {
    if (!this.dirty || this.closed) return;
    this.dirty = false;
    await fdatasync(this.fd).catch((e) => this.fail(e as Error, 'fsync'));
  }

  private async rotate(): Promise<void> {
    const now = this.now();
    const index = this.lastIndex + 1;
    const to = rotatedName(this.opts.file, index, now);
    if (this.opts.fsync.kind !== 'none') {
      try {
        await fdatasync(this.fd);
      } catch (e) {
        this.fail(e as Error, 'fsync before rotation');
      }
    }
    try {
      await fsp.rename(this.opts.file, to);
    } catch (e) {
      this.rotateRetryAt = now.getTime() + ROTATE_RETRY_MS;
      this.report(e as Error, `rotating to ${to} (writing on in the same file)`);
      return;
    }
    let fd: number;
    try {
      fd = fs.openSync(this.opts.file, 'a', FILE_MODE);
    } catch (e) {
      await fsp.rename(to, this.opts.file).catch(() => undefined);
      this.rotateRetryAt = now.getTime() + ROTATE_RETRY_MS;
      this.report(e as Error, `opening a new ${this.opts.file} (writing on in the same file)`);
      return;
    }
    fs.closeSync(this.fd);
    this.fd = fd;
    this.size = 0;
    this.linesInFile = 0;
    this.createdAt = now.getTime();
    this.lastIndex = index;
    this.rotations++;
    this.head.unshift(fileHeader(this.opts, now, path.basename(this.opts.file), path.basename(to), this.prev, this.seq));
    await syncDir(path.dirname(this.opts.file)).catch((e) => this.report(e as Error, 'syncing the directory after rotation'));
    if (this.opts.rotation.compress) this.compressLater(to);
  }

  private compressLater(file: string): void {
    this.compressing = this.compressing.then(async () => void (await compressFile(file))).catch((e) => this.report(e as Error, `compressing ${file} (left uncompressed)`));
  }

  /** After a crash: remove half-written compressed copies, compress what was left plain. */
  private finishInterrupted(rotated: ReturnType<typeof rotatedFiles>): void {
    for (const f of rotated) {
      for (const leftover of [`${f.path}.tmp`, `${f.path.replace(/\.gz$/, '')}.gz.tmp`]) fs.rmSync(leftover, { force: true });
      if (f.compressed) {
        // The compressed copy is complete (it is renamed into place only then): the plain one can go.
        fs.rmSync(f.path.replace(/\.gz$/, ''), { force: true });
      } else if (this.opts.rotation.compress) this.compressLater(f.path);
    }
  }
}

async function endsWithNewline(file: string, size: number): Promise<boolean> {
  const h = await fsp.open(file, 'r');
  try {
    const b = Buffer.alloc(1);
    await h.read(b, 0, 1, size - 1);
    return b[0] === 0x0a;
  } finally {
    await h.close();
  }
}

function fileHeader(opts: TrailOptions, now: Date, file: string, prevFile: string | null, prevChain: string | null, prevSeq: number | null): Record<string, unknown> {
  return {
    v: AUDIT_SCHEMA_VERSION,
    ts: nowIso(now),
    seq: 0,
    type: 'file',
    file,
    prev_file: prevFile,
    prev_chain: prevChain,
    prev_seq: prevSeq,
    host: opts.origin.host,
    version: opts.origin.version,
  };
}

/** file → file.gz, atomically: the .gz appears complete or not at all; then the plain file goes. */
export async function compressFile(file: string): Promise<string> {
  const gz = `${file}.gz`;
  const tmp = `${gz}.tmp`;
  try {
    await pipeline(fs.createReadStream(file), zlib.createGzip(), fs.createWriteStream(tmp, { mode: FILE_MODE }));
    const h = await fsp.open(tmp, 'r');
    try {
      await h.sync();
    } finally {
      await h.close();
    }
    await fsp.rename(tmp, gz);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw e;
  }
  await syncDir(path.dirname(file));
  await fsp.rm(file);
  return gz;
}
