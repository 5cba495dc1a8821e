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

  /** Every key now in the map (the kernel's order). For inspection and tests: one call per key. */
  keys(): Buffer[] {
    const out: Buffer[] = [];
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(this.keySize);
      const rc = native().helm_map_next_key(this.fd, prev, next);
      if (rc === -2) return out;
      check(rc, `cannot list map ${this.name}`);
      out.push(next);
      prev = next;
    }
  }

  /** true if the key was there. */
  delete(key: Buffer): boolean {
    this.checkKey(key);
    const rc = native().helm_map_delete(this.fd, key);
    if (rc === -2) return false;
    check(rc, `cannot delete from map ${this.name}`);
    return true;
  }

  close(): void {
    if (this.owned) native().helm_close_fd(this.fd);
  }
}

const OPEN_NETWORK_ONLY = 1; // native/helm_shim.c HELM_OPEN_NETWORK_ONLY

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
    const spec = Object.entries(opts.sizes ?? {})
      .map(([name, n]) => `${name}=${n}`)
      .join(',');
    const handle = spec ? native().helm_open_sized(path, flags, spec, err, ERR_LEN) : native().helm_open(path, flags, err, ERR_LEN);
    if (!handle) {
      const msg = messageFrom(err);
      const m = /errno (\d+)/.exec(msg);
      throw new KernelError(msg || `cannot load ${path}`, m ? Number(m[1]) : 0);
    }
    return new BpfObject(handle, path);
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
 * one Buffer per call (waiting for records off the event loop); `each` sees them
 * as DataViews.
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

  /** Copies what is there now (waiting up to timeoutMs) and hands each record to `each`. Returns the count. */
  drainOnce(each: (record: DataView) => void, timeoutMs = 0): number {
    const n = native().helm_ring_drain(this.ring, this.buf, this.buf.length, timeoutMs);
    check(n, 'cannot drain ring buffer');
    return this.walk(n, each);
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
   */
  start(each: (record: DataView) => void, onError: (e: Error) => void, opts: { pollMs?: number; gate?: () => Promise<void> } = {}): void {
    if (this.running) return;
    const pollMs = opts.pollMs ?? 100;
    this.running = true;
    this.stopped = (async () => {
      let busy = false;
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
          this.walk(n, each);
          const handlerError = this.takeError();
          if (handlerError) onError(handlerError);
        } catch (e) {
          onError(e as Error);
          await new Promise((r) => setTimeout(r, pollMs));
        }
      }
    })();
  }

  /** Stops the loop after one last drain, so nothing already in the ring is dropped. */
  async stop(each: (record: DataView) => void): Promise<void> {
    this.running = false;
    await this.stopped;
    while (this.drainOnce(each, 0) > 0) {
      /* keep draining */
    }
  }

  close(): void {
    if (this.ring) native().helm_ring_close(this.ring);
    this.ring = null;
  }
}
