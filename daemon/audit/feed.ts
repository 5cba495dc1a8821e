// The audit trail as it is written, for AuditService.Tail: the last records in
// memory, and subscribers that see every new one. The file stays the record of
// truth; a subscriber that cannot keep up is told so, never silently skipped.
export class FedRecord {
  private parsed?: Record<string, unknown>;

  /** `line`: exactly as in the file, chain included. */
  constructor(readonly line: string) {}

  /** The record as written (without its chain), parsed when first asked for: most lines never are. */
  get record(): Record<string, unknown> {
    if (!this.parsed) {
      const r = JSON.parse(this.line) as Record<string, unknown>;
      delete r.chain;
      this.parsed = r;
    }
    return this.parsed;
  }
}

export type RecordFilter = (r: Record<string, unknown>) => boolean;

interface Subscriber {
  filter: RecordFilter;
  deliver: (r: FedRecord) => void;
}

/** Lines as the writer hands them on: by index, and (WrittenLines) as the bytes they were written as. */
export interface PublishedLines {
  readonly length: number;
  at(i: number): string | undefined;
  /** The lines' bytes, each followed by a newline; starts[i] is where line i begins, starts[length] the end. */
  raw?(): { buf: Buffer; starts: ArrayLike<number> };
}

export class AuditFeed {
  private readonly recent: FedRecord[] = [];
  private readonly subscribers = new Set<Subscriber>();
  /**
   * The last lines published while nobody subscribed, as bytes, made FedRecords only
   * when asked for: no string is made for them while nobody asks (made strings, they
   * were kept for the next thousand lines, long enough to be moved to V8's old
   * generation, and under a flood grew it by tens of MB). The kept lines are the
   * `lazyCount` lines from entry `lazyFirst` of `lazyStarts` (where each starts in
   * `lazy`; the entry after the last is its end). Each batch's newest lines are
   * appended after them; the window moves to the buffer's start only when the
   * buffer is full, so a byte is copied about once, whatever the batches' sizes.
   * `recent` holds older lines than these.
   */
  private lazy: Buffer = Buffer.allocUnsafeSlow(0);
  private lazyStarts = new Int32Array(1);
  private lazyFirst = 0;
  private lazyCount = 0;

  constructor(private readonly keep = 1000) {}

  /** `lines`: an array, or the writer's WrittenLines (read as asked for: only the last `keep` when nobody subscribes). */
  publish(lines: PublishedLines): void {
    const n = lines.length;
    if (!this.subscribers.size && lines.raw && n > 0) {
      const from = Math.max(0, n - this.keep);
      const count = n - from;
      // The newest lines already kept that still count among the last `keep`, and older ones in `recent`.
      const old = Math.min(this.lazyCount, this.keep - count);
      const older = Math.min(this.recent.length, this.keep - count - old);
      if (older < this.recent.length) this.recent.splice(0, this.recent.length - older);
      this.lazyFirst += this.lazyCount - old;
      this.lazyCount = old;
      if (!old) this.lazyFirst = 0;
      const { buf, starts } = lines.raw();
      const s0 = starts[from];
      const add = starts[n] - s0;
      let ls = this.lazyStarts;
      const w0 = old ? ls[this.lazyFirst] : 0;
      const w1 = old ? ls[this.lazyFirst + old] : 0;
      if (w1 + add > this.lazy.length || this.lazyFirst + old + count + 1 > ls.length) {
        // Full: the kept lines to the start (into a bigger buffer if they and the new ones need more than half of it).
        const bytes = w1 - w0 + add;
        if (2 * bytes > this.lazy.length) {
          const bigger = Buffer.allocUnsafeSlow(Math.max(2 * bytes, 1 << 16));
          this.lazy.copy(bigger, 0, w0, w1);
          this.lazy = bigger;
        } else if (w0) this.lazy.copyWithin(0, w0, w1);
        if (2 * (old + count + 1) > ls.length) {
          const grown = new Int32Array(2 * (old + count + 1));
          for (let i = 0; i <= old; i++) grown[i] = ls[this.lazyFirst + i] - w0;
          this.lazyStarts = ls = grown;
        } else for (let i = 0; i <= old; i++) ls[i] = ls[this.lazyFirst + i] - w0;
        this.lazyFirst = 0;
      }
      const at = old ? ls[this.lazyFirst + old] : 0;
      buf.copy(this.lazy, at, s0, starts[n]);
      const base = this.lazyFirst + old - from;
      for (let i = from; i <= n; i++) ls[base + i] = at + starts[i] - s0;
      this.lazyCount = old + count;
      return;
    }
    this.settle();
    // Every line goes to the subscribers; only the last `keep` need to be remembered.
    const from = this.subscribers.size ? 0 : Math.max(0, n - this.keep);
    for (let i = from; i < n; i++) {
      const fed = new FedRecord(lines.at(i)!);
      this.recent.push(fed);
      for (const s of this.subscribers) if (s.filter(fed.record)) s.deliver(fed);
    }
    if (this.recent.length > this.keep) this.recent.splice(0, this.recent.length - this.keep);
  }

  /** The lines kept as bytes, made FedRecords. */
  private settle(): void {
    if (!this.lazyCount) return;
    const st = this.lazyStarts;
    for (let i = this.lazyFirst; i < this.lazyFirst + this.lazyCount; i++) this.recent.push(new FedRecord(this.lazy.toString('utf8', st[i], st[i + 1] - 1)));
    this.lazyCount = 0;
    this.lazyFirst = 0;
    if (this.recent.length > this.keep) this.recent.splice(0, this.recent.length - this.keep);
  }

  /** The last `n` records that pass `filter`, oldest first. */
  last(n: number, filter: RecordFilter): FedRecord[] {
    this.settle();
    const out: FedRecord[] = [];
    for (let i = this.recent.length - 1; i >= 0 && out.length < n; i--) if (filter(this.recent[i].record)) out.push(this.recent[i]);
    return out.reverse();
  }

  subscribe(filter: RecordFilter, deliver: (r: FedRecord) => void): () => void {
    const s = { filter, deliver };
    this.subscribers.add(s);
    return () => this.subscribers.delete(s);
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }
}

export interface TailFilter {
  agent?: string[];
  role?: string[];
  decision?: string[];
  op?: string[];
  type?: string[];
}

/** A record passes when each non-empty filter has its value (agents by name: resolve ids first). */
export function recordFilter(f: TailFilter): RecordFilter {
  const set = (v?: string[]) => (v && v.length ? new Set(v) : undefined);
  const agents = set(f.agent);
  const roles = set(f.role);
  const decisions = set(f.decision);
  const ops = set(f.op);
  const types = set(f.type);
  return (r) => {
    if (types && !types.has(String(r.type))) return false;
    if (decisions && !decisions.has(String(r.decision))) return false;
    if (ops && !ops.has(String(r.op))) return false;
    if (roles && !roles.has(String(r.role))) return false;
    if (agents && !agents.has(String(r.agent))) return false;
    return true;
  };
}
