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

export class AuditFeed {
  private readonly recent: FedRecord[] = [];
  private readonly subscribers = new Set<Subscriber>();

  constructor(private readonly keep = 1000) {}

  /** `lines`: an array, or the writer's WrittenLines (read as asked for: only the last `keep` when nobody subscribes). */
  publish(lines: { readonly length: number; at(i: number): string | undefined }): void {
    // Every line goes to the subscribers; only the last `keep` need to be remembered.
    const from = this.subscribers.size ? 0 : Math.max(0, lines.length - this.keep);
    for (let i = from; i < lines.length; i++) {
      const fed = new FedRecord(lines.at(i)!);
      this.recent.push(fed);
      for (const s of this.subscribers) if (s.filter(fed.record)) s.deliver(fed);
    }
    if (this.recent.length > this.keep) this.recent.splice(0, this.recent.length - this.keep);
  }

  /** The last `n` records that pass `filter`, oldest first. */
  last(n: number, filter: RecordFilter): FedRecord[] {
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
