// Thin typed wrappers over the native shim: a loaded BPF object, its maps, and a
// ring-buffer reader that drains batches on koffi's worker thread.
import { native, KernelError, messageFrom, errnoName } from './native';

const ERR_LEN = 65536;

export const MAP_TYPE = { HASH: 1, ARRAY: 2, PERCPU_ARRAY: 6, LPM_TRIE: 11 } as const;
export const MAP_FLAG = { NO_PREALLOC: 1 } as const;
export const UPDATE = { ANY: 0n, NOEXIST: 1n, EXIST: 2n } as const;

function check(rc: number, what: string): number {
  if (rc < 0) throw new KernelError(`${what}: ${errnoName(-rc)}`, -rc);
  return rc;
}

export class BpfMap {
  constructor(
    public readonly fd: number,
    public readonly name: string,
    private readonly owned: boolean,
  ) {}

  static create(type: number, name: string, keySize: number, valueSize: number, maxEntries: number, flags = 0): BpfMap {
    const fd = check(native().helm_map_create(type, name, keySize, valueSize, maxEntries, flags), `cannot create map ${name}`);
    return new BpfMap(fd, name, true);
  }

  update(key: Buffer, value: Buffer, flags: bigint = UPDATE.ANY): void {
    check(native().helm_map_update(this.fd, key, value, flags), `cannot update map ${this.name}`);
  }

  /** The value, or undefined when the key is absent. */
  lookup(key: Buffer, valueSize: number): Buffer | undefined {
    const out = Buffer.alloc(valueSize);
    const rc = native().helm_map_lookup(this.fd, key, out);
    if (rc === -2) return undefined;
    check(rc, `cannot read map ${this.name}`);
    return out;
  }

  /** true if the key was there. */
  delete(key: Buffer): boolean {
    const rc = native().helm_map_delete(this.fd, key);
    if (rc === -2) return false;
    check(rc, `cannot delete from map ${this.name}`);
    return true;
  }

  close(): void {
    if (this.owned) native().helm_close_fd(this.fd);
  }
}

export class BpfObject {
  private constructor(private handle: unknown, public readonly path: string) {}

  /** Opens and loads; throws KernelError carrying libbpf's explanation (verifier log included). */
  static load(path: string): BpfObject {
    const err = Buffer.alloc(ERR_LEN);
    const handle = native().helm_open(path, err, ERR_LEN);
    if (!handle) {
      const msg = messageFrom(err);
      const m = /errno (\d+)/.exec(msg);
      throw new KernelError(msg || `cannot load ${path}`, m ? Number(m[1]) : 0);
    }
    return new BpfObject(handle, path);
  }

  attachAll(): number {
    const err = Buffer.alloc(ERR_LEN);
    const n = native().helm_attach_all(this.handle, err, ERR_LEN);
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

/** Sum of a per-CPU u64 counter at index 0. */
export function readPerCpuCounter(map: BpfMap): bigint {
  const cpus = native().helm_num_possible_cpus();
  const value = map.lookup(Buffer.alloc(4), 8 * cpus);
  if (!value) return 0n;
  let sum = 0n;
  for (let i = 0; i < cpus; i++) sum += value.readBigUInt64LE(i * 8);
  return sum;
}

/**
 * Drains a BPF ring buffer in batches: the native side copies many records into
 * one Buffer per call, off the event loop; `onRecords` sees them as DataViews.
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

  private walk(bytes: number, each: (record: DataView) => void): number {
    let off = 0;
    let count = 0;
    while (off + 8 <= bytes) {
      const len = this.buf.readUInt32LE(off);
      each(new DataView(this.buf.buffer, this.buf.byteOffset + off + 8, len));
      off += 8 + ((len + 7) & ~7);
      count++;
    }
    return count;
  }

  private drainAsync(timeoutMs: number): Promise<number> {
    return new Promise((resolve, reject) => {
      native().helm_ring_drain.async(this.ring, this.buf, this.buf.length, timeoutMs, (err, n) => {
        if (err) reject(err);
        else resolve(n);
      });
    });
  }

  /** Drains continuously until stop(); records are handed over in order, batch by batch. */
  start(each: (record: DataView) => void, onError: (e: Error) => void, pollMs = 100): void {
    if (this.running) return;
    this.running = true;
    this.stopped = (async () => {
      while (this.running) {
        try {
          const n = await this.drainAsync(pollMs);
          if (n < 0) throw new KernelError(`cannot drain ring buffer: ${errnoName(-n)}`, -n);
          this.walk(n, each);
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
