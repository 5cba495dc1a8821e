// A stand-in for the kernel binding, for driving helmd's control plane without
// BPF: it keeps every generation it is given, honours the real contract (a
// failing apply throws having switched nothing; a generation stays live until
// retire), and lets a test inject decision events as the ring buffer would.
import type { CompiledPolicy } from '../daemon/policy/compile';
import type { AuditLevel, EventSource, GovernedAgent, KernelBinding, Ring } from '../daemon/kernel/binding';
import { C, LAYOUT, type AgentCounters } from '../daemon/kernel/layout';

export interface FakeEvent {
  agentId: bigint;
  cgroupId?: bigint;
  roleId: number;
  generation: number;
  op?: number;
  decision?: number;
  mode?: number;
  reason?: number;
  pid?: number;
  path?: string;
}

export class FakeKernel implements KernelBinding {
  activeGeneration = 0;
  /** Generation → what was compiled into it, while it is live. */
  readonly tables = new Map<number, CompiledPolicy>();
  readonly governed = new Map<bigint, GovernedAgent>();
  globalDryRun = false;
  protectedPaths: string[] = [];
  lost = 0n;
  lostAllows = 0n;
  auditLevel?: AuditLevel;
  /** Per-agent decision counters, as the kernel would keep them. */
  readonly counters = new Map<bigint, AgentCounters>();
  /** Thrown by the next applyGeneration (once). */
  failNextApply?: Error;
  /** How long retire() takes (the real one waits for a kernel grace period). */
  retireDelayMs = 0;
  /** What happened, in order: "apply N", "retire N..M", "fail". */
  readonly journal: string[] = [];
  readonly events = new FakeEvents();
  readonly allowEvents = new FakeEvents();
  closed = false;

  get liveGenerations(): number[] {
    return [...this.tables.keys()].sort((a, b) => a - b);
  }

  applyGeneration(compiled: CompiledPolicy): number {
    if (this.failNextApply) {
      const e = this.failNextApply;
      this.failNextApply = undefined;
      this.journal.push('fail');
      throw e;
    }
    const next = this.activeGeneration + 1;
    this.tables.set(next, compiled);
    this.activeGeneration = next;
    this.journal.push(`apply ${next}`);
    return next;
  }

  async retire(): Promise<void> {
    const stale = this.liveGenerations.filter((g) => g !== this.activeGeneration);
    if (stale.length === 0) return;
    if (this.retireDelayMs) await new Promise((r) => setTimeout(r, this.retireDelayMs));
    for (const g of stale) this.tables.delete(g);
    this.journal.push(`retire ${stale.join(',')}`);
  }

  /** The compiled generation in force. */
  get active(): CompiledPolicy | undefined {
    return this.tables.get(this.activeGeneration);
  }

  setGlobalDryRun(on: boolean): void {
    this.globalDryRun = on;
  }

  setProtected(paths: string[]): void {
    this.protectedPaths = [...paths];
  }

  govern(cgroupId: bigint, agent: GovernedAgent): void {
    this.governed.set(cgroupId, { ...agent });
  }

  release(cgroupId: bigint): boolean {
    return this.governed.delete(cgroupId);
  }

  /** Learned addresses, by agent id and address (hex). */
  readonly learned = new Map<string, readonly number[]>();

  learn(agentId: bigint, addr16: Buffer, nameIds: readonly number[]): void {
    this.learned.set(`${agentId}/${addr16.toString('hex')}`, nameIds);
  }

  forget(agentId: bigint, addr16: Buffer): boolean {
    return this.learned.delete(`${agentId}/${addr16.toString('hex')}`);
  }

  boottimeNs(): bigint {
    return process.hrtime.bigint();
  }

  lostEvents(ring: Ring): bigint {
    return ring === 'deny' ? this.lost : this.lostAllows;
  }

  openEvents(ring: Ring): EventSource {
    return ring === 'deny' ? this.events : this.allowEvents;
  }

  setAuditLevel(level: AuditLevel): void {
    this.auditLevel = level;
  }

  agentCounters(agentId: bigint): AgentCounters | undefined {
    return this.counters.get(agentId);
  }

  forgetAgent(agentId: bigint): void {
    this.counters.delete(agentId);
  }

  realtimeOffsetNs(): bigint {
    return 0n;
  }

  close(): void {
    this.closed = true;
  }
}

export class FakeEvents implements EventSource {
  undelivered = 0n;
  private each?: (record: DataView) => void;

  start(each: (record: DataView) => void): void {
    this.each = each;
  }

  async stop(): Promise<void> {
    this.each = undefined;
  }

  close(): void {}

  /** Delivers decision events as one drained batch. */
  emit(...events: FakeEvent[]): void {
    if (!this.each) throw new Error('helmd is not draining events');
    for (const e of events) this.each(encode(e));
  }
}

function encode(e: FakeEvent): DataView {
  const F = LAYOUT.helm_event.fields;
  const b = Buffer.alloc(LAYOUT.helm_event.size);
  b.writeBigUInt64LE(BigInt(Date.now()) * 1_000_000n, F.ts_boot_ns[0]);
  b.writeBigUInt64LE(e.cgroupId ?? 0n, F.cgroup_id[0]);
  b.writeBigUInt64LE(e.agentId, F.agent_id[0]);
  b.writeUInt32LE(C.HELM_EVENT_DECISION, F.type[0]);
  b.writeUInt32LE(e.pid ?? 0x7ffffff0, F.pid[0]);
  b.writeUInt32LE(e.roleId, F.role_id[0]);
  b.writeUInt32LE(e.generation, F.generation[0]);
  b.writeUInt8(e.op ?? C.HELM_OP_READ, F.op[0]);
  b.writeUInt8(e.decision ?? C.HELM_DECISION_DENY, F.decision[0]);
  b.writeUInt8(e.mode ?? C.HELM_MODE_ENFORCE, F.mode[0]);
  b.writeUInt8(e.reason ?? C.HELM_REASON_DEFAULT, F.reason[0]);
  b.write('agent', F.comm[0]);
  const p = Buffer.from(e.path ?? '/srv/x', 'utf8');
  p.copy(b, F.path[0]);
  b.writeInt32LE(p.length + 1, F.path_len[0]);
  b.writeInt32LE(-2, F.exe_len[0]);
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}
