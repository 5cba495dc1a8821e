// What helmd asks of the kernel, as an interface: KernelEnforcer implements it on
// the real BPF maps; the control plane's unit tests drive helmd through a fake.
import type { CompiledPolicy } from '../policy/compile';
import type { AgentCounters } from './layout';

/** The audit rings: denials and would-denials on one, logged allows on the other. */
export type Ring = 'deny' | 'allow';

/** Which allows reach the trail; `rate` and `burst` bound the kernel's sampler, per agent. */
export interface AuditLevel {
  allows: 'none' | 'sampled' | 'all';
  rate: number;
  burst: number;
}

export interface GovernedAgent {
  agentId: bigint;
  roleId: number;
  dryRun: boolean;
  /** helmd's DNS forwarder port for this agent on loopback (0: none; DNS is then decided as any traffic). */
  dnsPort?: number;
  /** The agent's label pairs as bits (labelBitsOf: bit n-1 for label pair id n), for contextual conditions on labels. */
  labelBits?: bigint;
}

/** An event ring buffer as helmd drains it (see RingReader). */
export interface EventSource {
  /** Records consumed but not handed over (their handler threw): reported as lost. */
  readonly undelivered: bigint;
  /** `gate` is awaited before each drain (while it waits, events stay in the ring); `onBatch` runs after each batch
   *  is handed over, and the kernel gets the batch's space back once what it returns resolves (the batch is written
   *  out), in drain order; the next drain does not wait for it. `batch`, if given, takes each drained batch whole
   *  (records as [u32 len][u32 0][record, padded to 8] in buf[0, bytes)) instead of `each` per record, and must not throw. */
  start(
    each: (record: DataView) => void,
    onError: (e: Error) => void,
    opts?: { pollMs?: number; gate?: () => Promise<void>; onBatch?: () => void | Promise<void>; batch?: (buf: Buffer, bytes: number) => void },
  ): void;
  stop(each: (record: DataView) => void, onBatch?: () => void | Promise<void>): Promise<void>;
  close(): void;
}

export interface KernelBinding {
  readonly activeGeneration: number;
  /** Generations whose tables are in the kernel now: the active one, and any not yet retired. */
  readonly liveGenerations: number[];
  /** Builds a complete generation and switches to it with one map update; throws having changed nothing. */
  applyGeneration(compiled: CompiledPolicy): number;
  /** Frees every generation but the active one, once no decision in flight can still use it. */
  retire(): Promise<void>;
  setGlobalDryRun(on: boolean): void;
  /** Replaces the set of helm's own files that governed tasks may not touch. */
  setProtected(paths: string[]): void;
  govern(cgroupId: bigint, agent: GovernedAgent): void;
  /** An address the agent's DNS lookups returned for host-name patterns (ids), until `expiresBootNs`. */
  learn(agentId: bigint, addr16: Buffer, nameIds: readonly number[], expiresBootNs: bigint): void;
  forget(agentId: bigint, addr16: Buffer): boolean;
  release(cgroupId: bigint): boolean;
  /** Events that did not fit in a ring, since load (counted per CPU in the kernel). */
  lostEvents(ring: Ring): bigint;
  openEvents(ring: Ring, bufferBytes?: number): EventSource;
  /** Which allows the kernel sends to the allow ring. */
  setAuditLevel(level: AuditLevel): void;
  /** Every decision for an agent so far (allowed, unlogged, lost, denied, would-deny); undefined if none. */
  agentCounters(agentId: bigint): AgentCounters | undefined;
  /** Drops an agent's counters and sampler state. */
  forgetAgent(agentId: bigint): void;
  /** CLOCK_REALTIME − CLOCK_BOOTTIME, to turn event timestamps into wall-clock time. */
  realtimeOffsetNs(): bigint;
  /** CLOCK_BOOTTIME now, the clock of learned addresses' expiry. */
  boottimeNs(): bigint;
  close(): void;
}
