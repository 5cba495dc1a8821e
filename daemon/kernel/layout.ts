// The byte layouts of bpf/helm.h, for encoding map entries and decoding events.
// test/unit/layout.test.ts checks every offset and constant here against the C header.
import { HELM_PATH_BUF, HELM_MAX_PATH_ENTRIES, HELM_MAX_CGROUP_DEPTH } from './limits';

export const C = {
  HELM_PATH_BUF,
  HELM_MAX_PATH_ENTRIES,
  HELM_MAX_INODE_ENTRIES: 65536,
  HELM_MAX_AGENTS: 4096,
  HELM_MAX_CGROUP_DEPTH,
  HELM_MAX_GENERATIONS: 4,
  HELM_DENY_RING_BYTES: 32 * 1024 * 1024,
  HELM_ALLOW_RING_BYTES: 8 * 1024 * 1024,
  HELM_ARGV_BUF: 256,
  HELM_MAX_ARGS: 32,
  HELM_MAX_ANCESTORS: 32,
  HELM_OP_READ: 0,
  HELM_OP_WRITE: 1,
  HELM_OP_EXEC: 2,
  HELM_FILE_OPS: 3,
  HELM_OP_BPF: 3,
  HELM_OP_SIGNAL: 4,
  HELM_OP_PTRACE: 5,
  HELM_OP_MOUNT: 6,
  HELM_OP_MODULE: 7,
  HELM_OP_CONTROL: 8,
  HELM_MAX_COMPONENTS: 40,
  HELM_MAX_PROTECTED: 256,
  HELM_DETAIL_OPEN: 0,
  HELM_DETAIL_CREATE: 1,
  HELM_DETAIL_MKDIR: 2,
  HELM_DETAIL_UNLINK: 3,
  HELM_DETAIL_RMDIR: 4,
  HELM_DETAIL_RENAME_FROM: 5,
  HELM_DETAIL_RENAME_TO: 6,
  HELM_DETAIL_LINK_FROM: 7,
  HELM_DETAIL_LINK_TO: 8,
  HELM_DETAIL_SYMLINK: 9,
  HELM_DETAIL_CHMOD: 10,
  HELM_DETAIL_CHOWN: 11,
  HELM_DETAIL_TRUNCATE: 12,
  HELM_DETAIL_MMAP_EXEC: 13,
  HELM_DETAIL_RECEIVE: 14,
  HELM_DETAIL_XATTR: 15,
  HELM_ACTION_NONE: 0,
  HELM_ACTION_ALLOW: 1,
  HELM_ACTION_DENY: 2,
  HELM_MODE_ENFORCE: 0,
  HELM_MODE_DRY_RUN: 1,
  HELM_DECISION_ALLOW: 0,
  HELM_DECISION_DENY: 1,
  HELM_DECISION_WOULD_DENY: 2,
  HELM_REASON_RULE: 0,
  HELM_REASON_DEFAULT: 1,
  HELM_REASON_NO_POLICY: 2,
  HELM_REASON_PATH_ERROR: 3,
  HELM_REASON_NO_TABLE: 4,
  HELM_REASON_INODE_RULE: 5,
  HELM_REASON_SELF_PROTECT: 6,
  HELM_AGENT_DRY_RUN: 1,
  HELM_SETTINGS_DRY_RUN: 1,
  HELM_MAX_NET_ENTRIES: 65536,
  HELM_MAX_NAME_ENTRIES: 65536,
  HELM_MAX_LEARNED: 65536,
  HELM_MAX_DNS_SOCKETS: 16384,
  HELM_NET_SEGMENTS: 16,
  HELM_LEARNED_NAMES: 4,
  HELM_MAX_COND_LISTS: 65536,
  HELM_COND_LIST_LEN: 8,
  HELM_MAX_COND_EXES: 65536,
  HELM_MAX_COND_UIDS: 65536,
  HELM_MAX_LABEL_PAIRS: 64,
  HELM_COND_EXE: 1,
  HELM_COND_UID: 2,
  HELM_OP_CONNECT: 9,
  HELM_OP_BIND: 10,
  HELM_NET_CONNECT: 0,
  HELM_NET_BIND: 1,
  HELM_NET_OPS: 2,
  HELM_DETAIL_NET_CONNECT: 16,
  HELM_DETAIL_NET_SENDMSG: 17,
  HELM_DETAIL_NET_BIND: 18,
  HELM_RANK_NONE: 0,
  HELM_RANK_ALLOW: 1,
  HELM_RANK_CONTEXTUAL: 2,
  HELM_RANK_BLOCK: 3,
  HELM_DETAIL_UNIX: 19,
  HELM_DETAIL_RAW: 20,
  HELM_DETAIL_PACKET: 21,
  HELM_SOCKET_RAW: 1,
  HELM_SOCKET_PACKET: 2,
  HELM_ANY_PROTOCOL: 0xffffffff,
  HELM_MAX_SOCKET_ENTRIES: 4096,
  HELM_MAX_UNIX_ENTRIES: 16384,
  HELM_PIN_FORMAT: 1,
  HELM_PIN_READY: 1,
  HELM_PIN_CHANGING: 2,
  HELM_EVENT_DECISION: 1,
  HELM_EVENT_SELFTEST: 2,
  HELM_EVENT_FLAG_DIR: 1,
  HELM_EVENT_FLAG_ARGV_TRUNCATED: 2,
  HELM_EVENT_FLAG_SAMPLED: 4,
  HELM_RING_DENY: 0,
  HELM_RING_ALLOW: 1,
  HELM_RINGS: 2,
  HELM_ALLOW_LOG_NONE: 0,
  HELM_ALLOW_LOG_SAMPLED: 1,
  HELM_ALLOW_LOG_ALL: 2,
} as const;

type Field = readonly [offset: number, size: number];
interface StructLayout {
  size: number;
  fields: Record<string, Field>;
}

export const LAYOUT = {
  helm_agent: { size: 32, fields: { agent_id: [0, 8], role_id: [8, 4], flags: [12, 4], dns_port: [16, 2], label_bits: [24, 8] } },
  helm_verdict: { size: 12, fields: { policy_id: [0, 2], rule_id: [2, 2], action: [4, 1], mode: [5, 1], rank: [6, 1], cond_list: [8, 4] } },
  helm_cond: { size: 32, fields: { verdict: [0, 12], cond_id: [12, 4], label_bits: [16, 8], flags: [24, 4] } },
  helm_cond_list: { size: 264, fields: { count: [0, 4], cond: [8, 256] } },
  helm_exe_key: { size: 260, fields: { prefixlen: [0, 4], cond_id: [4, 4], path: [8, 252] } },
  helm_uid_key: { size: 8, fields: { cond_id: [0, 4], uid: [4, 4] } },
  helm_path_key: { size: 260, fields: { prefixlen: [0, 4], role_id: [4, 4], path: [8, 252] } },
  helm_path_value: { size: 44, fields: { verdict: [0, 36], default_mode: [36, 1] } },
  helm_inode_key: { size: 16, fields: { role_id: [0, 4], dev: [4, 4], ino: [8, 8] } },
  helm_inode_value: { size: 72, fields: { self: [0, 36], below: [36, 36] } },
  helm_settings: { size: 16, fields: { active_generation: [0, 4], flags: [4, 4], helmd_tgid: [8, 4] } },
  helm_protected_key: { size: 16, fields: { dev: [0, 4], ino: [8, 8] } },
  helm_net_key: { size: 28, fields: { prefixlen: [0, 4], role_id: [4, 4], family: [8, 1], addr: [9, 16] } },
  helm_port_range: { size: 28, fields: { from: [0, 2], to: [2, 2], verdict: [4, 24] } },
  helm_net_value: { size: 452, fields: { default_mode: [0, 1], count: [1, 1], range: [4, 448] } },
  helm_name_key: { size: 8, fields: { role_id: [0, 4], name_id: [4, 4] } },
  helm_learned_key: { size: 24, fields: { agent_id: [0, 8], addr: [8, 16] } },
  helm_learned_value: { size: 24, fields: { expires_boot_ns: [0, 8], name_id: [8, 16] } },
  helm_dns_origin: { size: 24, fields: { addr: [0, 16], port: [16, 2], family: [18, 2] } },
  helm_socket_key: { size: 12, fields: { role_id: [0, 4], kind: [4, 4], protocol: [8, 4] } },
  helm_socket_value: { size: 20, fields: { verdict: [0, 12], default_mode: [12, 1] } },
  helm_pin_meta: {
    size: 128,
    fields: { format: [0, 4], state: [4, 4], layout: [8, 32], object: [40, 32], instance: [72, 16], created_ns: [88, 8], version: [96, 32] },
  },
  helm_audit_settings: { size: 24, fields: { allow_log: [0, 4], sample_cost_ns: [8, 8], sample_burst_ns: [16, 8] } },
  helm_agent_counters: {
    size: 48,
    fields: { allowed: [0, 8], allow_unlogged: [8, 8], allow_lost: [16, 8], denied: [24, 8], would_deny: [32, 8], deny_lost: [40, 8] },
  },
  helm_event: {
    size: 1160,
    fields: {
      ts_boot_ns: [0, 8], cgroup_id: [8, 8], agent_id: [16, 8], ino: [24, 8],
      type: [32, 4], pid: [36, 4], tid: [40, 4], ppid: [44, 4], uid: [48, 4], gid: [52, 4],
      role_id: [56, 4], generation: [60, 4], dev: [64, 4], policy_id: [68, 2], rule_id: [70, 2],
      op: [72, 1], decision: [73, 1], mode: [74, 1], reason: [75, 1], flags: [76, 4],
      detail: [80, 4], target_pid: [84, 4], addr: [88, 16], port: [104, 2], proto: [106, 1], family: [107, 1],
      path_len: [108, 4], exe_len: [112, 4], comm: [116, 16], path: [132, 252], exe: [384, 252],
      ops: [636, 4], argc: [640, 4], argv_len: [644, 4], parent_exe_len: [648, 4], parent_exe: [652, 252], argv: [904, 256],
    },
  },
} as const satisfies Record<string, StructLayout>;

export interface Verdict {
  policyId: number;
  ruleId: number;
  action: number;
  mode: number;
  /** HELM_RANK_*: the kind of rule that decided (0 when none did). */
  rank: number;
  /** The list of contextual rules with runtime conditions to try first (0: none); see struct helm_verdict. */
  condList: number;
}

export const NO_VERDICT: Verdict = { policyId: 0, ruleId: 0, action: C.HELM_ACTION_NONE, mode: C.HELM_MODE_ENFORCE, rank: C.HELM_RANK_NONE, condList: 0 };

function writeVerdict(buf: Buffer, o: number, v: Verdict): void {
  const F = LAYOUT.helm_verdict.fields;
  buf.writeUInt16LE(v.policyId, o + F.policy_id[0]);
  buf.writeUInt16LE(v.ruleId, o + F.rule_id[0]);
  buf.writeUInt8(v.action, o + F.action[0]);
  buf.writeUInt8(v.mode, o + F.mode[0]);
  buf.writeUInt8(v.rank, o + F.rank[0]);
  buf.writeUInt32LE(v.condList, o + F.cond_list[0]);
}

function writeVerdicts(buf: Buffer, at: number, verdicts: readonly Verdict[], count: number = C.HELM_FILE_OPS): void {
  for (let i = 0; i < count; i++) writeVerdict(buf, at + i * LAYOUT.helm_verdict.size, verdicts[i] ?? NO_VERDICT);
}

/** One contextual rule of a condition list: the allow it gives when condition `condId` holds. */
export interface CondListEntry {
  verdict: Verdict;
  condId: number;
  /** Label pairs the agent must have, as bits (bit n-1 for label id n). */
  labelBits: bigint;
  /** HELM_COND_*. */
  flags: number;
}

export function encodeCondList(entries: readonly CondListEntry[]): Buffer {
  const L = LAYOUT.helm_cond_list;
  const E = LAYOUT.helm_cond;
  if (entries.length > C.HELM_COND_LIST_LEN) throw new RangeError(`${entries.length} conditions exceed ${C.HELM_COND_LIST_LEN}`);
  const buf = Buffer.alloc(L.size);
  buf.writeUInt32LE(entries.length, L.fields.count[0]);
  entries.forEach((e, i) => {
    const o = L.fields.cond[0] + i * E.size;
    writeVerdict(buf, o + E.fields.verdict[0], e.verdict);
    buf.writeUInt32LE(e.condId, o + E.fields.cond_id[0]);
    buf.writeBigUInt64LE(e.labelBits, o + E.fields.label_bits[0]);
    buf.writeUInt32LE(e.flags, o + E.fields.flags[0]);
  });
  return buf;
}

/** cond_exes key: `data` is stored as path keys are (an exact executable ends in NUL, a directory in '/'). */
export function encodeExeKey(condId: number, data: Buffer): Buffer {
  const L = LAYOUT.helm_exe_key;
  if (data.length > C.HELM_PATH_BUF) throw new RangeError(`executable key of ${data.length} bytes exceeds ${C.HELM_PATH_BUF}`);
  const buf = Buffer.alloc(L.size);
  buf.writeUInt32LE(32 + 8 * data.length, L.fields.prefixlen[0]);
  buf.writeUInt32LE(condId, L.fields.cond_id[0]);
  data.copy(buf, L.fields.path[0]);
  return buf;
}

export function encodeUidKey(condId: number, uid: number): Buffer {
  const L = LAYOUT.helm_uid_key;
  const buf = Buffer.alloc(L.size);
  buf.writeUInt32LE(condId, L.fields.cond_id[0]);
  buf.writeUInt32LE(uid, L.fields.uid[0]);
  return buf;
}

/** Network addresses are stored as 16 bytes: IPv6, or IPv4 mapped (::ffff:a.b.c.d). */
export function ip16(bytes: readonly number[]): Buffer {
  if (bytes.length === 16) return Buffer.from(bytes);
  if (bytes.length !== 4) throw new RangeError(`an address has 4 or 16 bytes, not ${bytes.length}`);
  return Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...bytes]);
}

/**
 * Net-table key. `bytes` is the rule's network as the evaluator compares it: 4 bytes for IPv4
 * (mapped IPv6 networks already turned into IPv4), 16 for IPv6; undefined for `*` (the role's
 * root entry). `prefix` is in bits of `bytes`.
 */
export function encodeNetKey(roleId: number, bytes: readonly number[] | undefined, prefix = 0): Buffer {
  const L = LAYOUT.helm_net_key;
  const buf = Buffer.alloc(L.size);
  buf.writeUInt32LE(32, L.fields.prefixlen[0]);
  buf.writeUInt32LE(roleId, L.fields.role_id[0]);
  if (bytes === undefined) return buf;
  if ((bytes.length !== 4 && bytes.length !== 16) || prefix < 0 || prefix > 8 * bytes.length) {
    throw new RangeError(`bad network key (${bytes.length} bytes, /${prefix})`);
  }
  buf.writeUInt32LE(32 + 8 + prefix, L.fields.prefixlen[0]);
  buf.writeUInt8(bytes.length === 4 ? 4 : 6, L.fields.family[0]);
  Buffer.from(bytes).copy(buf, L.fields.addr[0]);
  return buf;
}

export interface PortRange {
  from: number;
  to: number;
  /** Indexed by HELM_NET_*: connect, bind. */
  verdicts: Verdict[];
}

export function encodeNetValue(ranges: readonly PortRange[], defaultMode: number): Buffer {
  const L = LAYOUT.helm_net_value;
  const R = LAYOUT.helm_port_range;
  if (ranges.length > C.HELM_NET_SEGMENTS) throw new RangeError(`${ranges.length} port ranges exceed ${C.HELM_NET_SEGMENTS}`);
  const buf = Buffer.alloc(L.size);
  buf.writeUInt8(defaultMode, L.fields.default_mode[0]);
  buf.writeUInt8(ranges.length, L.fields.count[0]);
  ranges.forEach((r, i) => {
    const o = L.fields.range[0] + i * R.size;
    buf.writeUInt16LE(r.from, o + R.fields.from[0]);
    buf.writeUInt16LE(r.to, o + R.fields.to[0]);
    writeVerdicts(buf, o + R.fields.verdict[0], r.verdicts, C.HELM_NET_OPS);
  });
  return buf;
}

export function encodeSocketKey(roleId: number, kind: number, protocol: number): Buffer {
  const L = LAYOUT.helm_socket_key;
  const buf = Buffer.alloc(L.size);
  buf.writeUInt32LE(roleId, L.fields.role_id[0]);
  buf.writeUInt32LE(kind, L.fields.kind[0]);
  buf.writeUInt32LE(protocol >>> 0, L.fields.protocol[0]);
  return buf;
}

export function encodeSocketValue(verdict: Verdict, defaultMode: number): Buffer {
  const L = LAYOUT.helm_socket_value;
  const buf = Buffer.alloc(L.size);
  writeVerdicts(buf, L.fields.verdict[0], [verdict], 1);
  buf.writeUInt8(defaultMode, L.fields.default_mode[0]);
  return buf;
}

export function encodeNameKey(roleId: number, nameId: number): Buffer {
  const L = LAYOUT.helm_name_key;
  const buf = Buffer.alloc(L.size);
  buf.writeUInt32LE(roleId, L.fields.role_id[0]);
  buf.writeUInt32LE(nameId, L.fields.name_id[0]);
  return buf;
}

export function encodeLearnedKey(agentId: bigint, addr16: Buffer): Buffer {
  const L = LAYOUT.helm_learned_key;
  const buf = Buffer.alloc(L.size);
  buf.writeBigUInt64LE(agentId, L.fields.agent_id[0]);
  addr16.copy(buf, L.fields.addr[0]);
  return buf;
}

export function encodeLearnedValue(expiresBootNs: bigint, nameIds: readonly number[]): Buffer {
  const L = LAYOUT.helm_learned_value;
  if (nameIds.length > C.HELM_LEARNED_NAMES) throw new RangeError(`${nameIds.length} names exceed ${C.HELM_LEARNED_NAMES}`);
  const buf = Buffer.alloc(L.size);
  buf.writeBigUInt64LE(expiresBootNs, L.fields.expires_boot_ns[0]);
  nameIds.forEach((id, i) => buf.writeUInt32LE(id, L.fields.name_id[0] + 4 * i));
  return buf;
}

/** Path-table key: `data` is the stored byte string (exact paths end in NUL, subtrees in '/'). */
export function encodePathKey(roleId: number, data: Buffer): Buffer {
  const buf = Buffer.alloc(LAYOUT.helm_path_key.size);
  writePathKey(buf, 0, roleId, data);
  return buf;
}

/** encodePathKey into `buf` at `at`, whose bytes there are zero (many keys packed in one buffer). */
export function writePathKey(buf: Buffer, at: number, roleId: number, data: Buffer): void {
  const L = LAYOUT.helm_path_key;
  if (data.length > C.HELM_PATH_BUF) throw new RangeError(`path key of ${data.length} bytes exceeds ${C.HELM_PATH_BUF}`);
  buf.writeUInt32LE(32 + 8 * data.length, at + L.fields.prefixlen[0]);
  buf.writeUInt32LE(roleId, at + L.fields.role_id[0]);
  data.copy(buf, at + L.fields.path[0]);
}

export function encodePathValue(verdicts: readonly Verdict[], defaultMode: number): Buffer {
  const buf = Buffer.alloc(LAYOUT.helm_path_value.size);
  writePathValue(buf, 0, verdicts, defaultMode);
  return buf;
}

/** encodePathValue into `buf` at `at`, whose bytes there are zero. */
export function writePathValue(buf: Buffer, at: number, verdicts: readonly Verdict[], defaultMode: number): void {
  const L = LAYOUT.helm_path_value;
  writeVerdicts(buf, at + L.fields.verdict[0], verdicts);
  buf.writeUInt8(defaultMode, at + L.fields.default_mode[0]);
}

export function encodeInodeKey(roleId: number, dev: number, ino: bigint): Buffer {
  const L = LAYOUT.helm_inode_key;
  const buf = Buffer.alloc(L.size);
  buf.writeUInt32LE(roleId, L.fields.role_id[0]);
  buf.writeUInt32LE(dev, L.fields.dev[0]);
  buf.writeBigUInt64LE(ino, L.fields.ino[0]);
  return buf;
}

/** Inode-table value: verdicts for the object itself, and for everything below it (a directory). */
export function encodeInodeValue(self: readonly Verdict[], below: readonly Verdict[]): Buffer {
  const L = LAYOUT.helm_inode_value;
  const buf = Buffer.alloc(L.size);
  writeVerdicts(buf, L.fields.self[0], self);
  writeVerdicts(buf, L.fields.below[0], below);
  return buf;
}

export function encodeAgent(agentId: bigint, roleId: number, flags: number, dnsPort = 0, labelBits = 0n): Buffer {
  const L = LAYOUT.helm_agent;
  const buf = Buffer.alloc(L.size);
  buf.writeBigUInt64LE(agentId, L.fields.agent_id[0]);
  buf.writeUInt32LE(roleId, L.fields.role_id[0]);
  buf.writeUInt32LE(flags, L.fields.flags[0]);
  buf.writeUInt16LE(dnsPort, L.fields.dns_port[0]);
  buf.writeBigUInt64LE(labelBits, L.fields.label_bits[0]);
  return buf;
}

export function encodeSettings(activeGeneration: number, flags: number, helmdTgid: number): Buffer {
  const L = LAYOUT.helm_settings;
  const buf = Buffer.alloc(L.size);
  buf.writeUInt32LE(activeGeneration, L.fields.active_generation[0]);
  buf.writeUInt32LE(flags, L.fields.flags[0]);
  buf.writeUInt32LE(helmdTgid, L.fields.helmd_tgid[0]);
  return buf;
}

/** Which allows the kernel sends (enum helm_allow_log) and the sampler's bucket: `rate` per second, `burst` at once. */
export function encodeAuditSettings(allowLog: number, rate: number, burst: number): Buffer {
  const L = LAYOUT.helm_audit_settings;
  const buf = Buffer.alloc(L.size);
  buf.writeUInt32LE(allowLog, L.fields.allow_log[0]);
  const cost = rate > 0 ? BigInt(Math.ceil(1e9 / rate)) : 0n;
  buf.writeBigUInt64LE(cost, L.fields.sample_cost_ns[0]);
  buf.writeBigUInt64LE(cost * BigInt(Math.max(1, Math.floor(burst))), L.fields.sample_burst_ns[0]);
  return buf;
}

export interface AgentCounters {
  allowed: bigint;
  allowUnlogged: bigint;
  allowLost: bigint;
  denied: bigint;
  wouldDeny: bigint;
  denyLost: bigint;
}

/** The sum over CPUs of a per-CPU agent_counters value (`cpus` values of helm_agent_counters, each 8-aligned). */
export function decodeAgentCounters(buf: Buffer, cpus: number): AgentCounters {
  const L = LAYOUT.helm_agent_counters;
  const stride = (L.size + 7) & ~7;
  const sum = (f: readonly [number, number]) => {
    let n = 0n;
    for (let i = 0; i < cpus; i++) n += buf.readBigUInt64LE(i * stride + f[0]);
    return n;
  };
  return {
    allowed: sum(L.fields.allowed),
    allowUnlogged: sum(L.fields.allow_unlogged),
    allowLost: sum(L.fields.allow_lost),
    denied: sum(L.fields.denied),
    wouldDeny: sum(L.fields.would_deny),
    denyLost: sum(L.fields.deny_lost),
  };
}

export function encodeProtectedKey(dev: number, ino: bigint): Buffer {
  const L = LAYOUT.helm_protected_key;
  const buf = Buffer.alloc(L.size);
  buf.writeUInt32LE(dev, L.fields.dev[0]);
  buf.writeBigUInt64LE(ino, L.fields.ino[0]);
  return buf;
}

/** What a pinned set is (helm_pin_meta); hashes and the instance as hex. */
export interface PinMeta {
  format: number;
  state: number;
  layout: string;
  object: string;
  instance: string;
  createdNs: bigint;
  version: string;
}

export function encodePinMeta(m: PinMeta): Buffer {
  const L = LAYOUT.helm_pin_meta;
  const buf = Buffer.alloc(L.size);
  const hex = (field: readonly [number, number], value: string) => {
    const bytes = Buffer.from(value, 'hex');
    if (bytes.length !== field[1]) throw new RangeError(`pin meta: ${value} is not ${field[1]} bytes of hex`);
    bytes.copy(buf, field[0]);
  };
  buf.writeUInt32LE(m.format, L.fields.format[0]);
  buf.writeUInt32LE(m.state, L.fields.state[0]);
  hex(L.fields.layout, m.layout);
  hex(L.fields.object, m.object);
  hex(L.fields.instance, m.instance);
  buf.writeBigUInt64LE(m.createdNs, L.fields.created_ns[0]);
  const version = Buffer.from(m.version, 'utf8').subarray(0, L.fields.version[1] - 1);
  version.copy(buf, L.fields.version[0]);
  return buf;
}

/** Reads the fields of `format` 1; a later format only appends, so they mean the same there. */
export function decodePinMeta(buf: Buffer): PinMeta {
  const F = LAYOUT.helm_pin_meta.fields;
  const hex = (f: readonly [number, number]) => buf.subarray(f[0], f[0] + f[1]).toString('hex');
  const v = buf.subarray(F.version[0], F.version[0] + F.version[1]);
  const end = v.indexOf(0);
  return {
    format: buf.readUInt32LE(F.format[0]),
    state: buf.readUInt32LE(F.state[0]),
    layout: hex(F.layout),
    object: hex(F.object),
    instance: hex(F.instance),
    createdNs: buf.readBigUInt64LE(F.created_ns[0]),
    version: v.subarray(0, end < 0 ? v.length : end).toString('utf8'),
  };
}

export function u32Key(n: number): Buffer {
  const buf = Buffer.alloc(4);
  buf.writeUInt32LE(n);
  return buf;
}

export function u64Key(n: bigint): Buffer {
  const buf = Buffer.alloc(8);
  buf.writeBigUInt64LE(n);
  return buf;
}

/** A decision event as the kernel wrote it, before names are attached. */
export interface RawEvent {
  tsBootNs: bigint;
  cgroupId: bigint;
  agentId: bigint;
  ino: bigint;
  type: number;
  pid: number;
  tid: number;
  ppid: number;
  uid: number;
  gid: number;
  roleId: number;
  generation: number;
  dev: number;
  policyId: number;
  ruleId: number;
  op: number;
  decision: number;
  mode: number;
  reason: number;
  flags: number;
  detail: number;
  targetPid: number;
  /** Network ops: the 16-byte address (IPv4 mapped), port, IPPROTO_* and AF_*. */
  addr: Buffer;
  port: number;
  proto: number;
  family: number;
  pathLen: number;
  exeLen: number;
  comm: string;
  /** The executable as the kernel resolved it; undefined when it could not (exeLen <= 0). */
  exe: string | undefined;
  /** undefined when the kernel could not resolve the path (pathLen <= 0). */
  path: string | undefined;
  /** Bits (1 << op) of every verb the operation needed. */
  ops: number;
  /** exec: how many arguments were read (argv.length), or a negative errno; 0 for other ops. */
  argc: number;
  argv: string[] | undefined;
  parentExeLen: number;
  parentExe: string | undefined;
}

function cString(view: DataView, at: number, max: number): string {
  // A view of the bytes, not a copy: one event has four of these, on the drain's hot path.
  const bytes = Buffer.from(view.buffer, view.byteOffset + at, max);
  const end = bytes.indexOf(0);
  return bytes.toString('utf8', 0, end < 0 ? max : end);
}

export function decodeEvent(view: DataView): RawEvent {
  const F = LAYOUT.helm_event.fields;
  if (view.byteLength < LAYOUT.helm_event.size) {
    throw new RangeError(`event record of ${view.byteLength} bytes, expected ${LAYOUT.helm_event.size}`);
  }
  const u32 = (f: Field) => view.getUint32(f[0], true);
  const pathLen = view.getInt32(F.path_len[0], true);
  const exeLen = view.getInt32(F.exe_len[0], true);
  const argc = view.getInt32(F.argc[0], true);
  const parentExeLen = view.getInt32(F.parent_exe_len[0], true);
  return {
    tsBootNs: view.getBigUint64(F.ts_boot_ns[0], true),
    cgroupId: view.getBigUint64(F.cgroup_id[0], true),
    agentId: view.getBigUint64(F.agent_id[0], true),
    ino: view.getBigUint64(F.ino[0], true),
    type: u32(F.type),
    pid: u32(F.pid),
    tid: u32(F.tid),
    ppid: u32(F.ppid),
    uid: u32(F.uid),
    gid: u32(F.gid),
    roleId: u32(F.role_id),
    generation: u32(F.generation),
    dev: u32(F.dev),
    policyId: view.getUint16(F.policy_id[0], true),
    ruleId: view.getUint16(F.rule_id[0], true),
    op: view.getUint8(F.op[0]),
    decision: view.getUint8(F.decision[0]),
    mode: view.getUint8(F.mode[0]),
    reason: view.getUint8(F.reason[0]),
    flags: u32(F.flags),
    detail: u32(F.detail),
    targetPid: u32(F.target_pid),
    addr: Buffer.from(new Uint8Array(view.buffer, view.byteOffset + F.addr[0], F.addr[1])),
    port: view.getUint16(F.port[0], true),
    proto: view.getUint8(F.proto[0]),
    family: view.getUint8(F.family[0]),
    pathLen,
    exeLen,
    comm: cString(view, F.comm[0], F.comm[1]),
    exe: exeLen > 0 ? cString(view, F.exe[0], F.exe[1]) : undefined,
    path: pathLen > 0 ? cString(view, F.path[0], F.path[1]) : undefined,
    ops: u32(F.ops),
    argc,
    argv: argc > 0 ? argvStrings(view, F.argv[0], Math.min(u32(F.argv_len), F.argv[1]), argc) : undefined,
    parentExeLen,
    parentExe: parentExeLen > 0 ? cString(view, F.parent_exe[0], F.parent_exe[1]) : undefined,
  };
}

/** A C string field read as decodeEvent's cString reads it, remembering the last one: a flood repeats the same exe, comm, parent. */
class CStringMemo {
  private readonly last: Uint8Array;
  private len = -1;
  private text = '';

  constructor(max: number) {
    this.last = new Uint8Array(max);
  }

  /** The string at `at` in `bytes` (up to its NUL, or `max` bytes), the same string object as last time when its bytes are. */
  read(bytes: Uint8Array, at: number, max: number): string {
    const last = this.last;
    let same = true;
    let n = 0;
    for (; n < max; n++) {
      const c = bytes[at + n];
      if (c === 0) break;
      if (same && c !== last[n]) same = false;
    }
    if (same && n === this.len) return this.text;
    last.set(bytes.subarray(at, at + n));
    this.len = n;
    this.text = Buffer.from(bytes.buffer, bytes.byteOffset + at, n).toString('utf8');
    return this.text;
  }
}

/** A u64 field as a bigint, the same bigint as last time when it has the same value. */
class U64Memo {
  private lo = -1;
  private hi = -1;
  private value = 0n;

  read(view: DataView, at: number): bigint {
    const lo = view.getUint32(at, true);
    const hi = view.getUint32(at + 4, true);
    if (lo !== this.lo || hi !== this.hi) {
      this.lo = lo;
      this.hi = hi;
      this.value = view.getBigUint64(at, true);
    }
    return this.value;
  }
}

/**
 * decodeEvent for the drain's hot path: the same fields, decoded into one
 * object that every call reuses (its `addr` too), with the strings and ids
 * that repeat from one event to the next (exe, comm, parent, agent, cgroup)
 * kept rather than decoded again. What it returns is valid until the next call.
 */
export class EventDecoder {
  private readonly F = LAYOUT.helm_event.fields;
  private bytes = new Uint8Array(0);
  private readonly comm = new CStringMemo(LAYOUT.helm_event.fields.comm[1]);
  private readonly exe = new CStringMemo(LAYOUT.helm_event.fields.exe[1]);
  private readonly path = new CStringMemo(LAYOUT.helm_event.fields.path[1]);
  private readonly parentExe = new CStringMemo(LAYOUT.helm_event.fields.parent_exe[1]);
  private readonly cgroupId = new U64Memo();
  private readonly agentId = new U64Memo();
  private readonly ino = new U64Memo();
  private readonly e: RawEvent = {
    tsBootNs: 0n, cgroupId: 0n, agentId: 0n, ino: 0n, type: 0, pid: 0, tid: 0, ppid: 0, uid: 0, gid: 0, roleId: 0, generation: 0, dev: 0,
    policyId: 0, ruleId: 0, op: 0, decision: 0, mode: 0, reason: 0, flags: 0, detail: 0, targetPid: 0, addr: Buffer.alloc(16), port: 0, proto: 0,
    family: 0, pathLen: 0, exeLen: 0, comm: '', exe: undefined, path: undefined, ops: 0, argc: 0, argv: undefined, parentExeLen: 0, parentExe: undefined,
  };

  decode(view: DataView): RawEvent {
    const F = this.F;
    if (view.byteLength < LAYOUT.helm_event.size) {
      throw new RangeError(`event record of ${view.byteLength} bytes, expected ${LAYOUT.helm_event.size}`);
    }
    if (this.bytes.buffer !== view.buffer) this.bytes = new Uint8Array(view.buffer as ArrayBuffer);
    const bytes = this.bytes;
    const b = view.byteOffset;
    const e = this.e;
    e.pathLen = view.getInt32(F.path_len[0], true);
    e.exeLen = view.getInt32(F.exe_len[0], true);
    e.argc = view.getInt32(F.argc[0], true);
    e.parentExeLen = view.getInt32(F.parent_exe_len[0], true);
    e.tsBootNs = view.getBigUint64(F.ts_boot_ns[0], true);
    e.cgroupId = this.cgroupId.read(view, F.cgroup_id[0]);
    e.agentId = this.agentId.read(view, F.agent_id[0]);
    e.ino = this.ino.read(view, F.ino[0]);
    e.type = view.getUint32(F.type[0], true);
    e.pid = view.getUint32(F.pid[0], true);
    e.tid = view.getUint32(F.tid[0], true);
    e.ppid = view.getUint32(F.ppid[0], true);
    e.uid = view.getUint32(F.uid[0], true);
    e.gid = view.getUint32(F.gid[0], true);
    e.roleId = view.getUint32(F.role_id[0], true);
    e.generation = view.getUint32(F.generation[0], true);
    e.dev = view.getUint32(F.dev[0], true);
    e.policyId = view.getUint16(F.policy_id[0], true);
    e.ruleId = view.getUint16(F.rule_id[0], true);
    e.op = view.getUint8(F.op[0]);
    e.decision = view.getUint8(F.decision[0]);
    e.mode = view.getUint8(F.mode[0]);
    e.reason = view.getUint8(F.reason[0]);
    e.flags = view.getUint32(F.flags[0], true);
    e.detail = view.getUint32(F.detail[0], true);
    e.targetPid = view.getUint32(F.target_pid[0], true);
    e.addr.set(bytes.subarray(b + F.addr[0], b + F.addr[0] + F.addr[1]));
    e.port = view.getUint16(F.port[0], true);
    e.proto = view.getUint8(F.proto[0]);
    e.family = view.getUint8(F.family[0]);
    e.comm = this.comm.read(bytes, b + F.comm[0], F.comm[1]);
    e.exe = e.exeLen > 0 ? this.exe.read(bytes, b + F.exe[0], F.exe[1]) : undefined;
    e.path = e.pathLen > 0 ? this.path.read(bytes, b + F.path[0], F.path[1]) : undefined;
    e.ops = view.getUint32(F.ops[0], true);
    e.argv = e.argc > 0 ? argvStrings(view, F.argv[0], Math.min(view.getUint32(F.argv_len[0], true), F.argv[1]), e.argc) : undefined;
    e.parentExe = e.parentExeLen > 0 ? this.parentExe.read(bytes, b + F.parent_exe[0], F.parent_exe[1]) : undefined;
    return e;
  }
}

/** NUL-separated strings; the last one may lack its NUL when the kernel cut it short. */
function argvStrings(view: DataView, at: number, len: number, argc: number): string[] {
  const bytes = Buffer.from(view.buffer, view.byteOffset + at, len);
  const out: string[] = [];
  let start = 0;
  while (start < len && out.length < argc) {
    let end = bytes.indexOf(0, start);
    if (end < 0) end = len;
    out.push(bytes.subarray(start, end).toString('utf8'));
    start = end + 1;
  }
  return out;
}

/** Kernel dev_t (major << 20 | minor) from the userspace st_dev encoding. */
export function kernelDev(stDev: bigint): number {
  const major = Number(((stDev >> 8n) & 0xfffn) | ((stDev >> 32n) & ~0xfffn));
  const minor = Number((stDev & 0xffn) | ((stDev >> 12n) & ~0xffn));
  return ((major << 20) | minor) >>> 0;
}
