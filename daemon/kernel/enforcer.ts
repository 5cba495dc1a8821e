// kernelEnforcer: helm.bpf.o in the kernel and everything helmd does to its maps —
// switch in a compiled generation, govern and release cgroups, global dry-run,
// and the event ring buffer with its lost-event counter. helmd's enforcer is
// pinned (open(): it outlives helmd, see pins.ts); load() attaches for the life
// of the calling process only (benchmarks).
import path from 'node:path';
import fs from 'node:fs';
import { BpfMap, BpfObject, MAP_FLAG, MAP_TYPE, RingReader, UPDATE, readPerCpuCounter } from './bpf';
import { PinnedKernel, type CommitReport, type PinOutcome } from './pins';
import {
  C, LAYOUT, kernelDev, encodeProtectedKey, encodeAgent, encodeInodeKey, encodeInodeValue, encodePathKey, encodePathValue,
  encodeSettings, decodeAgentCounters, encodeAuditSettings, type AgentCounters, encodeNetKey, encodeNetValue, encodeNameKey, encodeSocketKey, encodeSocketValue, encodeLearnedKey, encodeLearnedValue, u32Key, u64Key,
  encodeCondList, encodeExeKey, encodeUidKey,
} from './layout';
import { cgroup2Mount } from '../control/cgroups';
import { KernelError, buildDir, native, errnoName } from './native';
import type { CompiledPolicy } from '../policy/compile';
import type { AuditLevel, GovernedAgent, KernelBinding, Ring } from './binding';

export type { GovernedAgent } from './binding';

export interface EnforcerOptions {
  objectPath?: string;
  pinDir: string;
  /** Recorded with what this helmd pins. */
  version: string;
  networkOnly?: boolean;
  /** Sizes of the audit rings (default: bpf/helm.h's). A change of size is a new layout: the maps are rebuilt. */
  rings?: RingSizes;
}

/** A governed cgroup as the kernel holds it. */
export interface GovernedEntry {
  cgroupId: bigint;
  agentId: bigint;
  roleId: number;
  dryRun: boolean;
  /** The agent's label bits as the kernel holds them. */
  labelBits: bigint;
}

export interface LoadOptions {
  /**
   * Load only the network programs (cgroup sock_addr), for kernels that refuse BPF LSM:
   * network rules are enforced, file and exec rules are not.
   */
  networkOnly?: boolean;
  /** Sizes of the audit rings (default: bpf/helm.h's). */
  rings?: RingSizes;
}

/** Falls back to a generous wait where the kernel cannot tell us (membarrier refused, e.g. nohz_full). */
const GRACE_FALLBACK_MS = 1000;
let warnedFallback = false;

/** Resolves once every BPF program running at the call has returned (see helm_sync_programs). */
export function waitForRunningPrograms(): Promise<void> {
  return new Promise((resolve) => {
    native().helm_sync_programs.async((err, rc) => {
      if (!err && rc === 0) return resolve();
      if (!warnedFallback) process.emitWarning(`membarrier: ${err ? String(err) : errnoName(-rc)}; waiting ${GRACE_FALLBACK_MS} ms for running programs instead`);
      warnedFallback = true;
      setTimeout(resolve, GRACE_FALLBACK_MS);
    });
  });
}

export type { AuditLevel, Ring } from './binding';

/** Bytes of each ring: a power of two, at least a page. */
export interface RingSizes {
  deny: number;
  allow: number;
}

/** Why `bytes` cannot be a ring's size, or undefined if it can. */
export function ringSizeProblem(bytes: number): string | undefined {
  if (!Number.isSafeInteger(bytes) || bytes < 4096 || bytes > 2 ** 31 || (bytes & (bytes - 1)) !== 0) {
    return `a ring's size is a power of two from 4K to 2G (e.g. 32M), got ${bytes}`;
  }
  return undefined;
}
const RING_INDEX: Record<Ring, number> = { deny: C.HELM_RING_DENY, allow: C.HELM_RING_ALLOW };

export function defaultBpfObject(): string {
  return path.join(buildDir(), 'helm.bpf.o');
}

/** Is `bpf` among the active LSMs? Returns the list read, or an explanation. */
export function activeLsms(): { ok: boolean; list: string[]; error?: string } {
  const file = '/sys/kernel/security/lsm';
  try {
    const list = fs.readFileSync(file, 'utf8').trim().split(',').filter(Boolean);
    return { ok: list.includes('bpf'), list };
  } catch (e) {
    return { ok: false, list: [], error: `cannot read ${file} (${(e as Error).message}); mount securityfs: mount -t securityfs securityfs /sys/kernel/security` };
  }
}

export class KernelEnforcer implements KernelBinding {
  readonly governed: BpfMap;
  private readonly settings: BpfMap;
  private readonly pathTables: BpfMap;
  private readonly inodeTables: BpfMap;
  private readonly lost: BpfMap;
  private readonly rings: Record<Ring, BpfMap>;
  private readonly protectedInodes: BpfMap;
  private readonly netTables: BpfMap;
  private readonly nameTables: BpfMap;
  private readonly unixTables: BpfMap;
  private readonly socketTables: BpfMap;
  private readonly condListTables: BpfMap;
  private readonly condExeTables: BpfMap;
  private readonly condUidTables: BpfMap;
  private readonly learned: BpfMap;
  private readonly auditSettings: BpfMap;
  private readonly counters: BpfMap;
  private readonly sampleBuckets: BpfMap;
  private generation = 0;
  private flags = 0;
  /** The outer ARRAY_OF_MAPS, in the order a generation's tables are kept. */
  private readonly outer: BpfMap[];
  /** The generation in each slot of the outer maps, with its tables. */
  private readonly slots: ({ generation: number; tables: BpfMap[] } | undefined)[] = [];
  /** Tables no longer in any slot, closed after the next grace period. */
  private retiring: BpfMap[] = [];
  /** Objects protected now, by kernel key (dev:ino). */
  private readonly protectedKeys = new Map<string, Buffer>();

  /** `source` owns the maps: a loaded object, or the pinned set helmd took over. */
  private constructor(
    private readonly source: { map(name: string): BpfMap; close(): void },
    readonly networkOnly: boolean,
    readonly pins?: PinnedKernel,
  ) {
    const map = (name: string) => source.map(name);
    this.governed = map('governed_cgroups');
    this.settings = map('settings');
    this.pathTables = map('path_tables');
    this.inodeTables = map('inode_tables');
    this.lost = map('lost_events');
    this.rings = { deny: map('deny_events'), allow: map('allow_events') };
    this.protectedInodes = map('protected_inodes');
    this.netTables = map('net_tables');
    this.nameTables = map('name_tables');
    this.unixTables = map('unix_tables');
    this.socketTables = map('socket_tables');
    this.condListTables = map('cond_lists');
    this.condExeTables = map('cond_exes');
    this.condUidTables = map('cond_uids');
    this.learned = map('learned_addrs');
    this.outer = [
      this.pathTables, this.inodeTables, this.netTables, this.nameTables, this.unixTables, this.socketTables,
      this.condListTables, this.condExeTables, this.condUidTables,
    ];
    this.auditSettings = map('audit_settings');
    this.counters = map('agent_counters');
    this.sampleBuckets = map('sample_buckets');
    if (pins && (pins.outcome === 'adopted' || pins.outcome === 'replaced')) this.takeOver();
  }

  /**
   * The maps are live (an earlier helmd's): numbering continues from the running
   * generation, the generations in the slots are retired like our own (their tables
   * are the kernel's alone), and the protected set is what the kernel holds.
   */
  private takeOver(): void {
    const v = this.settings.lookup(u32Key(0), this.settings.valueSize);
    if (v) {
      this.generation = v.readUInt32LE(LAYOUT.helm_settings.fields.active_generation[0]);
      this.flags = v.readUInt32LE(LAYOUT.helm_settings.fields.flags[0]);
    }
    for (let slot = 0; slot < C.HELM_MAX_GENERATIONS; slot++) {
      if (this.outer.some((m) => m.lookup(u32Key(slot), 4) !== undefined)) {
        this.slots[slot] = { generation: slot === (this.generation & (C.HELM_MAX_GENERATIONS - 1)) ? this.generation : -1, tables: [] };
      }
    }
    const F = LAYOUT.helm_protected_key.fields;
    for (const key of this.protectedInodes.keys()) {
      this.protectedKeys.set(`${key.readUInt32LE(F.dev[0])}:${key.readBigUInt64LE(F.ino[0])}`, key);
    }
  }

  /**
   * Takes over what is pinned at opts.pinDir, or loads the object there (programs
   * verified, not attached: commit() attaches them once the maps are filled).
   * Refuses to pretend: a failure throws a KernelError (or PinError) saying what
   * to do, and leaves whatever is pinned enforcing.
   */
  static open(o: EnforcerOptions): KernelEnforcer {
    const objectPath = o.objectPath ?? defaultBpfObject();
    const networkOnly = o.networkOnly ?? false;
    checkLsm(networkOnly);
    const mount = cgroup2Mount();
    if (!mount) throw new KernelError('no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup): helm governs agents by cgroup', 2);
    let pins: PinnedKernel;
    try {
      pins = PinnedKernel.open({ objectPath, pinDir: o.pinDir, cgroupRoot: mount, version: o.version, networkOnly, sizes: ringSizes(o.rings) });
    } catch (e) {
      if (!(e instanceof KernelError)) throw e;
      throw new KernelError(`cannot load ${objectPath}: ${e.message}${loadHint(e.errno)}`, e.errno);
    }
    return new KernelEnforcer(pins, networkOnly, pins);
  }

  get outcome(): PinOutcome | undefined {
    return this.pins?.outcome;
  }

  /** Attaches (or swaps in) the programs, pinned, running on this enforcer's maps. */
  commit(): CommitReport {
    try {
      return this.pins!.commit();
    } catch (e) {
      if (!(e instanceof KernelError)) throw e;
      throw new KernelError(`cannot attach the enforcement programs: ${e.message}`, e.errno);
    }
  }

  /** Numbering continues after `generation` (one an earlier helmd recorded) when the kernel's is behind it. */
  continueFrom(generation: number): void {
    if (generation > this.generation) this.generation = generation;
  }

  /** Every governed cgroup the kernel holds. */
  governedEntries(): GovernedEntry[] {
    const F = LAYOUT.helm_agent.fields;
    const out: GovernedEntry[] = [];
    for (const key of this.governed.keys()) {
      const v = this.governed.lookup(key, this.governed.valueSize);
      if (!v) continue; // released meanwhile
      out.push({
        cgroupId: key.readBigUInt64LE(0),
        agentId: v.readBigUInt64LE(F.agent_id[0]),
        roleId: v.readUInt32LE(F.role_id[0]),
        dryRun: (v.readUInt32LE(F.flags[0]) & C.HELM_AGENT_DRY_RUN) !== 0,
        labelBits: v.length >= F.label_bits[0] + 8 ? v.readBigUInt64LE(F.label_bits[0]) : 0n,
      });
    }
    return out;
  }

  /**
   * Forgets every learned address: an earlier helmd's name ids mean nothing to
   * this one's tables. Agents look their names up again (through their new DNS
   * forwarders); until then those addresses are denied.
   */
  forgetAllLearned(): number {
    let n = 0;
    for (const key of this.learned.keys()) if (this.learned.delete(key)) n++;
    return n;
  }

  /**
   * Loads and attaches the LSM programs. Refuses to pretend: any failure throws a
   * KernelError whose message says what to do.
   */
  static load(objectPath = defaultBpfObject(), opts: LoadOptions = {}): KernelEnforcer {
    const networkOnly = opts.networkOnly ?? false;
    checkLsm(networkOnly);
    const mount = cgroup2Mount();
    if (!mount) throw new KernelError('no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup): helm governs agents by cgroup', 2);
    let obj: BpfObject;
    try {
      obj = BpfObject.load(objectPath, { networkOnly, sizes: ringSizes(opts.rings) });
    } catch (e) {
      const err = e as KernelError;
      throw new KernelError(`cannot load ${objectPath}: ${err.message}${loadHint(err.errno)}`, err.errno);
    }
    let root: number | undefined;
    try {
      root = fs.openSync(mount, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
      obj.attachAll(root);
    } catch (e) {
      obj.close();
      const err = e as KernelError;
      throw new KernelError(`cannot attach the enforcement programs: ${err.message}`, err.errno ?? 0);
    } finally {
      if (root !== undefined) fs.closeSync(root);
    }
    return new KernelEnforcer(obj, networkOnly);
  }

  get activeGeneration(): number {
    return this.generation;
  }

  /**
   * Builds a complete new generation of tables in its slot, then switches to it with
   * one map update. Until that update nothing a program reads has changed: a failure
   * on the way throws and leaves the running generation in force. The generation it
   * replaces stays in its slot (decisions in flight may still be reading it) until
   * retire().
   */
  applyGeneration(compiled: CompiledPolicy): number {
    const next = this.generation + 1;
    const slot = next & (C.HELM_MAX_GENERATIONS - 1);
    const NO_PREALLOC = MAP_FLAG.NO_PREALLOC;
    const tables: BpfMap[] = []; // in the order of this.outer
    const previous = this.slots[slot];
    let placed = 0; // outer maps whose slot already holds the new tables
    try {
      const paths = BpfMap.create(MAP_TYPE.LPM_TRIE, 'helm_paths', LAYOUT.helm_path_key.size, LAYOUT.helm_path_value.size, C.HELM_MAX_PATH_ENTRIES, NO_PREALLOC);
      tables.push(paths);
      const inodes = BpfMap.create(MAP_TYPE.HASH, 'helm_inodes', LAYOUT.helm_inode_key.size, LAYOUT.helm_inode_value.size, C.HELM_MAX_INODE_ENTRIES, NO_PREALLOC);
      tables.push(inodes);
      const nets = BpfMap.create(MAP_TYPE.LPM_TRIE, 'helm_nets', LAYOUT.helm_net_key.size, LAYOUT.helm_net_value.size, C.HELM_MAX_NET_ENTRIES, NO_PREALLOC);
      tables.push(nets);
      const names = BpfMap.create(MAP_TYPE.HASH, 'helm_names', LAYOUT.helm_name_key.size, LAYOUT.helm_net_value.size, C.HELM_MAX_NAME_ENTRIES, NO_PREALLOC);
      tables.push(names);
      const unix = BpfMap.create(MAP_TYPE.LPM_TRIE, 'helm_unix', LAYOUT.helm_path_key.size, LAYOUT.helm_socket_value.size, C.HELM_MAX_UNIX_ENTRIES, NO_PREALLOC);
      tables.push(unix);
      const sockets = BpfMap.create(MAP_TYPE.HASH, 'helm_sockets', LAYOUT.helm_socket_key.size, LAYOUT.helm_socket_value.size, C.HELM_MAX_SOCKET_ENTRIES, NO_PREALLOC);
      tables.push(sockets);
      const condLists = BpfMap.create(MAP_TYPE.HASH, 'helm_cond_lists', 4, LAYOUT.helm_cond_list.size, C.HELM_MAX_COND_LISTS, NO_PREALLOC);
      tables.push(condLists);
      const condExes = BpfMap.create(MAP_TYPE.LPM_TRIE, 'helm_cond_exes', LAYOUT.helm_exe_key.size, 4, C.HELM_MAX_COND_EXES, NO_PREALLOC);
      tables.push(condExes);
      const condUids = BpfMap.create(MAP_TYPE.HASH, 'helm_cond_uids', LAYOUT.helm_uid_key.size, 4, C.HELM_MAX_COND_UIDS, NO_PREALLOC);
      tables.push(condUids);
      for (const e of compiled.pathEntries) {
        paths.update(encodePathKey(e.roleId, e.data), encodePathValue(e.verdicts, e.defaultMode));
      }
      for (const e of compiled.inodeEntries) {
        inodes.update(encodeInodeKey(e.roleId, e.dev, e.ino), encodeInodeValue(e.self, e.below));
      }
      for (const e of compiled.netEntries) {
        nets.update(encodeNetKey(e.roleId, e.bytes, e.prefix), encodeNetValue(e.ranges, e.defaultMode));
      }
      for (const e of compiled.nameEntries) {
        names.update(encodeNameKey(e.roleId, e.nameId), encodeNetValue(e.ranges, e.defaultMode));
      }
      for (const e of compiled.unixEntries) unix.update(encodePathKey(e.roleId, e.data), encodeSocketValue(e.verdict, e.defaultMode));
      for (const e of compiled.socketEntries) sockets.update(encodeSocketKey(e.roleId, e.kind, e.protocol), encodeSocketValue(e.verdict, e.defaultMode));
      for (const l of compiled.condLists) condLists.update(u32Key(l.listId), encodeCondList(l.entries));
      for (const c of compiled.conds) {
        for (const exe of c.exes) condExes.update(encodeExeKey(c.condId, exe), u32Key(1));
        for (const uid of c.uids) condUids.update(encodeUidKey(c.condId, uid), u32Key(1));
      }
      for (let i = 0; i < this.outer.length; i++) {
        this.outer[i].update(u32Key(slot), u32Key(tables[i].fd));
        placed++;
      }
    } catch (e) {
      // Put the slot back as it was (it is not the active one, but a late reader may hold its number).
      for (let i = 0; i < placed; i++) {
        try {
          if (previous) this.outer[i].update(u32Key(slot), u32Key(previous.tables[i].fd));
          else this.outer[i].delete(u32Key(slot));
        } catch {
          /* the slot is inactive; the next apply overwrites it */
        }
      }
      // Tables a program might just have fetched from the slot are closed only after a grace period.
      if (placed) this.retiring.push(...tables);
      else for (const m of tables) m.close();
      throw e;
    }
    // The switch: programs read the generation once per decision.
    this.settings.update(u32Key(0), encodeSettings(next, this.flags, process.pid));
    if (previous) this.retiring.push(...previous.tables); // replaced in a reused slot
    this.slots[slot] = { generation: next, tables };
    this.generation = next;
    return next;
  }

  /**
   * Frees every generation but the active one. First waits until no program that
   * could have read an older generation number is still running (a kernel RCU
   * grace period: every helm program runs under rcu_read_lock), so no decision
   * ever finds its generation's slot empty, and no program holds an inner map
   * whose last reference we drop (6.1 kernels do not defer that free themselves).
   */
  async retire(): Promise<void> {
    const active = this.generation;
    const stale = this.slots.map((s, slot) => ({ s, slot })).filter(({ s }) => s && s.generation !== active);
    const closing = this.retiring;
    this.retiring = [];
    if (stale.length === 0 && closing.length === 0) return;
    await waitForRunningPrograms();
    for (const { s, slot } of stale) {
      // A later apply may have reused the slot meanwhile; then its tables are in `retiring`.
      if (this.slots[slot] !== s) continue;
      for (const outer of this.outer) outer.delete(u32Key(slot));
      this.slots[slot] = undefined;
      closing.push(...s!.tables);
    }
    for (const m of closing) m.close();
  }

  /** Generations whose tables are in the kernel now (the active one, and any not yet retired). */
  get liveGenerations(): number[] {
    return this.slots.filter((s) => s !== undefined).map((s) => s!.generation).sort((a, b) => a - b);
  }

  /** An address the agent's DNS lookups returned for host-name patterns (ids), until `expiresBootNs`. */
  learn(agentId: bigint, addr16: Buffer, nameIds: readonly number[], expiresBootNs: bigint): void {
    this.learned.update(encodeLearnedKey(agentId, addr16), encodeLearnedValue(expiresBootNs, nameIds));
  }

  forget(agentId: bigint, addr16: Buffer): boolean {
    return this.learned.delete(encodeLearnedKey(agentId, addr16));
  }

  setGlobalDryRun(on: boolean): void {
    this.flags = on ? this.flags | C.HELM_SETTINGS_DRY_RUN : this.flags & ~C.HELM_SETTINGS_DRY_RUN;
    this.settings.update(u32Key(0), encodeSettings(this.generation, this.flags, process.pid));
  }

  /**
   * helm's own files (policies, the audit trail and their directories, the control
   * socket): no governed task may open, change or connect to them, whatever the policy.
   * The set is replaced as a whole (policy files come and go with reloads): new
   * objects are protected before old ones are let go. A path that no longer exists
   * is skipped.
   */
  setProtected(paths: string[]): void {
    const want = new Map<string, Buffer>();
    for (const p of paths) {
      let st: fs.BigIntStats;
      try {
        st = fs.statSync(p, { bigint: true });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw e;
      }
      const dev = kernelDev(st.dev);
      want.set(`${dev}:${st.ino}`, encodeProtectedKey(dev, st.ino));
    }
    for (const [k, key] of want) if (!this.protectedKeys.has(k)) this.protectedInodes.update(key, u32Key(1));
    for (const [k, key] of this.protectedKeys) if (!want.has(k)) this.protectedInodes.delete(key);
    this.protectedKeys.clear();
    for (const [k, key] of want) this.protectedKeys.set(k, key);
  }

  setAuditLevel(level: AuditLevel): void {
    const code = { none: C.HELM_ALLOW_LOG_NONE, sampled: C.HELM_ALLOW_LOG_SAMPLED, all: C.HELM_ALLOW_LOG_ALL }[level.allows];
    this.auditSettings.update(u32Key(0), encodeAuditSettings(code, level.rate, level.burst));
  }

  /** Every decision for this agent so far, summed over CPUs; undefined if the kernel holds none. */
  agentCounters(agentId: bigint): AgentCounters | undefined {
    const cpus = native().helm_num_possible_cpus();
    const v = this.counters.lookup(u64Key(agentId), LAYOUT.helm_agent_counters.size * cpus);
    return v && decodeAgentCounters(v, cpus);
  }

  /** Drops an agent's counters and sampler once its last counts have been read. */
  forgetAgent(agentId: bigint): void {
    this.counters.delete(u64Key(agentId));
    this.sampleBuckets.delete(u64Key(agentId));
  }

  govern(cgroupId: bigint, agent: GovernedAgent): void {
    // Counted from zero from the first decision on; a mode switch re-governs the agent and keeps its counts.
    const cpus = native().helm_num_possible_cpus();
    try {
      this.counters.update(u64Key(agent.agentId), Buffer.alloc(LAYOUT.helm_agent_counters.size * cpus), UPDATE.NOEXIST);
    } catch (e) {
      if ((e as KernelError).errno !== 17 /* EEXIST */) throw e;
    }
    this.governed.update(u64Key(cgroupId), encodeAgent(agent.agentId, agent.roleId, agent.dryRun ? C.HELM_AGENT_DRY_RUN : 0, agent.dnsPort ?? 0, agent.labelBits ?? 0n));
  }

  release(cgroupId: bigint): boolean {
    return this.governed.delete(u64Key(cgroupId));
  }

  /** Events that did not fit in a ring, since load. */
  lostEvents(ring: Ring): bigint {
    return readPerCpuCounter(this.lost, RING_INDEX[ring]);
  }

  openEvents(ring: Ring, bufferBytes?: number): RingReader {
    return new RingReader(this.rings[ring], LAYOUT.helm_event.size, bufferBytes);
  }

  realtimeOffsetNs(): bigint {
    return BigInt(native().helm_realtime_offset_ns());
  }

  boottimeNs(): bigint {
    return BigInt(native().helm_boottime_ns());
  }

  /** Closes helmd's handles. Whatever is pinned keeps enforcing. */
  close(): void {
    for (const s of this.slots) for (const m of s?.tables ?? []) m.close();
    for (const m of this.retiring) m.close();
    this.source.close();
  }
}

function checkLsm(networkOnly: boolean): void {
  const lsm = activeLsms();
  if (lsm.ok || networkOnly) return;
  throw new KernelError(
    lsm.error ??
      `BPF LSM is not active on this kernel (active LSMs: ${lsm.list.join(',') || 'none'}). ` +
        'Add "bpf" to the lsm= kernel boot parameter (e.g. lsm=lockdown,capability,landlock,yama,apparmor,bpf) and reboot, ' +
        'or run helm in the bundled VM: make demo. (helmd --network-only enforces network rules alone on such a kernel.)',
    1,
  );
}

function loadHint(errno: number): string {
  return errno === 1
    ? '\nThe kernel lists bpf among its LSMs but refused to load LSM programs (EPERM). Some kernels and ' +
        'hypervisors forbid BPF LSM programs even to root (lockdown, or a host policy). helmd cannot enforce ' +
        'file rules here; run it on a kernel that permits BPF LSM, or in the bundled VM: make demo ' +
        '(or enforce network rules alone: helmd --network-only).'
    : '';
}

/** max_entries of the ring maps, for BpfObject.load/open. */
function ringSizes(rings: RingSizes | undefined): Record<string, number> | undefined {
  return rings ? { deny_events: rings.deny, allow_events: rings.allow } : undefined;
}
