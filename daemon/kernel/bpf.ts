// Thin typed wrappers over the native shim: a loaded BPF object, its maps, and a
// ring-buffer reader that drains batches on koffi's worker thread.
import { native, KernelError, messageFrom, errnoName } from './native';

const ERR_LEN = 65536;

export const MAP_TYPE = { HASH: 1, ARRAY: 2, PERCPU_HASH: 5, PERCPU_ARRAY: 6, LPM_TRIE: 11 } as const;
const PER_CPU_TYPES = new Set<number>([MAP_TYPE.PERCPU_HASH, MAP_TYPE.PERCPU_ARRAY, 10 /* LRU_PERCPU_HASH */]);
export const MAP_FLAG = { NO_PREALLOC: 1 } as const;
export const UPDATE = { ANY: 0n, NOEXIST: 1n, EXIST: 2n } as const;

function check(rc: number, what: string): number {
  if (rc < 0) throw new KernelError(`${what}: ${errnoName(-rc)}`, -rc);
  return rc;
}

export class BpfMap {
  readonly type: number;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;

  constructor(
    public readonly fd: number,
    public readonly name: string,
    private readonly owned: boolean,
  ) {
    // The kernel copies key_size/value_size bytes from and to our buffers: know them before any call.
    const info = Buffer.alloc(16);
    check(native().helm_map_info(fd, info), `cannot inspect map ${name}`);
    this.type = info.readUInt32LE(0);
    this.keySize = info.readUInt32LE(4);
    this.valueSize = info.readUInt32LE(8);
    this.maxEntries = info.readUInt32LE(12);
  }

  private checkKey(key: Buffer): void {
    if (key.length !== this.keySize) throw new KernelError(`map ${this.name}: key of ${key.length} bytes, the map's keys are ${this.keySize}`, 22);
  }

  static create(type: number, name: string, keySize: number, valueSize: number, maxEntries: number, flags = 0): BpfMap {
    const fd = check(native().helm_map_create(type, name, keySize, valueSize, maxEntries, flags), `cannot create map ${name}`);
    return new BpfMap(fd, name, true);
  }

  /** Bytes of one value as the syscall copies it: per-CPU maps take one 8-aligned value per possible CPU. */
  get valueBytes(): number {
    return PER_CPU_TYPES.has(this.type) ? ((this.valueSize + 7) & ~7) * native().helm_num_possible_cpus() : this.valueSize;
  }

  update(key: Buffer, value: Buffer, flags: bigint = UPDATE.ANY): void {
    this.checkKey(key);
    if (value.length !== this.valueBytes) throw new KernelError(`map ${this.name}: value of ${value.length} bytes, the map's values are ${this.valueBytes}`, 22);
    check(native().helm_map_update(this.fd, key, value, flags), `cannot update map ${this.name}`);
  }

  /**
   * `count` packed keys and values in one native call (a batch update where the kernel
   * has one). Throws on the first element refused, saying how many went in before it.
   */
  updateMany(keys: Buffer, values: Buffer, count: number, flags: bigint = UPDATE.ANY): void {
    if (keys.length < count * this.keySize || values.length < count * this.valueBytes) {
      throw new KernelError(`map ${this.name}: ${count} elements need ${count * this.keySize} bytes of keys and ${count * this.valueBytes} of values`, 22);
    }
    const done = new Int32Array(1);
    const rc = native().helm_map_update_many(this.fd, keys, values, count, this.keySize, this.valueBytes, flags, done);
    if (rc < 0) throw new KernelError(`cannot update map ${this.name} (element ${done[0] + 1} of ${count}): ${errnoName(-rc)}`, -rc);
  }

  /** Deletes `count` packed keys in one native call; every key must be there. */
  deleteMany(keys: Buffer, count: number): void {
    if (keys.length < count * this.keySize) throw new KernelError(`map ${this.name}: ${count} keys need ${count * this.keySize} bytes`, 22);
    const done = new Int32Array(1);
    const rc = native().helm_map_delete_many(this.fd, keys, count, this.keySize, done);
    if (rc < 0) throw new KernelError(`cannot delete from map ${this.name} (element ${done[0] + 1} of ${count}): ${errnoName(-rc)}`, -rc);
  }

  /** The value, or undefined when the key is absent. */
  lookup(key: Buffer, valueSize: number): Buffer | undefined {
    this.checkKey(key);
    // Per-CPU maps return one value per possible CPU: the caller asks for that many bytes.
    if (valueSize < this.valueSize) throw new KernelError(`map ${this.name}: buffer of ${valueSize} bytes for values of ${this.valueSize}`, 22);
    const out = Buffer.alloc(valueSize);
    const rc = native().helm_map_lookup(this.fd, key, out);
    if (rc === -2) return undefined;
    check(rc, `cannot read map ${this.name}`);
    return out;
  }

  /** true if the key was there. */
  delete(key: Buffer): boolean {
    this.checkKey(key);
    const rc = native().helm_map_delete(this.fd, key);
    if (rc === -2) return false;
    check(rc, `cannot delete from map ${this.name}`);
    return true;
  }

  /** Every key, in the kernel's order (for small maps: agents, protected files). */
  keys(): Buffer[] {
    const out: Buffer[] = [];
    let prev: Buffer | null = null;
    for (let i = 0; i <= this.maxEntries; i++) {
      const next = Buffer.alloc(this.keySize);
      const rc = native().helm_map_next_key(this.fd, prev, next);
      if (rc === -2) return out;
      check(rc, `cannot list map ${this.name}`);
      out.push(next);
      prev = next;
    }
    return out;
  }

  /** Opens a pinned map; the fd is closed by close(). */
  static pinned(pinPath: string, name: string): BpfMap {
    const fd = check(native().helm_pinned(pinPath), `cannot open pinned map ${pinPath}`);
    return new BpfMap(fd, name, true);
  }

  close(): void {
    if (this.owned) native().helm_close_fd(this.fd);
  }
}

const OPEN_NETWORK_ONLY = 1; // native/helm_shim.c HELM_OPEN_NETWORK_ONLY

/** Opens a pinned map, program or link by path; undefined when nothing is pinned there. */
export function openPinned(pinPath: string): number | undefined {
  const fd = native().helm_pinned(pinPath);
  if (fd === -2) return undefined;
  return check(fd, `cannot open ${pinPath}`);
}

export function pinFd(fd: number, pinPath: string): void {
  check(native().helm_pin(fd, pinPath), `cannot pin ${pinPath}`);
}

export function closeFd(fd: number): void {
  native().helm_close_fd(fd);
}

/** BPF_LINK_TYPE_*: which kind of attachment a link is. */
export const LINK_TYPE = { RAW_TRACEPOINT: 1, TRACING: 2, CGROUP: 3 } as const;

export function linkInfo(fd: number): { type: number; id: number; progId: number } {
  const out = Buffer.alloc(12);
  check(native().helm_link_info(fd, out), 'cannot inspect link');
  return { type: out.readUInt32LE(0), id: out.readUInt32LE(4), progId: out.readUInt32LE(8) };
}

export function progId(fd: number): number {
  return check(native().helm_prog_id(fd), 'cannot inspect program');
}

/** Swaps a link's program in one step; returns the errno when the link cannot (tracing links, for one). */
export function linkUpdate(linkFd: number, newProgFd: number): number {
  const rc = native().helm_link_update(linkFd, newProgFd, -1);
  return rc < 0 ? -rc : 0;
}

/** What an object declares, as libbpf read it (see helm_obj_describe). */
export interface ObjectDescription {
  text: string;
  maps: string[];
  programs: string[];
}

/** Map sizes for the shim: "name=max_entries,...". */
function sizeSpec(sizes: Record<string, number> | undefined): string {
  return Object.entries(sizes ?? {})
    .map(([name, n]) => `${name}=${n}`)
    .join(',');
}

function errorFrom(err: Buffer, fallback: string): KernelError {
  const msg = messageFrom(err);
  const m = /errno (\d+)/.exec(msg);
  return new KernelError(msg || fallback, m ? Number(m[1]) : 0);
}

export class BpfObject {
  private constructor(private handle: unknown, public readonly path: string) {}

  /**
   * Opens and loads; throws KernelError carrying libbpf's explanation (verifier log included).
   * `networkOnly` leaves the LSM programs out (kernels that refuse BPF LSM); `sizes` sets
   * maps' max_entries before loading (the audit rings).
   */
  static load(path: string, opts: { networkOnly?: boolean; sizes?: Record<string, number> } = {}): BpfObject {
    const err = Buffer.alloc(ERR_LEN);
    const flags = opts.networkOnly ? OPEN_NETWORK_ONLY : 0;
    const spec = sizeSpec(opts.sizes);
    const handle = spec ? native().helm_open_sized(path, flags, spec, err, ERR_LEN) : native().helm_open(path, flags, err, ERR_LEN);
    if (!handle) throw errorFrom(err, `cannot load ${path}`);
    return new BpfObject(handle, path);
  }

  /**
   * Opens without loading: maps can still be pointed at pinned ones (reuseMap),
   * then load(). `networkOnly` leaves the LSM programs out, and `sizes` sets maps'
   * max_entries, as in load() (a map's size is part of the layout id: pins.ts).
   */
  static open(path: string, opts: { networkOnly?: boolean; sizes?: Record<string, number> } = {}): BpfObject {
    const err = Buffer.alloc(ERR_LEN);
    const handle = native().helm_obj_open(path, opts.networkOnly ? OPEN_NETWORK_ONLY : 0, err, ERR_LEN);
    if (!handle) throw errorFrom(err, `cannot open ${path}`);
    const obj = new BpfObject(handle, path);
    const spec = sizeSpec(opts.sizes);
    if (spec && native().helm_obj_resize(handle, spec, err, ERR_LEN) < 0) {
      obj.close();
      throw errorFrom(err, `cannot size the maps of ${path}`);
    }
    return obj;
  }

  load(): void {
    const err = Buffer.alloc(ERR_LEN);
    if (native().helm_obj_load(this.handle, err, ERR_LEN) < 0) throw errorFrom(err, `cannot load ${this.path}`);
  }

  describe(): ObjectDescription {
    const buf = Buffer.alloc(1 << 16);
    const n = check(native().helm_obj_describe(this.handle, buf, buf.length), `cannot describe ${this.path}`);
    const text = buf.subarray(0, n).toString('utf8');
    const lines = text.split('\n').filter(Boolean).map((l) => l.split(' '));
    return { text, maps: lines.filter((l) => l[0] === 'map').map((l) => l[1]), programs: lines.filter((l) => l[0] === 'prog').map((l) => l[1]) };
  }

  /** The initial bytes of a data section (".rodata.helm_layout"), or undefined when there is none. */
  sectionData(section: string): Buffer | undefined {
    const buf = Buffer.alloc(4096);
    const n = native().helm_obj_section_data(this.handle, section, buf, buf.length);
    if (n === -2) return undefined;
    return buf.subarray(0, check(n, `cannot read section ${section} of ${this.path}`));
  }

  /** Before load(): the map `name` will be the one behind fd (a pinned map) instead of a new one. */
  reuseMap(name: string, fd: number): void {
    check(native().helm_obj_reuse_map(this.handle, name, fd), `cannot reuse map ${name}`);
  }

  progFd(name: string): number {
    return check(native().helm_prog_fd(this.handle, name), `program ${name} in ${this.path}`);
  }

  /** Attaches one program (cgroup programs to `cgroupPath`); returns the link's fd, which is the caller's. */
  attach(name: string, cgroupPath: string): number {
    const err = Buffer.alloc(ERR_LEN);
    const fd = native().helm_prog_attach(this.handle, name, cgroupPath, err, ERR_LEN);
    if (fd < 0) throw new KernelError(messageFrom(err) || `cannot attach ${name}`, -fd);
    return fd;
  }

  /** Attaches every loaded program; cgroup programs to `cgroupFd` (the root of the cgroup v2 tree). */
  attachAll(cgroupFd: number): number {
    const err = Buffer.alloc(ERR_LEN);
    const n = native().helm_attach_all(this.handle, cgroupFd, err, ERR_LEN);
    if (n < 0) throw new KernelError(messageFrom(err), -n);
    return n;
  }

  map(name: string): BpfMap {
    const fd = native().helm_map_fd(this.handle, name);
    if (fd < 0) throw new KernelError(`map ${name} not found in ${this.path}`, -fd);
    return new BpfMap(fd, name, false);
  }

  close(): void {
    if (this.handle) native().helm_close(this.handle);
    this.handle = null;
  }
}

/** Sum of a per-CPU u64 counter at `index` of a per-CPU array. */
export function readPerCpuCounter(map: BpfMap, index = 0): bigint {
  const cpus = native().helm_num_possible_cpus();
  const key = Buffer.alloc(4);
  key.writeUInt32LE(index);
  const value = map.lookup(key, 8 * cpus);
  if (!value) return 0n;
  let sum = 0n;
  for (let i = 0; i < cpus; i++) sum += value.readBigUInt64LE(i * 8);
  return sum;
}

/**
 * Drains a BPF ring buffer in batches: the native side copies many records into
 * one Buffer per call, off the event loop; `each` sees them as DataViews. The
 * kernel gets a batch's space back only after `each` (and, in start(), `onBatch`,
 * which writes them out) has run: records a killed reader had not written are
 * still in the ring for the next one.
 */
export class RingReader {
  private ring: unknown;
  private readonly buf: Buffer;
  private running = false;
  private stopped: Promise<void> = Promise.resolve();

  constructor(map: BpfMap, maxRecord: number, bufferBytes = 1 << 20) {
    const err = Buffer.alloc(4096);
    this.ring = native().helm_ring_open(map.fd, maxRecord, err, err.length);
    if (!this.ring) throw new KernelError(messageFrom(err), 0);
    this.buf = Buffer.alloc(bufferBytes);
  }

  /** Copies what is there now (waiting up to timeoutMs), hands each record to `each`, then commits. Returns the count. */
  drainOnce(each: (record: DataView) => void, timeoutMs = 0): number {
    const n = native().helm_ring_drain(this.ring, this.buf, this.buf.length, timeoutMs);
    check(n, 'cannot drain ring buffer');
    const count = this.walk(n, each);
    native().helm_ring_commit(this.ring);
    return count;
  }

  /** Bytes of records in the ring that no reader has committed yet. */
  pendingBytes(): bigint {
    return BigInt(native().helm_ring_pending(this.ring));
  }

  /** Records consumed from the ring that `each` could not take (it threw): reported as lost, never dropped silently. */
  undelivered = 0n;
  private lastError?: Error;

  private walk(bytes: number, each: (record: DataView) => void): number {
    let off = 0;
    let count = 0;
    // libbpf has already consumed the whole batch: every record is handed over, whatever one of them does.
    while (off + 8 <= bytes) {
      const len = this.buf.readUInt32LE(off);
      try {
        each(new DataView(this.buf.buffer, this.buf.byteOffset + off + 8, len));
      } catch (e) {
        this.undelivered++;
        this.lastError = e as Error;
      }
      off += 8 + ((len + 7) & ~7);
      count++;
    }
    return count;
  }

  private walkBatch(bytes: number, batch: (buf: Buffer, bytes: number) => void): void {
    try {
      batch(this.buf, bytes);
    } catch (e) {
      // Not expected (the handler takes every record itself): which records it took is unknown, so all count as lost.
      for (let off = 0; off + 8 <= bytes; off += 8 + ((this.buf.readUInt32LE(off) + 7) & ~7)) this.undelivered++;
      this.lastError = e as Error;
    }
  }

  /** The last error a record handler threw, once. */
  takeError(): Error | undefined {
    const e = this.lastError;
    this.lastError = undefined;
    return e;
  }

  private drainAsync(timeoutMs: number): Promise<number> {
    return new Promise((resolve, reject) => {
      native().helm_ring_drain.async(this.ring, this.buf, this.buf.length, timeoutMs, (err, n) => {
        if (err) reject(err);
        else resolve(n);
      });
    });
  }

  /**
   * Drains continuously until stop(); records are handed over in order, batch by
   * batch. `gate`, if given, is awaited before each drain: while the consumer is
   * behind, records wait in the kernel ring (which counts any that do not fit).
   * `onBatch` runs after each batch is handed over; the batch's space goes back
   * to the kernel only once the promise it returns resolves (the records are
   * written), so a killed reader leaves what it had not written to the next one.
   * The next drain does not wait for it: while one batch is being written (and
   * fsync'd), the next is drained and formatted. Batches are committed in order.
   */
  start(
    each: (record: DataView) => void,
    onError: (e: Error) => void,
    opts: {
      pollMs?: number;
      gate?: () => Promise<void>;
      onBatch?: () => void | Promise<void>;
      /** Takes a whole drained batch (buf[0, bytes), records as walk() reads them) instead of `each` per record; must not throw. */
      batch?: (buf: Buffer, bytes: number) => void;
    } = {},
  ): void {
    if (this.running) return;
    const pollMs = opts.pollMs ?? 100;
    this.running = true;
    this.stopped = (async () => {
      let busy = false;
      // Commits in drain order: each waits for its batch's onBatch and for the commits before it.
      let committed: Promise<void> = Promise.resolve();
      while (this.running) {
        try {
          if (opts.gate) await opts.gate();
          // While records keep coming, take what is there without waiting, here: a batch
          // copied by a call that cannot block costs less than a trip to a worker thread and
          // back. Once the ring is empty, wait for it on the worker thread.
          let n: number = busy ? native().helm_ring_drain(this.ring, this.buf, this.buf.length, 0) : 0;
          if (n === 0) n = await this.drainAsync(pollMs);
          busy = n > 0;
          if (n < 0) throw new KernelError(`cannot drain ring buffer: ${errnoName(-n)}`, -n);
          if (n > 0) {
            if (opts.batch) this.walkBatch(n, opts.batch);
            else this.walk(n, each);
            const pos = native().helm_ring_position(this.ring);
            const done = opts.onBatch ? opts.onBatch() : undefined;
            committed = Promise.all([committed, done]).then(
              () => {
                if (this.ring) native().helm_ring_commit_to(this.ring, pos);
              },
              (e: Error) => onError(e),
            );
          }
          const handlerError = this.takeError();
          if (handlerError) onError(handlerError);
        } catch (e) {
          onError(e as Error);
          await new Promise((r) => setTimeout(r, pollMs));
        }
      }
      await committed;
    })();
  }

  /** Stops the loop after one last drain, so nothing already in the ring is dropped. */
  async stop(each: (record: DataView) => void, onBatch: () => void | Promise<void> = () => undefined): Promise<void> {
    this.running = false;
    await this.stopped;
    for (;;) {
      const n = native().helm_ring_drain(this.ring, this.buf, this.buf.length, 0);
      check(n, 'cannot drain ring buffer');
      if (n === 0) break;
      this.walk(n, each);
      await onBatch();
      native().helm_ring_commit(this.ring);
    }
  }

  close(): void {
    if (this.ring) native().helm_ring_close(this.ring);
    this.ring = null;
  }
}
