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
  raw?(): { buf: Buffer; starts: readonly number[] };
}

export class AuditFeed {
  private readonly recent: FedRecord[] = [];
  private readonly subscribers = new Set<Subscriber>();
  /**
   * The last lines published while nobody subscribed, as bytes (a buffer reused from
   * one batch to the next), made FedRecords only when asked for or when a later, smaller
   * batch leaves some of them among the last `keep`: under a flood, batches of thousands
   * of lines, no string is made for them at all (kept until the next batch, a string per
   * line lived long enough to be moved to V8's old generation, and grew it by tens of MB).
   */
  private lazy: Buffer = Buffer.allocUnsafeSlow(0);
  private lazyStarts: number[] = [];
  private lazyCount = 0;

  constructor(private readonly keep = 1000) {}

  /** `lines`: an array, or the writer's WrittenLines (read as asked for: only the last `keep` when nobody subscribes). */
  publish(lines: PublishedLines): void {
    const n = lines.length;
    if (!this.subscribers.size && lines.raw && n > 0) {
      const from = Math.max(0, n - this.keep);
      if (n - from < this.keep) this.settle(); // the lines before still count among the last `keep`
      else {
        this.lazyCount = 0;
        this.recent.length = 0;
      }
      const { buf, starts } = lines.raw();
      const s0 = starts[from];
      const bytes = starts[n] - s0;
      if (this.lazy.length < bytes) this.lazy = Buffer.allocUnsafeSlow(Math.max(bytes, 2 * this.lazy.length, 1 << 16));
      buf.copy(this.lazy, 0, s0, starts[n]);
      this.lazyStarts.length = 0;
      for (let i = from; i <= n; i++) this.lazyStarts.push(starts[i] - s0);
      this.lazyCount = n - from;
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
    for (let i = 0; i < this.lazyCount; i++) this.recent.push(new FedRecord(this.lazy.toString('utf8', st[i], st[i + 1] - 1)));
    this.lazyCount = 0;
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
