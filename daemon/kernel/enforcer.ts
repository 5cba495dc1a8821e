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
  C, LAYOUT, kernelDev, encodeProtectedKey, encodeAgent, encodeInodeKey, encodeInodeValue, encodePathKey, writePathKey, writePathValue,
  encodeSettings, decodeAgentCounters, encodeAuditSettings, type AgentCounters, encodeNetKey, encodeNetValue, encodeNameKey, encodeSocketKey, encodeSocketValue, encodeLearnedKey, encodeLearnedValue, u32Key, u64Key,
  encodeCondList, encodeExeKey, encodeUidKey,
} from './layout';
import { cgroup2Mount } from '../control/cgroups';
import { KernelError, buildDir, native, errnoName } from './native';
import type { CompiledPolicy, PathEntry } from '../policy/compile';
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

/** Falls back to a generous wait where the kernel cannot tell us (the grace-period map could not be made or written). */
const GRACE_FALLBACK_MS = 1000;
let warnedFallback = false;

/** Resolves once every BPF program running at the call has returned (see helm_sync_programs). */
export function waitForRunningPrograms(): Promise<void> {
  return new Promise((resolve) => {
    native().helm_sync_programs.async((err, rc) => {
      if (!err && rc === 0) return resolve();
      if (!warnedFallback) process.emitWarning(`grace period: ${err ? String(err) : errnoName(-rc)}; waiting ${GRACE_FALLBACK_MS} ms for running programs instead`);
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

/**
 * A table's contents as helmd wrote them: key → value, each as latin1 text
 * (one character per byte) without its trailing zero bytes. Key and value sizes
 * are fixed per table, so nothing is lost, and text is cheap to keep, hash and
 * compare between generations.
 */
type TableContent = Map<string, string>;
const EMPTY: TableContent = new Map();

interface Slot {
  /** Inner maps, in the order of KernelEnforcer.outer. */
  tables: BpfMap[];
  /**
   * What each table holds (the path table: see `paths`); undefined while being
   * written or after a failed write (the tables are then replaced).
   */
  content: TableContent[] | undefined;
  /**
   * The compiled entries the path table holds, by object: a compile keeps the
   * entries that did not change from one generation to the next (IncrementalCompiler),
   * so only the others need encoding and comparing. Undefined when `content` is.
   */
  paths: Set<PathEntry> | undefined;
  /** The generation that decides by these tables; undefined once retired. */
  generation: number | undefined;
}

/** The inner maps of a generation, in the order of KernelEnforcer.outer (and of tableContents). */
const TABLE_SPECS: { type: number; name: string; keySize: number; valueSize: number; maxEntries: number }[] = [
  { type: MAP_TYPE.LPM_TRIE, name: 'helm_paths', keySize: LAYOUT.helm_path_key.size, valueSize: LAYOUT.helm_path_value.size, maxEntries: C.HELM_MAX_PATH_ENTRIES },
  { type: MAP_TYPE.HASH, name: 'helm_inodes', keySize: LAYOUT.helm_inode_key.size, valueSize: LAYOUT.helm_inode_value.size, maxEntries: C.HELM_MAX_INODE_ENTRIES },
  { type: MAP_TYPE.LPM_TRIE, name: 'helm_nets', keySize: LAYOUT.helm_net_key.size, valueSize: LAYOUT.helm_net_value.size, maxEntries: C.HELM_MAX_NET_ENTRIES },
  { type: MAP_TYPE.HASH, name: 'helm_names', keySize: LAYOUT.helm_name_key.size, valueSize: LAYOUT.helm_net_value.size, maxEntries: C.HELM_MAX_NAME_ENTRIES },
  { type: MAP_TYPE.LPM_TRIE, name: 'helm_unix', keySize: LAYOUT.helm_path_key.size, valueSize: LAYOUT.helm_socket_value.size, maxEntries: C.HELM_MAX_UNIX_ENTRIES },
  { type: MAP_TYPE.HASH, name: 'helm_sockets', keySize: LAYOUT.helm_socket_key.size, valueSize: LAYOUT.helm_socket_value.size, maxEntries: C.HELM_MAX_SOCKET_ENTRIES },
  { type: MAP_TYPE.HASH, name: 'helm_cond_lists', keySize: 4, valueSize: LAYOUT.helm_cond_list.size, maxEntries: C.HELM_MAX_COND_LISTS },
  { type: MAP_TYPE.LPM_TRIE, name: 'helm_cond_exes', keySize: LAYOUT.helm_exe_key.size, valueSize: 4, maxEntries: C.HELM_MAX_COND_EXES },
  { type: MAP_TYPE.HASH, name: 'helm_cond_uids', keySize: LAYOUT.helm_uid_key.size, valueSize: 4, maxEntries: C.HELM_MAX_COND_UIDS },
];

/**
 * A table as one generation wants it: its entries packed (keys and values, each
 * zero-padded to the table's sizes, as the batch calls take them) and, per
 * distinct key, the entry that holds it (a later entry for the same key wins, as
 * successive updates would).
 */
class TableImage {
  readonly keys: Buffer;
  readonly values: Buffer;
  readonly content: TableContent = new Map();
  private readonly at = new Map<string, number>();
  private n = 0;

  constructor(
    readonly keySize: number,
    readonly valueSize: number,
    count: number,
  ) {
    this.keys = Buffer.alloc(count * keySize);
    this.values = Buffer.alloc(count * valueSize);
  }

  /**
   * Writes the next entry in place (`write(keys, keyAt, values, valueAt)`: both
   * regions are zero); `keyBytes`, when known, is where the key's last non-zero
   * byte can be at most (saves looking for it).
   */
  add(write: (keys: Buffer, keyAt: number, values: Buffer, valueAt: number) => void, keyBytes = this.keySize): void {
    const i = this.n++;
    write(this.keys, i * this.keySize, this.values, i * this.valueSize);
    const k = text(this.keys, i * this.keySize, keyBytes);
    this.content.set(k, text(this.values, i * this.valueSize, this.valueSize));
    this.at.set(k, i);
  }

  /** The same with encoded buffers (tables that are small: no need to spare the allocations). */
  put(key: Buffer, value: Buffer): void {
    this.add((keys, ka, values, va) => {
      key.copy(keys, ka);
      value.copy(values, va);
    });
  }

  /** Index in keys/values of the entry holding key text `k`. */
  entryOf(k: string): number {
    return this.at.get(k)!;
  }

  get count(): number {
    return this.n;
  }
}

/** `size` bytes of `buf` from `at` as latin1 text, trailing zero bytes dropped. */
function text(buf: Buffer, at: number, size: number): string {
  let end = at + size;
  while (end > at && buf[end - 1] === 0) end--;
  return buf.toString('latin1', at, end);
}

/**
 * Every table as a compiled generation wants it, in TABLE_SPECS order; the path
 * table only `withPaths` (else empty: syncPaths writes it).
 */
export function tableImages(compiled: CompiledPolicy, withPaths = true): TableImage[] {
  const counts = [
    withPaths ? compiled.pathEntries.length : 0,
    compiled.inodeEntries.length,
    compiled.netEntries.length,
    compiled.nameEntries.length,
    compiled.unixEntries.length,
    compiled.socketEntries.length,
    compiled.condLists.length,
    compiled.conds.reduce((n, c) => n + c.exes.length, 0),
    compiled.conds.reduce((n, c) => n + c.uids.length, 0),
  ];
  const images = TABLE_SPECS.map((spec, i) => new TableImage(spec.keySize, spec.valueSize, counts[i]));
  const [paths, inodes, nets, names, unix, sockets, condLists, condExes, condUids] = images;
  for (const e of withPaths ? compiled.pathEntries : []) {
    paths.add((k, ka, v, va) => {
      writePathKey(k, ka, e.roleId, e.data);
      writePathValue(v, va, e.verdicts, e.defaultMode);
    }, LAYOUT.helm_path_key.fields.path[0] + e.data.length);
  }
  for (const e of compiled.inodeEntries) inodes.put(encodeInodeKey(e.roleId, e.dev, e.ino), encodeInodeValue(e.self, e.below));
  for (const e of compiled.netEntries) nets.put(encodeNetKey(e.roleId, e.bytes, e.prefix), encodeNetValue(e.ranges, e.defaultMode));
  for (const e of compiled.nameEntries) names.put(encodeNameKey(e.roleId, e.nameId), encodeNetValue(e.ranges, e.defaultMode));
  for (const e of compiled.unixEntries) unix.put(encodePathKey(e.roleId, e.data), encodeSocketValue(e.verdict, e.defaultMode));
  for (const e of compiled.socketEntries) sockets.put(encodeSocketKey(e.roleId, e.kind, e.protocol), encodeSocketValue(e.verdict, e.defaultMode));
  for (const l of compiled.condLists) condLists.put(u32Key(l.listId), encodeCondList(l.entries));
  for (const c of compiled.conds) {
    for (const exe of c.exes) condExes.put(encodeExeKey(c.condId, exe), u32Key(1));
    for (const uid of c.uids) condUids.put(encodeUidKey(c.condId, uid), u32Key(1));
  }
  return images;
}

/**
 * Turns a table that holds `from` into one that holds `to`: entries gone are
 * deleted first (so a table near its capacity has room), then new and changed
 * ones written; one batch each.
 */
function syncTable(map: BpfMap, from: TableContent, to: TableImage): void {
  if (map.keySize !== to.keySize || map.valueBytes !== to.valueSize) throw new KernelError(`map ${map.name}: sizes differ from bpf/helm.h's`, 22);
  const gone: string[] = [];
  for (const k of from.keys()) if (!to.content.has(k)) gone.push(k);
  if (gone.length) {
    const keys = Buffer.alloc(gone.length * to.keySize);
    gone.forEach((k, i) => keys.write(k, i * to.keySize, 'latin1'));
    map.deleteMany(keys, gone.length);
  }
  if (from.size === 0 && to.content.size === to.count) {
    // Every entry new and none repeated: the image is the batch.
    if (to.count) map.updateMany(to.keys, to.values, to.count);
    return;
  }
  const changed: number[] = [];
  for (const [k, v] of to.content) if (from.get(k) !== v) changed.push(to.entryOf(k));
  if (changed.length === 0) return;
  const keys = Buffer.alloc(changed.length * to.keySize);
  const values = Buffer.alloc(changed.length * to.valueSize);
  changed.forEach((e, i) => {
    to.keys.copy(keys, i * to.keySize, e * to.keySize, (e + 1) * to.keySize);
    to.values.copy(values, i * to.valueSize, e * to.valueSize, (e + 1) * to.valueSize);
  });
  map.updateMany(keys, values, changed.length);
}

/** A path entry's key and value as TableContent text; entries do not change once compiled, so each is encoded once. */
const pathTexts = new WeakMap<PathEntry, { key: string; value: string }>();
const pathKeyScratch = Buffer.alloc(LAYOUT.helm_path_key.size);
const pathValueScratch = Buffer.alloc(LAYOUT.helm_path_value.size);

function pathTextsOf(e: PathEntry): { key: string; value: string } {
  let t = pathTexts.get(e);
  if (!t) {
    pathKeyScratch.fill(0);
    pathValueScratch.fill(0);
    writePathKey(pathKeyScratch, 0, e.roleId, e.data);
    writePathValue(pathValueScratch, 0, e.verdicts, e.defaultMode);
    t = { key: text(pathKeyScratch, 0, pathKeyScratch.length), value: text(pathValueScratch, 0, pathValueScratch.length) };
    pathTexts.set(e, t);
  }
  return t;
}

/**
 * Turns a path table that holds the entries `held` into one that holds `wanted`
 * (whose keys are distinct, as the compiler makes them), updating `held`. Entries
 * held and wanted are the same bytes and are not looked at again: the work is in
 * the entries that are new objects (for an edit, the few the compile recomputed)
 * and in those gone. As syncTable: deletions first, then one batch of writes.
 */
function syncPaths(map: BpfMap, held: Set<PathEntry>, wanted: readonly PathEntry[]): void {
  if (map.keySize !== LAYOUT.helm_path_key.size || map.valueBytes !== LAYOUT.helm_path_value.size) throw new KernelError(`map ${map.name}: sizes differ from bpf/helm.h's`, 22);
  const fresh: PathEntry[] = [];
  for (const e of wanted) if (!held.has(e)) fresh.push(e);
  // Keys held and no longer wanted, with their values (a fresh entry may take the key over).
  const gone = new Map<string, string>();
  if (held.size !== wanted.length - fresh.length) {
    const keep = new Set(wanted);
    for (const e of held) {
      if (keep.has(e)) continue;
      const t = pathTextsOf(e);
      gone.set(t.key, t.value);
      held.delete(e);
    }
  }
  const writes: PathEntry[] = [];
  for (const e of fresh) {
    const t = pathTextsOf(e);
    const before = gone.get(t.key);
    if (before !== undefined) gone.delete(t.key);
    if (before !== t.value) writes.push(e); // a new object with the bytes the key has needs no write
    held.add(e);
  }
  const keySize = map.keySize;
  if (gone.size) {
    const keys = Buffer.alloc(gone.size * keySize);
    let i = 0;
    for (const k of gone.keys()) keys.write(k, i++ * keySize, 'latin1');
    map.deleteMany(keys, gone.size);
  }
  if (writes.length) {
    const keys = Buffer.alloc(writes.length * keySize);
    const values = Buffer.alloc(writes.length * map.valueBytes);
    writes.forEach((e, i) => {
      writePathKey(keys, i * keySize, e.roleId, e.data);
      writePathValue(values, i * map.valueBytes, e.verdicts, e.defaultMode);
    });
    map.updateMany(keys, values, writes.length);
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
  /** Each slot of the outer maps: its tables, what they hold, and the generation using it. */
  private readonly slots: (Slot | undefined)[] = [];
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
        // Their tables are the kernel's and their contents unknown: the next generation in the slot gets fresh ones.
        this.slots[slot] = { generation: slot === (this.generation & (C.HELM_MAX_GENERATIONS - 1)) ? this.generation : -1, tables: [], content: undefined, paths: undefined };
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
    const mount = hostCanGovern(networkOnly);
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
    const mount = hostCanGovern(networkOnly);
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
   * Writes a complete new generation into its slot's tables, then switches to it
   * with one map update. Until that update nothing a program reads has changed: a
   * failure on the way throws and leaves the running generation in force.
   *
   * A slot keeps its tables (they stay in the outer maps) from one generation to the
   * next in it: only the entries that differ from what the slot held are written,
   * in one batch per table. Replacing an inner map in an ARRAY_OF_MAPS makes the
   * kernel wait for an RCU grace period per outer map (nine per switch), so tables
   * are created and placed only the first time a slot is used, or after a failed
   * write left a slot's contents unknown. The tables are rewritten only once no
   * program can be reading them: retire() has seen a grace period since their
   * generation was last active (or, without retire(), one is waited for here).
   * The generation it replaces stays in its slot (decisions in flight may still be
   * reading it) until retire().
   */
  applyGeneration(compiled: CompiledPolicy): number {
    const next = this.generation + 1;
    const slot = next & (C.HELM_MAX_GENERATIONS - 1);
    let s = this.slots[slot];
    if (s && s.generation !== undefined) {
      // Superseded and not retired since: programs that read its generation may still run.
      if (native().helm_sync_programs() === 0) s.generation = undefined;
      else s = undefined; // cannot tell when they are done: fresh tables, placed by the kernel's own wait
    }
    if (s && s.content && s.paths) {
      const wanted = tableImages(compiled, false);
      const content = s.content;
      const paths = s.paths;
      // Unknown until every table is written.
      s.content = undefined;
      s.paths = undefined;
      syncPaths(s.tables[0], paths, compiled.pathEntries);
      for (let i = 1; i < TABLE_SPECS.length; i++) syncTable(s.tables[i], content[i], wanted[i]);
      s.content = wanted.map((w) => w.content);
      s.paths = paths;
    } else {
      s = this.placeFresh(slot, tableImages(compiled), compiled.pathEntries);
    }
    // The switch: programs read the generation once per decision.
    this.settings.update(u32Key(0), encodeSettings(next, this.flags, process.pid));
    s.generation = next;
    this.generation = next;
    return next;
  }

  /** New tables holding `wanted`, put in `slot` of every outer map; the slot's old tables are closed after a grace period. */
  private placeFresh(slot: number, wanted: TableImage[], pathEntries: readonly PathEntry[]): Slot {
    const previous = this.slots[slot];
    const tables: BpfMap[] = []; // in the order of this.outer
    let placed = 0; // outer maps whose slot already holds the new tables
    try {
      for (const spec of TABLE_SPECS) tables.push(BpfMap.create(spec.type, spec.name, spec.keySize, spec.valueSize, spec.maxEntries, MAP_FLAG.NO_PREALLOC));
      TABLE_SPECS.forEach((_, i) => syncTable(tables[i], EMPTY, wanted[i]));
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
    if (previous) this.retiring.push(...previous.tables); // replaced in a reused slot
    const s: Slot = { tables, content: wanted.map((w) => w.content), paths: new Set(pathEntries), generation: undefined };
    this.slots[slot] = s;
    return s;
  }

  /**
   * Makes every generation but the active one unusable, so that its slot can take
   * the next generation. First waits until no program that could have read an older
   * generation number is still running (a kernel RCU grace period: every helm
   * program runs under rcu_read_lock), so no decision ever finds its generation's
   * tables being rewritten, and no program holds an inner map whose last reference
   * we drop (6.1 kernels do not defer that free themselves). The slots keep their
   * tables for the generations to come.
   */
  async retire(): Promise<void> {
    const active = this.generation;
    const stale = this.slots.filter((s): s is Slot => s !== undefined && s.generation !== undefined && s.generation !== active).map((s) => ({ s, generation: s.generation }));
    const closing = this.retiring;
    this.retiring = [];
    if (stale.length === 0 && closing.length === 0) return;
    await waitForRunningPrograms();
    // A later apply may have reused a slot meanwhile: then it holds another generation.
    for (const { s, generation } of stale) if (s.generation === generation) s.generation = undefined;
    for (const m of closing) m.close();
  }

  /** Generations a decision may still use: the active one, and any not yet retired. */
  get liveGenerations(): number[] {
    return this.slots
      .filter((s): s is Slot => s?.generation !== undefined)
      .map((s) => s.generation!)
      .sort((a, b) => a - b);
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

/** What both ways of starting need from the host: BPF LSM (unless network-only) and a cgroup v2 mount, whose path it returns. */
function hostCanGovern(networkOnly: boolean): string {
  checkLsm(networkOnly);
  const mount = cgroup2Mount();
  if (!mount) throw new KernelError('no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup): helm governs agents by cgroup', 2);
  return mount;
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
