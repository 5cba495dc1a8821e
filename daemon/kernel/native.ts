// koffi bindings to native/helm_shim.c (build/libhelm.so). Every function is typed;
// errors come back as -errno and are turned into KernelError with libbpf's message.
import koffi from 'koffi';
import path from 'node:path';
import fs from 'node:fs';
import { installRoot } from '../install-root';

export class KernelError extends Error {
  constructor(message: string, public readonly errno: number) {
    super(message);
    this.name = 'KernelError';
  }
}

/** Where build artefacts live: next to the compiled daemon (dist/daemon/kernel → build/). */
export function buildDir(): string {
  const fromEnv = process.env.HELM_BUILD_DIR;
  if (fromEnv) return fromEnv;
  return path.join(installRoot(), 'build');
}

export interface NativeApi {
  helm_open(path: string, flags: number, err: Buffer, errlen: number): unknown;
  helm_open_sized(path: string, flags: number, sizes: string, err: Buffer, errlen: number): unknown;
  helm_attach_all(obj: unknown, cgroupFd: number, err: Buffer, errlen: number): number;
  helm_obj_open(path: string, flags: number, err: Buffer, errlen: number): unknown;
  helm_obj_resize(obj: unknown, sizes: string, err: Buffer, errlen: number): number;
  helm_obj_load(obj: unknown, err: Buffer, errlen: number): number;
  helm_obj_describe(obj: unknown, buf: Buffer, len: number): number;
  helm_obj_section_data(obj: unknown, section: string, out: Buffer, len: number): number;
  helm_obj_reuse_map(obj: unknown, name: string, fd: number): number;
  helm_prog_fd(obj: unknown, name: string): number;
  helm_prog_attach(obj: unknown, name: string, cgroupPath: string, err: Buffer, errlen: number): number;
  helm_link_update(linkFd: number, newProgFd: number, oldProgFd: number): number;
  helm_link_info(fd: number, out: Buffer): number;
  helm_prog_id(fd: number): number;
  helm_pin(fd: number, path: string): number;
  helm_pinned(path: string): number;
  helm_map_next_key(fd: number, key: Buffer | null, next: Buffer): number;
  helm_lock_file(path: string): number;
  helm_sd_notify(message: string): number;
  helm_close(obj: unknown): void;
  helm_map_fd(obj: unknown, name: string): number;
  helm_map_create(type: number, name: string, keySize: number, valueSize: number, maxEntries: number, flags: number): number;
  helm_map_info(fd: number, out: Buffer): number;
  helm_map_update(fd: number, key: Buffer, value: Buffer, flags: bigint): number;
  helm_map_update_many(fd: number, keys: Buffer, values: Buffer, count: number, keySize: number, valueSize: number, flags: bigint, done: Int32Array): number;
  helm_map_delete_many(fd: number, keys: Buffer, count: number, keySize: number, done: Int32Array): number;
  helm_map_lookup(fd: number, key: Buffer, value: Buffer): number;
  helm_map_delete(fd: number, key: Buffer): number;
  helm_close_fd(fd: number): number;
  helm_num_possible_cpus(): number;
  helm_realtime_offset_ns(): bigint;
  helm_boottime_ns(): bigint;
  helm_sync_programs: {
    (): number;
    async(cb: (err: unknown, rc: number) => void): void;
  };
  helm_ring_open(mapFd: number, maxRecord: number, err: Buffer, errlen: number): unknown;
  helm_ring_drain: {
    (ring: unknown, buf: Buffer, buflen: number, timeoutMs: number): number;
    async(ring: unknown, buf: Buffer, buflen: number, timeoutMs: number, cb: (err: unknown, n: number) => void): void;
  };
  helm_ring_commit(ring: unknown): void;
  /** A position in the ring (a number, or a bigint past 2^53): opaque, handed back to helm_ring_commit_to. */
  helm_ring_position(ring: unknown): number | bigint;
  helm_ring_commit_to(ring: unknown, pos: number | bigint): void;
  helm_ring_pending(ring: unknown): bigint;
  helm_ring_close(ring: unknown): void;
  /** The audit hash chain over a batch of lines in place (see native/helm_shim.c); `prev` in and out. */
  helm_chain_lines(buf: Buffer, start: number, ends: Int32Array, n: number, prev: Buffer): number;
  /** A run of formatted lines into the writer's batch buffer, each with its seq (native/audit_format.c; daemon/audit/writer.ts). */
  helm_place_lines(src: Buffer, pos: Int32Array, first: number, n: number, out: Buffer, off: number, cap: number, seq: number, ends: Int32Array, endsAt: number): number;
  /** Decision lines for a drained batch (native/audit_format.c; daemon/audit/format-batch.ts). */
  helm_format_decisions(...args: unknown[]): number;
}

let cached: NativeApi | undefined;

export function native(): NativeApi {
  if (cached) return cached;
  const libPath = path.join(buildDir(), 'libhelm.so');
  if (!fs.existsSync(libPath)) {
    throw new KernelError(`native shim not found at ${libPath}: run \`make\` first`, 2);
  }
  const lib = koffi.load(libPath);
  koffi.opaque('helm_obj');
  koffi.opaque('helm_ring');
  cached = {
    helm_open: lib.func('helm_obj *helm_open(const char *path, int flags, _Out_ uint8_t *err, int errlen)'),
    helm_open_sized: lib.func('helm_obj *helm_open_sized(const char *path, int flags, const char *sizes, _Out_ uint8_t *err, int errlen)'),
    helm_attach_all: lib.func('int helm_attach_all(helm_obj *o, int cgroup_fd, _Out_ uint8_t *err, int errlen)'),
    helm_obj_open: lib.func('helm_obj *helm_obj_open(const char *path, int flags, _Out_ uint8_t *err, int errlen)'),
    helm_obj_resize: lib.func('int helm_obj_resize(helm_obj *o, const char *sizes, _Out_ uint8_t *err, int errlen)'),
    helm_obj_load: lib.func('int helm_obj_load(helm_obj *o, _Out_ uint8_t *err, int errlen)'),
    helm_obj_describe: lib.func('int helm_obj_describe(helm_obj *o, _Out_ uint8_t *buf, int len)'),
    helm_obj_section_data: lib.func('int helm_obj_section_data(helm_obj *o, const char *section, _Out_ uint8_t *out, int len)'),
    helm_obj_reuse_map: lib.func('int helm_obj_reuse_map(helm_obj *o, const char *name, int fd)'),
    helm_prog_fd: lib.func('int helm_prog_fd(helm_obj *o, const char *name)'),
    helm_prog_attach: lib.func('int helm_prog_attach(helm_obj *o, const char *name, const char *cgroup_path, _Out_ uint8_t *err, int errlen)'),
    helm_link_update: lib.func('int helm_link_update(int link_fd, int new_prog_fd, int old_prog_fd)'),
    helm_link_info: lib.func('int helm_link_info(int fd, _Out_ uint8_t *out3)'),
    helm_prog_id: lib.func('int helm_prog_id(int fd)'),
    helm_pin: lib.func('int helm_pin(int fd, const char *path)'),
    helm_pinned: lib.func('int helm_pinned(const char *path)'),
    helm_map_next_key: lib.func('int helm_map_next_key(int fd, const uint8_t *key, _Out_ uint8_t *next)'),
    helm_lock_file: lib.func('int helm_lock_file(const char *path)'),
    helm_sd_notify: lib.func('int helm_sd_notify(const char *message)'),
    helm_close: lib.func('void helm_close(helm_obj *o)'),
    helm_map_fd: lib.func('int helm_map_fd(helm_obj *o, const char *name)'),
    helm_map_create: lib.func('int helm_map_create(int type, const char *name, int key_size, int value_size, int max_entries, int flags)'),
    helm_map_info: lib.func('int helm_map_info(int fd, _Out_ uint8_t *out4)'),
    helm_map_update: lib.func('int helm_map_update(int fd, const uint8_t *key, const uint8_t *value, unsigned long long flags)'),
    helm_map_update_many: lib.func('int helm_map_update_many(int fd, const uint8_t *keys, const uint8_t *values, int count, int key_size, int value_size, unsigned long long flags, _Out_ int *done)'),
    helm_map_delete_many: lib.func('int helm_map_delete_many(int fd, const uint8_t *keys, int count, int key_size, _Out_ int *done)'),
    helm_map_lookup: lib.func('int helm_map_lookup(int fd, const uint8_t *key, _Out_ uint8_t *value)'),
    helm_map_delete: lib.func('int helm_map_delete(int fd, const uint8_t *key)'),
    helm_close_fd: lib.func('int helm_close_fd(int fd)'),
    helm_num_possible_cpus: lib.func('int helm_num_possible_cpus(void)'),
    helm_realtime_offset_ns: lib.func('long long helm_realtime_offset_ns(void)'),
    helm_boottime_ns: lib.func('long long helm_boottime_ns(void)'),
    helm_sync_programs: lib.func('int helm_sync_programs(void)'),
    helm_ring_open: lib.func('helm_ring *helm_ring_open(int map_fd, int max_record, _Out_ uint8_t *err, int errlen)'),
    helm_ring_drain: lib.func('int helm_ring_drain(helm_ring *r, _Out_ uint8_t *buf, int buflen, int timeout_ms)'),
    helm_ring_commit: lib.func('void helm_ring_commit(helm_ring *r)'),
    helm_ring_position: lib.func('long long helm_ring_position(helm_ring *r)'),
    helm_ring_commit_to: lib.func('void helm_ring_commit_to(helm_ring *r, long long pos)'),
    helm_ring_pending: lib.func('long long helm_ring_pending(helm_ring *r)'),
    helm_ring_close: lib.func('void helm_ring_close(helm_ring *r)'),
    helm_format_decisions: lib.func(
      'int helm_format_decisions(const uint8_t *recs, int nbytes, int from, int from_off, const uint8_t *names, const int *name_at, const int *name_idx, _Out_ uint8_t *out, int out_off, int out_cap, _Out_ int *res, long long off_sec, long long off_ns)',
    ),
    helm_place_lines: lib.func(
      'int helm_place_lines(const uint8_t *src, const int *pos, int first, int n, _Inout_ uint8_t *out, int off, int cap, long long seq, _Inout_ int *ends, int ends_at)',
    ),
    helm_chain_lines: lib.func('int helm_chain_lines(_Inout_ uint8_t *buf, int start, const int *ends, int n, _Inout_ uint8_t *prev)'),
  } as unknown as NativeApi;
  return cached;
}

export function errnoName(code: number): string {
  const names: Record<number, string> = {
    1: 'EPERM', 2: 'ENOENT', 7: 'E2BIG', 9: 'EBADF', 11: 'EWOULDBLOCK', 12: 'ENOMEM', 13: 'EACCES', 16: 'EBUSY', 17: 'EEXIST', 22: 'EINVAL', 28: 'ENOSPC', 95: 'EOPNOTSUPP', 524: 'ENOTSUPP',
  };
  return names[code] ?? `errno ${code}`;
}

export function messageFrom(err: Buffer): string {
  const end = err.indexOf(0);
  return err.subarray(0, end < 0 ? err.length : end).toString('utf8').trim();
}
