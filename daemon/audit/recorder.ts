// AuditRecorder: everything between the kernel's audit output and the trail.
// It drains the two rings (denials, logged allows) into decision lines, writes
// a `lost` line for every change of a loss counter (per ring in the kernel,
// records that could not be decoded, lines the disk refused), a `counters` line
// per agent from the kernel's per-agent counters (so that unlogged allows are
// accounted for), helmd's `start` and `stop`, and whatever else helmd records
// (control and DNS lines), all through one AuditTrail.
import os from 'node:os';
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { C, LAYOUT, EventDecoder, type AgentCounters } from '../kernel/layout';
import type { AuditLevel, EventSource, KernelBinding, Ring } from '../kernel/binding';
import type { RingSizes } from '../kernel/enforcer';
import type { Policy, Rule } from '../policy/types';
import { AuditTrail, MAX_BATCH, formatFsyncPolicy, type WrittenLines, type FsyncPolicy, type RotationPolicy, type TrailStatus } from './writer';
import { AUDIT_SCHEMA_VERSION, DECISIONS, FormattedLine, LineArena, LineRun, formatDecision, rfc3339Nanos, type AuditContext, type LossSource } from './record';
import { BatchFormatter, nativeFormatter, type BatchSink } from './format-batch';

export interface RecorderOptions {
  file: string;
  fsync: FsyncPolicy;
  rotation: RotationPolicy;
  level: AuditLevel;
  rings?: RingSizes;
  /** How often each agent's counters are written (when they changed). */
  countersIntervalMs: number;
  lostPollMs?: number;
  version: string;
  logger: Logger;
  /** Decisions as their lines are made: what they were, the last one's ts, how many (helmd keeps per-agent figures for its agent list). */
  onDecision?: (decision: string, ts: string, agentId: bigint, count: number) => void;
  /** Decision lines formatted natively, a drained batch at a time, where build/libhelm.so has it (default true; false: all in JS, the same bytes). */
  nativeFormat?: boolean;
  /** Lines as written, chain included (the control plane's live tail). */
  onWritten?: (lines: WrittenLines) => void;
  /**
   * What of the kernel's ring loss counters an earlier helmd already wrote to the
   * trail (the counters are pinned and outlive helmd), and since when.
   */
  lostBaseline?: { deny: bigint; allow: bigint; since?: string };
  /** Called once a ring's `lost` line is written: what is now reported (helmd keeps it for the next run). */
  onLostReported?: (ring: Ring, total: bigint, since: string) => void;
}

/** What the recorder needs of the kernel (KernelEnforcer, or a fake in tests). */
export type RecorderKernel = Pick<KernelBinding, 'openEvents' | 'lostEvents' | 'agentCounters' | 'forgetAgent' | 'setAuditLevel'>;

export interface RecordedAgent {
  id: bigint;
  name: string;
  role: string;
  cgroupPath: string;
  cgroupId: bigint;
  labels: Record<string, string>;
}

/**
 * Records waiting in the trail's queue above which draining pauses (one batch
 * being written, one more waiting): the kernel ring holds them meanwhile, and
 * counts what does not fit, rather than helmd's memory. Draining resumes as
 * soon as a batch is written.
 */
const BACKLOG_HIGH = MAX_BATCH;
/** How long an idle drain waits for the ring before looking again (records wake it at once). */
const DRAIN_POLL_MS = 500;
/** Bytes drained per call: about 220 records, so that the control socket gets its turns during a flood. */
const DRAIN_BUFFER = 256 * 1024;
/**
 * A drain that found less than this (about 55 records) is followed by a pause of SETTLE_MS
 * before the next, so that records gather in the ring (which holds some 28,000: at 250,000
 * a second, 1 ms is 250 of them): a drain's fixed costs (native calls, promises, the trail's
 * bookkeeping) were paid for a handful of records each when helmd kept up with a flood,
 * some 14,000 drains a second, most of helmd's allocations and a good part of its CPU.
 */
const SMALL_DRAIN = 64 * 1024;
const SETTLE_MS = 1;
/** How long after detach an agent's kernel counters are dropped. */
const FORGET_AFTER_MS = 5_000;
const ZERO: AgentCounters = { allowed: 0n, allowUnlogged: 0n, allowLost: 0n, denied: 0n, wouldDeny: 0n, denyLost: 0n };

function nowNs(): string {
  return rfc3339Nanos(BigInt(Date.now()) * 1_000_000n);
}

function head(type: string): { v: number; ts: string; seq: number; type: string } {
  return { v: AUDIT_SCHEMA_VERSION, ts: nowNs(), seq: 0, type };
}

function counts(c: AgentCounters): Record<string, number> {
  return {
    allowed: Number(c.allowed),
    allow_logged: Number(c.allowed - c.allowUnlogged - c.allowLost),
    allow_unlogged: Number(c.allowUnlogged),
    allow_lost: Number(c.allowLost),
    denied: Number(c.denied),
    would_deny: Number(c.wouldDeny),
    deny_lost: Number(c.denyLost),
  };
}

function minus(a: AgentCounters, b: AgentCounters): AgentCounters {
  return {
    allowed: a.allowed - b.allowed,
    allowUnlogged: a.allowUnlogged - b.allowUnlogged,
    allowLost: a.allowLost - b.allowLost,
    denied: a.denied - b.denied,
    wouldDeny: a.wouldDeny - b.wouldDeny,
    denyLost: a.denyLost - b.denyLost,
  };
}

const same = (a: AgentCounters, b: AgentCounters): boolean => Object.keys(a).every((k) => a[k as keyof AgentCounters] === b[k as keyof AgentCounters]);

/** A digest of what policies say (not where they were written): equal digests, equal policies. */
export function policyDigest(policies: Policy[]): string {
  // The bytes of JSON.stringify(policies) without locations, put together from each rule's text,
  // kept per rule object: helmd reuses the rules an edit did not touch (RuleCache), and on a
  // 10,000-rule policy writing every rule out again took longer than the apply before it.
  const parts: string[] = [];
  for (const p of policies) {
    const text = JSON.stringify(p, (k, v) => (k === 'rules' ? RULES_HERE : withoutLoc(k, v)));
    const at = text.indexOf(RULES_HERE_JSON);
    parts.push(at < 0 ? text : `${text.slice(0, at)}[${p.rules.map(ruleJson).join(',')}]${text.slice(at + RULES_HERE_JSON.length)}`);
  }
  return createHash('sha256').update(`[${parts.join(',')}]`).digest('hex');
}

/** Stands for a policy's rules in its text (no name, role or mode can hold a NUL). */
const RULES_HERE = '\0rules\0';
const RULES_HERE_JSON = JSON.stringify(RULES_HERE);
const ruleTexts = new WeakMap<Rule, string>();

/** What a digest leaves out: where things were written. */
function withoutLoc(k: string, v: unknown): unknown {
  return k === 'loc' ? undefined : v;
}

function ruleJson(rule: Rule): string {
  let text = ruleTexts.get(rule);
  if (text === undefined) {
    text = JSON.stringify(rule, withoutLoc);
    ruleTexts.set(rule, text);
  }
  return text;
}

export class AuditRecorder {
  private readers = new Map<Ring, EventSource>();
  private lostTimer?: NodeJS.Timeout;
  private countersTimer?: NodeJS.Timeout;
  private pending: (object | FormattedLine | LineRun)[] = [];
  private flushQueued = false;
  private readonly lostReported = new Map<LossSource, { total: bigint; since: string }>();
  private readonly lastCounters = new Map<bigint, { at: string; counters: AgentCounters }>();
  private readonly agents = new Map<bigint, RecordedAgent>();
  /** A number, not a bigint: counted once per line on the drain path, and a bigint's ++ allocates (exact to 2^53). */
  private decisions = 0;
  /** Decodes each record into the same object (the drain's hot path). */
  private readonly decoder = new EventDecoder();
  private readonly lineInfo = { ts: '' };
  /**
   * Where decision lines wait for the writer: 1 MiB chunks, reused once the writer has
   * copied their lines (the lines go to the trail only, in order). Eight kept at most:
   * what a flood keeps waiting (one batch of MAX_BATCH lines of some 600 bytes, BACKLOG_HIGH)
   * fits, so no chunk is dropped under a flood; a dropped chunk's memory stays until V8
   * collects its buffer, which with few collections (the drain allocates little) was
   * long after: 15-20 MB of dropped chunks resident at a flood's end, when only four were kept.
   */
  private readonly arena = new LineArena(1 << 20, 8);
  /** Where the lines formatDecision writes go when the batch formatter writes into `arena` (whose chunks must hold lines in queue order). */
  private readonly jsArena = new LineArena();
  /** The native batch formatter, where it loads. */
  private batcher?: BatchFormatter;
  private readonly sink: BatchSink;
  /** Records the per-record path could not take, in batches the formatter took (the readers count the rest). */
  private undecoded = 0n;
  private decodeError?: Error;
  /** A run of native lines of one agent and decision, for onDecision. */
  private run: { agentId: bigint; decision: number; count: number; line?: FormattedLine; lines?: LineRun; i: number } = { agentId: 0n, decision: 0, count: 0, i: 0 };
  private readonly log: Logger;
  /** Bytes each ring's last drain found. */
  private readonly lastDrain = new Map<Ring, number>();

  private constructor(
    private readonly opts: RecorderOptions,
    private readonly kernel: RecorderKernel,
    private readonly ctx: AuditContext,
    private readonly realtimeOffset: bigint,
    readonly trail: AuditTrail,
  ) {
    this.log = opts.logger;
    const fmt = opts.nativeFormat === false ? null : nativeFormatter();
    if (fmt) this.batcher = new BatchFormatter(fmt, ctx, realtimeOffset, this.arena);
    this.sink = {
      line: (line, decision, agentId) => {
        this.decisions++;
        this.pending.push(line);
        const run = this.run;
        if (run.count && (run.agentId !== agentId || run.decision !== decision)) this.endRun();
        run.agentId = agentId;
        run.decision = decision;
        run.count++;
        run.line = line;
        run.lines = undefined;
      },
      run: (lines) => {
        this.pending.push(lines);
      },
      decided: (decision, agentId, lines, i) => {
        this.decisions++;
        const run = this.run;
        if (run.count && (run.agentId !== agentId || run.decision !== decision)) this.endRun();
        run.agentId = agentId;
        run.decision = decision;
        run.count++;
        run.line = undefined;
        run.lines = lines;
        run.i = i;
      },
      record: (view) => {
        this.endRun();
        try {
          this.onEvent(view);
        } catch (e) {
          this.undecoded++;
          this.decodeError = e as Error;
        }
      },
    };
  }

  /** onDecision for the run of native lines so far. */
  private endRun(): void {
    const run = this.run;
    if (!run.count) return;
    let buf: Buffer, start: number, at: number;
    if (run.lines) {
      const k = 4 * (run.lines.first + run.i);
      buf = run.lines.buf;
      start = run.lines.pos[k + 1];
      at = run.lines.pos[k + 2];
    } else {
      const line = run.line!;
      buf = line.buf;
      start = line.start;
      at = line.at;
    }
    // The line's ts: after `{"v":1,"ts":"`, up to `","seq":`.
    this.opts.onDecision?.(DECISIONS[run.decision] ?? 'deny', buf.toString('latin1', start + 13, at - 8), run.agentId, run.count);
    run.count = 0;
    run.line = undefined;
    run.lines = undefined;
  }

  /** A drained batch, through the native formatter. */
  private onRecords(buf: Buffer, bytes: number): void {
    try {
      this.batcher!.format(buf, bytes, this.sink);
    } catch (e) {
      // Before any record went on (see BatchFormatter.format): each the per-record way.
      this.log.error({ err: e }, 'formatting audit lines natively failed; formatting them one by one');
      for (let off = 0; off + 8 <= bytes; off += 8 + ((buf.readUInt32LE(off) + 7) & ~7)) this.sink.record(new DataView(buf.buffer, buf.byteOffset + off + 8, buf.readUInt32LE(off)));
    }
    this.endRun();
    if (this.decodeError) {
      this.log.error({ err: this.decodeError }, 'audit record could not be decoded');
      this.decodeError = undefined;
    }
    this.flushSoon();
  }

  /** Opens the trail, sets the kernel's allow-log level, and starts draining both rings. */
  static async start(opts: RecorderOptions, kernel: RecorderKernel, ctx: AuditContext, realtimeOffset: bigint): Promise<AuditRecorder> {
    const log = opts.logger;
    const trail = await AuditTrail.open({
      file: opts.file,
      fsync: opts.fsync,
      rotation: opts.rotation,
      origin: { host: os.hostname(), version: opts.version },
      onError: (e, what) =>
        log.error({ err: e, file: opts.file, what }, 'AUDIT WRITE FAILED: decisions are still enforced, but lines are being lost (counted, and recorded once writing works again)'),
      onRecovered: (lost) => log.warn({ file: opts.file, lost }, 'audit trail writable again; the lines lost meanwhile are recorded in a lost line'),
      onTorn: () => log.warn({ file: opts.file }, 'the audit trail ended in a line cut short (crash or power loss); recorded and continued'),
      onWritten: opts.onWritten,
    });
    const r = new AuditRecorder(opts, kernel, ctx, realtimeOffset, trail);
    kernel.setAuditLevel(opts.level);
    const since = nowNs();
    for (const s of ['deny-ring', 'allow-ring', 'decode', 'disk'] as const) r.lostReported.set(s, { total: 0n, since });
    const base = opts.lostBaseline;
    if (base) {
      r.lostReported.set('deny-ring', { total: base.deny, since: base.since || since });
      r.lostReported.set('allow-ring', { total: base.allow, since: base.since || since });
    }
    r.record({
      ...head('start'),
      version: opts.version,
      pid: process.pid,
      allow_log: { level: opts.level.allows, ...(opts.level.allows === 'sampled' ? { rate: opts.level.rate, burst: opts.level.burst } : {}) },
      fsync: formatFsyncPolicy(opts.fsync),
      ...(opts.rings ? { rings: { deny_bytes: opts.rings.deny, deny_records: ringRecords(opts.rings.deny), allow_bytes: opts.rings.allow, allow_records: ringRecords(opts.rings.allow) } } : {}),
      rotation: { max_bytes: opts.rotation.maxBytes, max_age_ms: opts.rotation.maxAgeMs, compress: opts.rotation.compress },
    });
    for (const ring of ['deny', 'allow'] as const) {
      const reader = kernel.openEvents(ring, DRAIN_BUFFER);
      r.readers.set(ring, reader);
      // A batch goes back to the kernel only once it is written: what a killed helmd had read but not written is read again.
      reader.start(
        (rec) => r.onEvent(rec),
        (e) => log.error({ err: e, ring }, 'ring buffer drain failed'),
        {
          gate: () => r.room(ring),
          pollMs: DRAIN_POLL_MS,
          onBatch: () => r.written(),
          batch: r.batcher
            ? (buf, bytes) => {
                r.lastDrain.set(ring, bytes);
                r.onRecords(buf, bytes);
              }
            : undefined,
        },
      );
    }
    r.lostTimer = setInterval(() => r.reportLost(), opts.lostPollMs ?? 1000);
    r.countersTimer = setInterval(() => r.writeCounters('interval'), opts.countersIntervalMs);
    r.lostTimer.unref();
    r.countersTimer.unref();
    return r;
  }

  /** Queues lines of any type (each starts with v, ts, seq, type). */
  record(...records: object[]): void {
    this.pending.push(...records);
    this.flushSoon();
  }

  /** Resolves once every line recorded so far is written (or counted lost). */
  written(): Promise<void> {
    if (this.pending.length) this.flush();
    return this.trail.written();
  }

  private flushSoon(): void {
    // One append per drained batch: the batch's records arrive synchronously.
    if (this.flushQueued) return;
    this.flushQueued = true;
    queueMicrotask(() => this.flush());
  }

  private flush(): void {
    this.flushQueued = false;
    const batch = this.pending;
    this.pending = [];
    this.trail.append(batch);
  }

  /** Resolves when the trail's queue is short enough to drain more, after letting other work (the control socket) run. */
  private async room(ring?: Ring): Promise<void> {
    const last = ring ? this.lastDrain.get(ring) ?? 0 : 0;
    if (last > 0 && last < SMALL_DRAIN) {
      // A few records last time: let more gather in the ring (it is drained without waiting while records come).
      this.lastDrain.set(ring!, 0);
      await new Promise((r) => setTimeout(r, SETTLE_MS));
    } else await new Promise((r) => setImmediate(r));
    while (this.trail.backlog > BACKLOG_HIGH) if (!(await this.trail.progress())) break;
  }

  private onEvent(view: DataView): void {
    const raw = this.decoder.decode(view);
    if (raw.type !== C.HELM_EVENT_DECISION) return;
    this.decisions++;
    const line = formatDecision(raw, this.realtimeOffset, this.ctx, this.batcher ? this.jsArena : this.arena, this.lineInfo);
    this.opts.onDecision?.(DECISIONS[raw.decision] ?? 'deny', this.lineInfo.ts, raw.agentId, 1);
    this.pending.push(line);
    this.flushSoon();
  }

  /** From now on the agent's counters are written (helmd writes its attach line). */
  agentAttached(a: RecordedAgent, opts: { adopted?: boolean } = {}): void {
    this.agents.set(a.id, a);
    this.lastCounters.set(a.id, { at: nowNs(), counters: ZERO });
    if (opts.adopted) {
      // Governed since an earlier helmd: its kernel counters run on (they are pinned). One line with
      // their totals so far; from here on the lines count what this helmd saw.
      this.writeAgentCounters(a, 'adopted', true);
    }
  }

  /** The agent's last counters line (before helmd's detach line); the kernel's counters for it are dropped after. */
  agentDetached(a: RecordedAgent): void {
    this.writeAgentCounters(a, 'detach', true);
    this.agents.delete(a.id);
    this.lastCounters.delete(a.id);
    // A decision already under way when the cgroup was released would re-create the entry: drop it a little later.
    setTimeout(() => {
      try {
        this.kernel.forgetAgent(a.id);
      } catch (e) {
        this.log.warn({ err: e, agent: a.name }, 'cannot drop the kernel counters of a detached agent');
      }
    }, FORGET_AFTER_MS).unref();
  }

  /** A `counters` line for each agent whose counters moved (or for every agent, when `always`). */
  writeCounters(reason: 'interval' | 'stop', always = false): void {
    for (const a of this.agents.values()) this.writeAgentCounters(a, reason, always);
  }

  private writeAgentCounters(a: RecordedAgent, reason: string, always: boolean): void {
    let now: AgentCounters | undefined;
    try {
      now = this.kernel.agentCounters(a.id);
    } catch (e) {
      this.log.error({ err: e, agent: a.name }, 'cannot read the kernel counters of an agent');
      return;
    }
    if (!now) return;
    const last = this.lastCounters.get(a.id) ?? { at: nowNs(), counters: ZERO };
    if (!always && same(now, last.counters)) return;
    const at = nowNs();
    this.record({ ...head('counters'), reason, ...agentFields(a), since: last.at, ...counts(minus(now, last.counters)), total: counts(now) });
    this.lastCounters.set(a.id, { at, counters: now });
  }

  /** Loss so far, per source. */
  lost(): Record<LossSource, bigint> {
    let decode = this.undecoded;
    for (const r of this.readers.values()) decode += r.undelivered;
    return {
      'deny-ring': this.kernel.lostEvents('deny'),
      'allow-ring': this.kernel.lostEvents('allow'),
      decode,
      disk: BigInt(this.trail.status().linesLost),
    };
  }

  totalLost(): bigint {
    return Object.values(this.lost()).reduce((a, b) => a + b, 0n);
  }

  /** A `lost` line for every source whose counter moved (the trail writes its own for the disk). */
  reportLost(): void {
    let lost: Record<LossSource, bigint>;
    try {
      lost = this.lost();
    } catch (e) {
      this.log.error({ err: e }, 'cannot read the kernel loss counters');
      return;
    }
    const now = nowNs();
    for (const source of ['deny-ring', 'allow-ring', 'decode'] as const) {
      const before = this.lostReported.get(source)!;
      const total = lost[source];
      if (total === before.total) continue;
      const count = total - before.total;
      this.record({ ...head('lost'), source, count: count.toString(), total: total.toString(), since: before.since });
      this.log.error({ source, count: count.toString(), total: total.toString() }, source === 'decode' ? 'audit records could not be decoded' : `audit events lost: the ${source} was full`);
      this.lostReported.set(source, { total, since: now });
      const ring = source === 'deny-ring' ? 'deny' : source === 'allow-ring' ? 'allow' : undefined;
      if (ring && this.opts.onLostReported) {
        const report = this.opts.onLostReported;
        // Reported once it is in the trail: a helmd killed before that reports it again.
        void this.trail.written().then(() => report(ring, total, now));
      }
    }
  }

  status(): { trail: TrailStatus; decisions: bigint; lost: Record<LossSource, bigint>; level: AuditLevel; fsync: string } {
    return { trail: this.trail.status(), decisions: BigInt(this.decisions), lost: this.lost(), level: this.opts.level, fsync: formatFsyncPolicy(this.opts.fsync) };
  }

  /** Drains what is left in the rings, writes the last counters and losses, `before`'s lines and a `stop` line, and closes the trail. */
  async stop(opts: { before?: () => void } = {}): Promise<void> {
    if (this.lostTimer) clearInterval(this.lostTimer);
    if (this.countersTimer) clearInterval(this.countersTimer);
    for (const r of this.readers.values()) {
      await r.stop(
        (rec) => this.onEvent(rec),
        () => this.written(),
      );
      r.close();
    }
    this.reportLost();
    this.writeCounters('stop', true);
    opts.before?.();
    this.record({ ...head('stop') });
    this.flush();
    await this.trail.close();
  }
}

/** How many events a ring of `bytes` holds at once: each takes an 8-byte header and the event, 8-aligned; the kernel keeps one byte free. */
export function ringRecords(bytes: number): number {
  return Math.floor((bytes - 1) / (8 + ((LAYOUT.helm_event.size + 7) & ~7)));
}

function agentFields(a: RecordedAgent): Record<string, unknown> {
  return { agent: a.name, agent_id: a.id.toString(), role: a.role, labels: a.labels, cgroup: { id: a.cgroupId.toString(), path: a.cgroupPath } };
}
