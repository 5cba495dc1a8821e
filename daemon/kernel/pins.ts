// Enforcement that outlives helmd: every map and every program's link of the BPF
// object is pinned under bpffs, in a "set":
//
//   <pinDir>/current -> set-N          a symlink, switched by rename
//   <pinDir>/set-N/meta                helm_pin_meta: layout id, object hash, state
//   <pinDir>/set-N/maps/<map name>     every map the object declares
//   <pinDir>/set-N/links/<program>     every program's link
//
// This works on whatever programs and maps the object holds, by their names
// (network-only: the programs that are loaded). On start helmd compares the object it was given with the pinned set:
//   same layout, same object  → adopt: open the pinned maps; attach nothing
//   same layout, new object   → replace: load the new programs on the pinned
//                               maps, then swap each link's program
//   new layout                → rebuild: new maps in a new set, filled by the
//                               caller, then the links move over
// A link's program is swapped in one step where the kernel can (BPF_LINK_UPDATE:
// cgroup links); where it cannot (LSM and other tracing links) the new program is
// attached before the old link is released, so for a moment both decide and the
// stricter answer wins. Either way no operation is ever decided by neither.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { BpfMap, BpfObject, MAP_TYPE, closeFd, linkUpdate, openPinned, pinFd } from './bpf';
import { C, LAYOUT, decodePinMeta, encodePinMeta, u32Key, type PinMeta } from './layout';
import { KernelError } from './native';

export const DEFAULT_PIN_DIR = '/sys/fs/bpf/helm';
const BPF_FS_MAGIC = 0xcafe4a11;
const SET_RE = /^set-(\d+)$/;
/** A replacement link pinned next to the one it replaces (no program name has a '-'; bpffs refuses '.'). */
const NEW_SUFFIX = '-new';
/** Where helm.bpf.c records the SHA-256 of the helm.h it was built against. */
const LAYOUT_SECTION = '.rodata.helm_layout';

export type PinOutcome = 'fresh' | 'adopted' | 'replaced' | 'rebuilt';

/** Pinned state this helmd must not use: reported, left as it is (it keeps enforcing). */
export class PinError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PinError';
  }
}

export interface ObjectIdentity {
  /** SHA-256 over helm.h's hash (embedded in the object) and every map's definition: what the maps' bytes mean. */
  layout: string;
  /** SHA-256 of the object file and of which of its programs are loaded (all, or the network ones only). */
  object: string;
  maps: string[];
  programs: string[];
  /** The helm.h hash the object embeds, if any. */
  header?: string;
}

export function identify(obj: BpfObject, file: string): ObjectIdentity {
  const d = obj.describe();
  const raw = obj.sectionData(LAYOUT_SECTION);
  const header = raw ? raw.toString('utf8').replace(/\0+$/, '') : undefined;
  const lines = d.text.split('\n');
  const mapLines = lines.filter((l) => l.startsWith('map ')).join('\n');
  const progLines = lines.filter((l) => l.startsWith('prog ')).join('\n');
  const layout = crypto.createHash('sha256').update(`helm pinned layout 1\nheader ${header ?? 'none'}\n${mapLines}\n`).digest('hex');
  const object = crypto.createHash('sha256').update(fs.readFileSync(file)).update(`\n${progLines}\n`).digest('hex');
  return { layout, object, maps: d.maps, programs: d.programs, header };
}

/** An object's identity without loading anything into the kernel. */
export function identifyFile(file: string, opts: { networkOnly?: boolean; sizes?: Record<string, number> } = {}): ObjectIdentity {
  const obj = BpfObject.open(file, opts);
  try {
    return identify(obj, file);
  } finally {
    obj.close();
  }
}

export interface PinStatus {
  dir: string;
  /** Anything of helm's under dir at all. */
  present: boolean;
  /** The set `current` names. */
  current?: string;
  meta?: PinMeta;
  maps: string[];
  links: string[];
  /** Sets `current` does not name: left by an interrupted install or upgrade. */
  leftovers: string[];
  /** Why the pinned state cannot be used, if it cannot. */
  problem?: string;
}

function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

function readMeta(setDir: string): PinMeta | undefined {
  const fd = openPinned(path.join(setDir, 'meta'));
  if (fd === undefined) return undefined;
  const m = new BpfMap(fd, 'helm_pin_meta', true);
  try {
    const v = m.lookup(u32Key(0), Math.max(m.valueSize, LAYOUT.helm_pin_meta.size));
    return v ? decodePinMeta(v) : undefined;
  } finally {
    m.close();
  }
}

/** What is pinned at dir (needs root: bpffs is private to it). */
export function readPins(dir: string): PinStatus {
  const status: PinStatus = { dir, present: false, maps: [], links: [], leftovers: [] };
  if (!fs.existsSync(dir)) return status;
  status.present = true;
  const sets = listDir(dir).filter((n) => SET_RE.test(n));
  let current: string | undefined;
  try {
    current = fs.readlinkSync(path.join(dir, 'current'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  status.leftovers = sets.filter((s) => s !== current);
  if (current === undefined) return status; // an install that never finished: start afresh
  if (!SET_RE.test(current) || !sets.includes(current)) {
    status.problem = `${dir}/current points at ${JSON.stringify(current)}, which is not a pinned set here`;
    return status;
  }
  status.current = current;
  const setDir = path.join(dir, current);
  status.meta = readMeta(setDir);
  if (!status.meta) {
    status.problem = `${setDir} has no meta: it was not pinned by helm`;
    return status;
  }
  if (status.meta.format > C.HELM_PIN_FORMAT) {
    status.problem = `${setDir} was pinned by a newer helm (${status.meta.version}, pin format ${status.meta.format}; this helmd reads format ${C.HELM_PIN_FORMAT})`;
    return status;
  }
  status.maps = listDir(path.join(setDir, 'maps'));
  status.links = listDir(path.join(setDir, 'links'));
  return status;
}

/**
 * max_entries of the named maps in the current pinned set (those pinned), for identifyFile:
 * the audit rings' sizes are part of the layout id, and helmd may have been started with
 * sizes other than helm.h's.
 */
export function pinnedMapSizes(status: PinStatus, names: string[]): Record<string, number> {
  const sizes: Record<string, number> = {};
  if (!status.current) return sizes;
  for (const name of names) {
    const fd = openPinned(path.join(status.dir, status.current, 'maps', name));
    if (fd === undefined) continue;
    const m = new BpfMap(fd, name, true);
    try {
      sizes[name] = m.maxEntries;
    } finally {
      m.close();
    }
  }
  return sizes;
}

/** Removes every pin under dir: programs whose last reference was a pin are detached. */
export function removePins(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

function isBpffs(p: string): boolean {
  try {
    return fs.statfsSync(p).type === BPF_FS_MAGIC;
  } catch {
    return false;
  }
}

/**
 * The pin directory must be on the host's bpffs. Mounts /sys/fs/bpf when nothing
 * is mounted there, except inside a service's private mount namespace, where a
 * fresh bpffs (and every pin in it) would vanish with the process.
 */
export function ensureBpffs(dir: string): void {
  let base = dir;
  while (!fs.existsSync(base)) base = path.dirname(base);
  if (isBpffs(base)) return;
  const mountPoint = '/sys/fs/bpf';
  if (!(dir === mountPoint || dir.startsWith(mountPoint + '/')) || base !== mountPoint) {
    throw new PinError(`${dir} is not on a BPF filesystem (bpffs); pins must live there. Mount one: mount -t bpf bpf ${mountPoint}`);
  }
  if (process.env.INVOCATION_ID) {
    throw new PinError(`bpffs is not mounted at ${mountPoint}; a service cannot mount it for the host. Mount it on the host (mount -t bpf bpf ${mountPoint}; systemd normally does) and start helmd again`);
  }
  execFileSync('mount', ['-t', 'bpf', 'bpf', mountPoint], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (!isBpffs(mountPoint)) throw new PinError(`mounted bpffs at ${mountPoint}, but it is not there`);
}

export interface CommitReport {
  /** Programs attached fresh. */
  attached: string[];
  /** Links whose program was swapped in place (BPF_LINK_UPDATE). */
  updated: string[];
  /** Links replaced by a new link attached first. */
  replaced: string[];
  /** Links released: their programs are not in this object. */
  released: string[];
  /** Sets removed: the previous one (after a rebuild) and any left by an interrupted run. */
  removedSets: string[];
}

export interface PinOptions {
  objectPath: string;
  pinDir: string;
  /** Where cgroup programs attach: the cgroup v2 root. */
  cgroupRoot: string;
  /** Recorded in the meta of what this helmd pins. */
  version: string;
  /** Load (and pin) the network programs only: on kernels that refuse BPF LSM. */
  networkOnly?: boolean;
  /** Maps' max_entries set before loading (the audit rings): part of the layout id. */
  sizes?: Record<string, number>;
}

/**
 * The set a rebuild replaces. Its maps are opened up front, so they stay readable
 * (its ring drained, its agents listed) after commit() has removed its pins.
 */
export class PreviousSet {
  private readonly maps = new Map<string, BpfMap>();
  constructor(readonly dir: string, readonly meta: PinMeta) {
    for (const name of listDir(path.join(dir, 'maps'))) {
      const fd = openPinned(path.join(dir, 'maps', name));
      if (fd !== undefined) this.maps.set(name, new BpfMap(fd, name, true));
    }
  }

  /** One of its maps; undefined if it had none of that name. */
  map(name: string): BpfMap | undefined {
    return this.maps.get(name);
  }

  close(): void {
    for (const m of this.maps.values()) m.close();
    this.maps.clear();
  }
}

export class PinnedKernel {
  private committed = false;

  private constructor(
    readonly outcome: PinOutcome,
    private obj: BpfObject | undefined,
    readonly identity: ObjectIdentity,
    private readonly opts: PinOptions,
    private readonly status: PinStatus,
    private readonly maps: Map<string, BpfMap>,
    /** The set the programs run from once committed ("set-N"). */
    readonly setName: string,
    readonly instance: string,
    readonly previous?: PreviousSet,
  ) {}

  /**
   * Decides what to do with what is pinned and prepares it: after open() the
   * maps are usable (to fill a fresh or rebuilt set); commit() then makes the
   * programs run from them. Throws PinError for pinned state it must not use.
   */
  static open(opts: PinOptions): PinnedKernel {
    ensureBpffs(opts.pinDir);
    const obj = BpfObject.open(opts.objectPath, { networkOnly: opts.networkOnly, sizes: opts.sizes });
    try {
      const identity = identify(obj, opts.objectPath);
      const status = readPins(opts.pinDir);
      if (status.problem) {
        throw new PinError(
          `the pinned state is unusable: ${status.problem}. It is left as it is, and whatever it attached keeps enforcing. ` +
            'To start over: helmctl uninstall (removes enforcement, audited), then start helmd',
        );
      }
      const fromObject = () => new Map(identity.maps.map((m) => [m, obj.map(m)]));
      const newInstance = crypto.randomBytes(16).toString('hex');
      if (!status.current) {
        obj.load();
        return new PinnedKernel('fresh', obj, identity, opts, status, fromObject(), nextSetName(status), newInstance);
      }
      const meta = status.meta!;
      const setDir = path.join(opts.pinDir, status.current);
      const mapsPinned = identity.maps.every((m) => status.maps.includes(m));
      if (meta.layout !== identity.layout || !mapsPinned) {
        obj.load();
        const previous = new PreviousSet(setDir, meta);
        return new PinnedKernel('rebuilt', obj, identity, opts, status, fromObject(), nextSetName(status), newInstance, previous);
      }
      const sameLinks = sameMembers(status.links, identity.programs);
      if (meta.object === identity.object && meta.state === C.HELM_PIN_READY && status.leftovers.length === 0 && sameLinks) {
        const maps = new Map(identity.maps.map((m) => [m, BpfMap.pinned(path.join(setDir, 'maps', m), m)]));
        obj.close();
        return new PinnedKernel('adopted', undefined, identity, opts, status, maps, status.current, meta.instance);
      }
      for (const m of identity.maps) {
        const fd = openPinned(path.join(setDir, 'maps', m));
        if (fd === undefined) throw new PinError(`${setDir}/maps/${m} vanished while helmd started`);
        try {
          obj.reuseMap(m, fd); // libbpf keeps its own copy of the fd
        } finally {
          closeFd(fd);
        }
      }
      obj.load();
      return new PinnedKernel('replaced', obj, identity, opts, status, fromObject(), status.current, meta.instance);
    } catch (e) {
      obj.close();
      throw e;
    }
  }

  /** The pinned meta of the set that is current before commit (none when fresh). */
  get pinnedMeta(): PinMeta | undefined {
    return this.status.meta;
  }

  map(name: string): BpfMap {
    const m = this.maps.get(name);
    if (!m) throw new KernelError(`map ${name} is not in ${this.opts.objectPath}`, 2);
    return m;
  }

  private get setDir(): string {
    return path.join(this.opts.pinDir, this.setName);
  }

  private meta(state: number): PinMeta {
    const created = this.outcome === 'adopted' || this.outcome === 'replaced' ? this.status.meta!.createdNs : BigInt(Date.now()) * 1_000_000n;
    return {
      format: C.HELM_PIN_FORMAT,
      state,
      layout: this.identity.layout,
      object: this.identity.object,
      instance: this.instance,
      createdNs: created,
      version: this.opts.version,
    };
  }

  /** Makes the programs run from this set's maps, pinned; then removes what is left over. */
  commit(): CommitReport {
    if (this.committed) throw new Error('already committed');
    this.committed = true;
    const report: CommitReport = { attached: [], updated: [], replaced: [], released: [], removedSets: [] };
    switch (this.outcome) {
      case 'adopted':
        return report;
      case 'fresh':
        this.commitFresh(report);
        break;
      case 'replaced':
        this.commitReplaced(report);
        break;
      case 'rebuilt':
        this.commitRebuilt(report);
        break;
    }
    for (const s of this.status.leftovers) {
      if (s === this.setName) continue;
      removePins(path.join(this.opts.pinDir, s));
      report.removedSets.push(s);
    }
    return report;
  }

  private makeSet(): void {
    fs.mkdirSync(this.opts.pinDir, { recursive: true, mode: 0o700 });
    fs.mkdirSync(this.setDir, { mode: 0o700 });
    fs.mkdirSync(path.join(this.setDir, 'maps'));
    fs.mkdirSync(path.join(this.setDir, 'links'));
    for (const [name, m] of this.maps) pinFd(m.fd, path.join(this.setDir, 'maps', name));
  }

  private attachPinned(program: string, pinPath: string): void {
    const fd = this.obj!.attach(program, this.opts.cgroupRoot);
    try {
      pinFd(fd, pinPath);
    } finally {
      closeFd(fd);
    }
  }

  private writeMeta(setDir: string, meta: PinMeta, create: boolean): void {
    if (create) {
      const m = BpfMap.create(MAP_TYPE.ARRAY, 'helm_pin_meta', 4, LAYOUT.helm_pin_meta.size, 1);
      try {
        m.update(u32Key(0), encodePinMeta(meta));
        pinFd(m.fd, path.join(setDir, 'meta'));
      } finally {
        m.close();
      }
      return;
    }
    const fd = openPinned(path.join(setDir, 'meta'));
    if (fd === undefined) throw new PinError(`${setDir}/meta vanished`);
    const m = new BpfMap(fd, 'helm_pin_meta', true);
    try {
      // an older format's map is smaller: write only what it holds
      m.update(u32Key(0), encodePinMeta(meta).subarray(0, m.valueSize));
    } finally {
      m.close();
    }
  }

  private switchCurrent(): void {
    const link = path.join(this.opts.pinDir, 'current');
    const next = `${link}-next`; // bpffs refuses dots in names
    fs.rmSync(next, { force: true });
    fs.symlinkSync(this.setName, next);
    fs.renameSync(next, link);
  }

  private commitFresh(report: CommitReport): void {
    try {
      this.makeSet();
      for (const p of this.identity.programs) {
        this.attachPinned(p, path.join(this.setDir, 'links', p));
        report.attached.push(p);
      }
      this.writeMeta(this.setDir, this.meta(C.HELM_PIN_READY), true);
      this.switchCurrent();
    } catch (e) {
      // Nothing was pinned before: undo all of it rather than leave half a set.
      removePins(this.setDir);
      throw e;
    }
  }

  /** Swaps the program behind one pinned link, or attaches it when there is none. */
  private replaceLink(program: string, pinPath: string, report: CommitReport): void {
    const old = openPinned(pinPath);
    if (old === undefined) {
      this.attachPinned(program, pinPath);
      report.attached.push(program);
      return;
    }
    try {
      if (linkUpdate(old, this.obj!.progFd(program)) === 0) {
        report.updated.push(program);
        return;
      }
      // Attach first, then put the new link where the old one was pinned: the old
      // link goes when its pin is replaced and our fd closed.
      const fd = this.obj!.attach(program, this.opts.cgroupRoot);
      try {
        pinFd(fd, pinPath + NEW_SUFFIX);
        fs.renameSync(pinPath + NEW_SUFFIX, pinPath);
      } finally {
        closeFd(fd);
      }
      report.replaced.push(program);
    } finally {
      closeFd(old);
    }
  }

  private commitReplaced(report: CommitReport): void {
    const links = path.join(this.setDir, 'links');
    // Whoever starts next after a crash in here sees CHANGING and does it again.
    this.writeMeta(this.setDir, { ...this.status.meta!, state: C.HELM_PIN_CHANGING }, false);
    for (const stale of this.status.links.filter((l) => l.endsWith(NEW_SUFFIX))) fs.rmSync(path.join(links, stale), { force: true });
    for (const p of this.identity.programs) this.replaceLink(p, path.join(links, p), report);
    for (const l of this.status.links) {
      if (l.endsWith(NEW_SUFFIX) || this.identity.programs.includes(l)) continue;
      fs.rmSync(path.join(links, l), { force: true });
      report.released.push(l);
    }
    this.writeMeta(this.setDir, this.meta(C.HELM_PIN_READY), false);
  }

  private commitRebuilt(report: CommitReport): void {
    const previous = this.previous!;
    // If this stops half-way the old set stays current, marked CHANGING: the next
    // start, whichever helmd it is, puts every link of it back on its own programs.
    this.writeMeta(previous.dir, { ...previous.meta, state: C.HELM_PIN_CHANGING }, false);
    try {
      this.makeSet();
      for (const p of this.identity.programs) {
        const pinPath = path.join(this.setDir, 'links', p);
        const old = openPinned(path.join(previous.dir, 'links', p));
        if (old !== undefined) {
          try {
            if (linkUpdate(old, this.obj!.progFd(p)) === 0) {
              pinFd(old, pinPath);
              report.updated.push(p);
              continue;
            }
          } finally {
            closeFd(old);
          }
        }
        this.attachPinned(p, pinPath);
        (old !== undefined ? report.replaced : report.attached).push(p);
      }
      this.writeMeta(this.setDir, this.meta(C.HELM_PIN_READY), true);
      this.switchCurrent();
    } catch (e) {
      removePins(this.setDir);
      throw e;
    }
    // The new programs decide everything now; the old links go with their set.
    const oldLinks = listDir(path.join(previous.dir, 'links'));
    for (const l of oldLinks) if (!this.identity.programs.includes(l)) report.released.push(l);
    removePins(previous.dir);
    report.removedSets.push(path.basename(previous.dir));
  }

  /** Closes helmd's handles; whatever is pinned keeps running. */
  close(): void {
    this.previous?.close();
    if (this.obj) this.obj.close();
    else for (const m of this.maps.values()) m.close();
    this.obj = undefined;
  }
}

function sameMembers(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}

function nextSetName(status: PinStatus): string {
  const used = [status.current, ...status.leftovers].filter((s): s is string => !!s).map((s) => Number(SET_RE.exec(s)![1]));
  return `set-${Math.max(0, ...used) + 1}`;
}
