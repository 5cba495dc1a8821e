// kernelEnforcer: the loaded helm.bpf.o and everything helmd does to its maps —
// switch in a compiled generation, govern and release cgroups, global dry-run,
// and the event ring buffer with its lost-event counter.
import path from 'node:path';
import fs from 'node:fs';
import { BpfMap, BpfObject, MAP_FLAG, MAP_TYPE, RingReader, readPerCpuCounter } from './bpf';
import { C, LAYOUT, kernelDev, encodeProtectedKey, encodeAgent, encodeInodeKey, encodeInodeValue, encodePathKey, encodePathValue, encodeSettings, u32Key, u64Key } from './layout';
import { KernelError, buildDir } from './native';
import type { CompiledPolicy } from '../policy/compile';

export interface GovernedAgent {
  agentId: bigint;
  roleId: number;
  dryRun: boolean;
}

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

export class KernelEnforcer {
  readonly governed: BpfMap;
  private readonly settings: BpfMap;
  private readonly pathTables: BpfMap;
  private readonly inodeTables: BpfMap;
  private readonly lost: BpfMap;
  private readonly eventsMap: BpfMap;
  private readonly protectedInodes: BpfMap;
  private generation = 0;
  private flags = 0;
  /** Inner maps per slot, closed when the slot is reused. */
  private readonly slots: ({ paths: BpfMap; inodes: BpfMap } | undefined)[] = [];

  private constructor(private readonly obj: BpfObject) {
    this.governed = obj.map('governed_cgroups');
    this.settings = obj.map('settings');
    this.pathTables = obj.map('path_tables');
    this.inodeTables = obj.map('inode_tables');
    this.lost = obj.map('lost_events');
    this.eventsMap = obj.map('events');
    this.protectedInodes = obj.map('protected_inodes');
  }

  /**
   * Loads and attaches the LSM programs. Refuses to pretend: any failure throws a
   * KernelError whose message says what to do.
   */
  static load(objectPath = defaultBpfObject()): KernelEnforcer {
    const lsm = activeLsms();
    if (!lsm.ok) {
      throw new KernelError(
        lsm.error ??
          `BPF LSM is not active on this kernel (active LSMs: ${lsm.list.join(',') || 'none'}). ` +
            'Add "bpf" to the lsm= kernel boot parameter (e.g. lsm=lockdown,capability,landlock,yama,apparmor,bpf) and reboot, ' +
            'or run helm in the bundled VM: make demo.',
        1,
      );
    }
    let obj: BpfObject;
    try {
      obj = BpfObject.load(objectPath);
    } catch (e) {
      const err = e as KernelError;
      const hint =
        err.errno === 1
          ? '\nThe kernel lists bpf among its LSMs but refused to load LSM programs (EPERM). Some kernels and ' +
            'hypervisors forbid BPF LSM programs even to root (lockdown, or a host policy). helmd cannot enforce ' +
            'file rules here; run it on a kernel that permits BPF LSM, or in the bundled VM: make demo.'
          : '';
      throw new KernelError(`cannot load ${objectPath}: ${err.message}${hint}`, err.errno);
    }
    try {
      obj.attachAll();
    } catch (e) {
      obj.close();
      const err = e as KernelError;
      throw new KernelError(`cannot attach the enforcement programs: ${err.message}`, err.errno);
    }
    return new KernelEnforcer(obj);
  }

  get activeGeneration(): number {
    return this.generation;
  }

  /** Builds a complete new generation of tables, then switches to it with one map update. */
  applyGeneration(compiled: CompiledPolicy): number {
    const next = this.generation + 1;
    const slot = next & (C.HELM_MAX_GENERATIONS - 1);
    const paths = BpfMap.create(MAP_TYPE.LPM_TRIE, 'helm_paths', LAYOUT.helm_path_key.size, LAYOUT.helm_path_value.size, C.HELM_MAX_PATH_ENTRIES, MAP_FLAG.NO_PREALLOC);
    const inodes = BpfMap.create(MAP_TYPE.HASH, 'helm_inodes', LAYOUT.helm_inode_key.size, LAYOUT.helm_inode_value.size, C.HELM_MAX_INODE_ENTRIES, MAP_FLAG.NO_PREALLOC);
    try {
      for (const e of compiled.pathEntries) {
        paths.update(encodePathKey(e.roleId, e.data), encodePathValue(e.verdicts, e.defaultMode));
      }
      for (const e of compiled.inodeEntries) {
        inodes.update(encodeInodeKey(e.roleId, e.dev, e.ino), encodeInodeValue(e.self, e.below));
      }
      const fdValue = (m: BpfMap) => u32Key(m.fd);
      this.pathTables.update(u32Key(slot), fdValue(paths));
      this.inodeTables.update(u32Key(slot), fdValue(inodes));
    } catch (e) {
      paths.close();
      inodes.close();
      throw e;
    }
    // The switch: programs read the generation once per decision.
    this.settings.update(u32Key(0), encodeSettings(next, this.flags, process.pid));
    const old = this.slots[slot];
    this.slots[slot] = { paths, inodes };
    old?.paths.close();
    old?.inodes.close();
    this.generation = next;
    return next;
  }

  setGlobalDryRun(on: boolean): void {
    this.flags = on ? this.flags | C.HELM_SETTINGS_DRY_RUN : this.flags & ~C.HELM_SETTINGS_DRY_RUN;
    this.settings.update(u32Key(0), encodeSettings(this.generation, this.flags, process.pid));
  }

  /**
   * helm's own files (policies, the audit trail and their directories, the control
   * socket): no governed task may open, change or connect to them, whatever the policy.
   */
  protect(paths: string[]): void {
    for (const p of paths) {
      const st = fs.statSync(p, { bigint: true });
      this.protectedInodes.update(encodeProtectedKey(kernelDev(st.dev), st.ino), u32Key(1));
    }
  }

  govern(cgroupId: bigint, agent: GovernedAgent): void {
    this.governed.update(u64Key(cgroupId), encodeAgent(agent.agentId, agent.roleId, agent.dryRun ? C.HELM_AGENT_DRY_RUN : 0));
  }

  release(cgroupId: bigint): boolean {
    return this.governed.delete(u64Key(cgroupId));
  }

  lostEvents(): bigint {
    return readPerCpuCounter(this.lost);
  }

  openEvents(): RingReader {
    return new RingReader(this.eventsMap, LAYOUT.helm_event.size);
  }

  close(): void {
    for (const s of this.slots) {
      s?.paths.close();
      s?.inodes.close();
    }
    this.obj.close();
  }
}
