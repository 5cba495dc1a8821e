// Maps through koffi and the native shim, on the host kernel: a hash map round-trip, map
// creation errors, and a differential test of the path table — the kernel's own LPM trie,
// created exactly as KernelEnforcer.applyGeneration creates it and filled with compilePolicy's
// entries, must give for every path the decision of the reference evaluator.
import t from 'tap';
import fs from 'node:fs';
import { BpfMap, MAP_FLAG, MAP_TYPE, UPDATE } from '../../daemon/kernel/bpf';
import { C, LAYOUT, encodePathKey, encodePathValue, u64Key } from '../../daemon/kernel/layout';
import { KernelError } from '../../daemon/kernel/native';
import { compilePolicy, type CompiledPolicy } from '../../daemon/policy/compile';
import { evaluateOperation, type Decision } from '../../daemon/policy/evaluate';
import { parsePolicySource } from '../../daemon/policy/parse';
import { FILE_VERBS, type FileVerb, type Policy } from '../../daemon/policy/types';
import { requireRoot, type Scope } from './host';

/** What /proc says about a map fd: proves which kind of map the kernel made. */
function fdinfo(fd: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').split('\n')) {
    const m = /^(\w+):\s*(.*)$/.exec(line);
    if (m) out[m[1]] = m[2];
  }
  return out;
}

function createMap(scope: Scope, ...args: Parameters<typeof BpfMap.create>): BpfMap {
  const m = BpfMap.create(...args);
  scope.teardown(() => m.close());
  return m;
}

/** The path table exactly as KernelEnforcer.applyGeneration creates it. */
function createPathTable(scope: Scope): BpfMap {
  return createMap(scope, MAP_TYPE.LPM_TRIE, 'helm_paths', LAYOUT.helm_path_key.size, LAYOUT.helm_path_value.size, C.HELM_MAX_PATH_ENTRIES, MAP_FLAG.NO_PREALLOC);
}

const POLICIES = `
apiVersion: helm/v1
kind: Policy
metadata:
  name: alpha
spec:
  roles: [dev, ops]
  mode: enforce
  allow:
    - id: tree
      read: [/a/b/]
      write: [/a/b/out/]
      exec: [/usr/bin/, /a/b/tools/run.sh]
    - id: exact
      read: [/a/bc, /etc/hosts, /]
  block:
    - id: secret
      read: [/a/b/secret/, /a/b/key.pem, /var/log/auth.log]
      write: [/a/b/out/locked]
  contextual:
    - id: ops-only
      write: [/a/b/ops/]
      read: [/a/b/ops/]
      when: { role: [ops] }
---
apiVersion: helm/v1
kind: Policy
metadata:
  name: beta
spec:
  roles: [ops, watcher]
  mode: dry-run
  allow:
    - id: logs
      read: [/var/log/]
  block:
    - id: private
      read: [/a/b/ops/private/, /var/log/auth.log]
      exec: [/usr/bin/curl]
`;

const PATHS = [
  '/',
  '/a',
  '/a/b',
  '/a/b/',
  '/a/b/file.txt',
  '/a/b/deep/er/still/file',
  '/a/bc',
  '/a/bc/inner',
  '/a/bcd',
  '/a/b/secret',
  '/a/b/secret/token',
  '/a/b/secretive',
  '/a/b/key.pem',
  '/a/b/key.pem.bak',
  '/a/b/key.pe',
  '/a/b/out',
  '/a/b/out/report.csv',
  '/a/b/out/locked',
  '/a/b/out/locked/x',
  '/a/b/outside',
  '/a/b/ops',
  '/a/b/ops/x',
  '/a/b/ops/private',
  '/a/b/ops/private/k',
  '/a/b/opsx',
  '/a/b/tools/run.sh',
  '/a/b/tools/run.sh2',
  '/etc',
  '/etc/hosts',
  '/etc/hostsx',
  '/etc/host',
  '/usr/bin',
  '/usr/bin/ls',
  '/usr/bin/curl',
  '/usr/binx/ls',
  '/var/log',
  '/var/log/syslog',
  '/var/log/auth.log',
  '/var/logs/x',
  '/zzz/unlisted',
  // The longest path the kernel's buffer takes once a directory's '/' and the NUL are added.
  '/a/b/' + 'x'.repeat(C.HELM_PATH_BUF - 2 - '/a/b/'.length),
];

/** The bytes the kernel looks up for a path: "<path>\0", a directory as "<path>/\0" (but "/" stays "/\0"). */
function kernelLookupData(p: string, isDir: boolean): Buffer {
  const withSlash = isDir && p !== '/' && !p.endsWith('/') ? `${p}/` : p;
  return Buffer.from(`${withSlash}\0`, 'utf8');
}

interface KernelOutcome {
  decision: Decision;
  reason: 'rule' | 'default' | 'no-policy';
  policy?: string;
  rule?: string;
}

/** bpf/helm.bpf.c's reading of a path-table lookup, for one verb. */
function kernelOutcome(value: Buffer | undefined, verb: FileVerb, compiled: CompiledPolicy): KernelOutcome {
  if (!value) return { decision: 'deny', reason: 'no-policy' };
  const op = { read: C.HELM_OP_READ, write: C.HELM_OP_WRITE, exec: C.HELM_OP_EXEC }[verb];
  const V = LAYOUT.helm_verdict;
  const at = LAYOUT.helm_path_value.fields.verdict[0] + op * V.size;
  const action = value.readUInt8(at + V.fields.action[0]);
  const mode = value.readUInt8(at + V.fields.mode[0]);
  const policyId = value.readUInt16LE(at + V.fields.policy_id[0]);
  const ruleId = value.readUInt16LE(at + V.fields.rule_id[0]);
  const denyIn = (m: number): Decision => (m === C.HELM_MODE_ENFORCE ? 'deny' : 'would_deny');
  if (action === C.HELM_ACTION_NONE) return { decision: denyIn(value.readUInt8(LAYOUT.helm_path_value.fields.default_mode[0])), reason: 'default' };
  const named = { reason: 'rule' as const, policy: compiled.policies[policyId - 1]?.name ?? `#${policyId}`, rule: compiled.rules[ruleId - 1]?.rule ?? `#${ruleId}` };
  if (action === C.HELM_ACTION_ALLOW) return { decision: 'allow', ...named };
  if (action === C.HELM_ACTION_DENY) return { decision: denyIn(mode), ...named };
  throw new Error(`unknown action ${action} in the path table`);
}

interface Case {
  role: string;
  roleId: number;
  verb: FileVerb;
  path: string;
  isDir: boolean;
}

/** Every (role, verb, path, file/dir) case where the kernel's LPM and the evaluator disagree. */
function differences(map: BpfMap, policies: Policy[], compiled: CompiledPolicy, cases: Case[]) {
  const out: { c: Case; kernel: KernelOutcome; reference: KernelOutcome }[] = [];
  for (const c of cases) {
    const value = map.lookup(encodePathKey(c.roleId, kernelLookupData(c.path, c.isDir)), LAYOUT.helm_path_value.size);
    const kernel = kernelOutcome(value, c.verb, compiled);
    const ev = evaluateOperation(policies, { role: c.role, verb: c.verb, path: c.path, isDir: c.isDir });
    const reference: KernelOutcome = { decision: ev.decision, reason: ev.reason, ...(ev.reason === 'rule' ? { policy: ev.policy, rule: ev.rule } : {}) };
    if (JSON.stringify(kernel) !== JSON.stringify(reference)) out.push({ c, kernel, reference });
  }
  return out;
}

function main(): void {
  t.test('hash map: update, lookup, delete round-trip through koffi', async (t) => {
    const m = createMap(t, MAP_TYPE.HASH, 'helm_t_hash', 8, 16, 4);
    t.ok(m.fd > 2, `map fd ${m.fd}`);
    const info = fdinfo(m.fd);
    t.equal(Number(info.map_type), MAP_TYPE.HASH, 'the kernel made a hash map');
    t.equal(Number(info.key_size), 8);
    t.equal(Number(info.value_size), 16);
    t.equal(Number(info.max_entries), 4);

    const key = u64Key(0xfeed_0000_0000_0001n); // above 2^53: keys travel as exact bytes
    const value = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    t.equal(m.lookup(key, 16), undefined, 'a missing key is undefined');
    m.update(key, value);
    t.same(m.lookup(key, 16), value, 'lookup returns the bytes written');
    t.equal(m.lookup(u64Key(1n), 16), undefined, 'another key is still missing');

    const value2 = Buffer.alloc(16, 0xa5);
    m.update(key, value2, UPDATE.EXIST);
    t.same(m.lookup(key, 16), value2, 'UPDATE.EXIST replaces the value');
    t.throws(() => m.update(key, value, UPDATE.NOEXIST), { name: 'KernelError', errno: 17, message: /cannot update map helm_t_hash: EEXIST/ }, 'NOEXIST on a present key');
    t.throws(() => m.update(u64Key(2n), value, UPDATE.EXIST), { name: 'KernelError', errno: 2, message: /ENOENT/ }, 'EXIST on a missing key');
    t.same(m.lookup(key, 16), value2, 'a refused update changes nothing');

    t.equal(m.delete(key), true, 'delete of a present key returns true');
    t.equal(m.delete(key), false, 'delete again returns false');
    t.equal(m.lookup(key, 16), undefined, 'deleted key is gone');

    for (let i = 0n; i < 4n; i++) m.update(u64Key(100n + i), value);
    t.throws(() => m.update(u64Key(200n), value), { name: 'KernelError', errno: 7, message: /E2BIG/ }, 'a full map refuses one more key');
    for (let i = 0n; i < 4n; i++) t.same(m.lookup(u64Key(100n + i), 16), value, `entry ${100n + i} intact`);
  });

  t.test('map creation errors are KernelErrors with readable messages', async (t) => {
    const cases: { what: string; args: Parameters<typeof BpfMap.create> }[] = [
      { what: 'key size 0', args: [MAP_TYPE.HASH, 'bad_key', 0, 8, 16] },
      { what: 'max_entries 0', args: [MAP_TYPE.HASH, 'bad_entries', 8, 8, 0] },
      { what: 'LPM trie without NO_PREALLOC', args: [MAP_TYPE.LPM_TRIE, 'bad_lpm', LAYOUT.helm_path_key.size, LAYOUT.helm_path_value.size, 16] },
      { what: 'LPM trie key beyond 256 bytes of data', args: [MAP_TYPE.LPM_TRIE, 'bad_lpm_key', 4 + 257, 8, 16, MAP_FLAG.NO_PREALLOC] },
    ];
    for (const c of cases) {
      let err: unknown;
      try {
        BpfMap.create(...c.args).close();
      } catch (e) {
        err = e;
      }
      t.type(err, KernelError, `${c.what}: throws a KernelError`);
      const ke = err as KernelError;
      t.equal(ke?.errno, 22, `${c.what}: errno EINVAL`);
      t.match(ke?.message, new RegExp(`^cannot create map ${c.args[1]}: EINVAL$`), `${c.what}: names the map and the error (${ke?.message})`);
    }
  });

  t.test('path table: the kernel LPM trie agrees with the reference evaluator', async (t) => {
    const policies = parsePolicySource(POLICIES, 'x.yaml', { canonicalize: (p) => p });
    // stat finds nothing: only the path table is under test here (no inode entries).
    const compiled = compilePolicy(policies, { extraRoles: ['ghost'], stat: () => undefined });
    t.same(compiled.inodeEntries, [], 'no inode entries');
    t.same([...compiled.roles.keys()].sort(), ['dev', 'ghost', 'ops', 'watcher'], 'roles');
    t.notOk(compiled.pathEntries.some((e) => e.roleId === compiled.roles.get('ghost')), 'a role no policy names has no entries');

    const map = createPathTable(t);
    const info = fdinfo(map.fd);
    t.equal(Number(info.map_type), MAP_TYPE.LPM_TRIE, 'an LPM trie');
    t.equal(Number(info.key_size), LAYOUT.helm_path_key.size, 'key size');
    t.equal(Number(info.value_size), LAYOUT.helm_path_value.size, 'value size');
    t.equal(Number(info.max_entries), C.HELM_MAX_PATH_ENTRIES, 'max entries');
    t.equal(Number.parseInt(info.map_flags, 16), MAP_FLAG.NO_PREALLOC, 'flags');

    for (const e of compiled.pathEntries) map.update(encodePathKey(e.roleId, e.data), encodePathValue(e.verdicts, e.defaultMode));
    // Every entry reads back exactly (an exact-length key finds itself).
    let readBack = 0;
    for (const e of compiled.pathEntries) {
      if (map.lookup(encodePathKey(e.roleId, e.data), LAYOUT.helm_path_value.size)?.equals(encodePathValue(e.verdicts, e.defaultMode))) readBack++;
    }
    t.equal(readBack, compiled.pathEntries.length, `all ${compiled.pathEntries.length} entries read back`);

    const cases: Case[] = [];
    for (const [role, roleId] of compiled.roles) {
      for (const verb of FILE_VERBS) {
        for (const p of PATHS) for (const isDir of [false, true]) cases.push({ role, roleId, verb, path: p, isDir });
      }
    }
    const diff = differences(map, policies, compiled, cases);
    t.same(diff, [], `${cases.length} lookups: kernel and evaluator agree`);

    // The comparison covered every kind of outcome (otherwise agreeing would prove little).
    const seen = new Set<string>();
    for (const c of cases) {
      const ev = evaluateOperation(policies, { role: c.role, verb: c.verb, path: c.path, isDir: c.isDir });
      seen.add(`${ev.decision}/${ev.reason}`);
    }
    for (const k of ['allow/rule', 'deny/rule', 'would_deny/rule', 'deny/default', 'would_deny/default', 'deny/no-policy']) {
      t.ok(seen.has(k), `cases include ${k}`);
    }

    // A lookup key one byte too long cannot be built: the kernel buffer bounds it.
    t.throws(() => encodePathKey(1, kernelLookupData('/a/b/' + 'x'.repeat(C.HELM_PATH_BUF), false)), RangeError);

    // The differential sees a wrong table: drop dev's block entry for /a/b/secret/ and the
    // subtree falls back to the /a/b/ allow, which the evaluator does not accept.
    const devId = compiled.roles.get('dev')!;
    t.equal(map.delete(encodePathKey(devId, Buffer.from('/a/b/secret/'))), true, 'removed one entry');
    const broken = differences(map, policies, compiled, cases);
    t.ok(broken.length > 0, `a missing entry is detected (${broken.length} disagreements)`);
    t.ok(
      broken.every((d) => d.c.role === 'dev' && d.c.path.startsWith('/a/b/secret') && d.kernel.decision === 'allow' && d.reference.decision === 'deny'),
      'only dev paths below /a/b/secret/ changed, from deny to allow',
    );
  });

  t.test('path table: the role id separates roles sharing a path', async (t) => {
    const map = createPathTable(t);
    const allowRead = encodePathValue([{ policyId: 1, ruleId: 1, action: C.HELM_ACTION_ALLOW, mode: C.HELM_MODE_ENFORCE, rank: C.HELM_RANK_ALLOW, condList: 0 }], C.HELM_MODE_ENFORCE);
    map.update(encodePathKey(1, Buffer.from('/shared/')), allowRead);
    t.ok(map.lookup(encodePathKey(1, Buffer.from('/shared/x\0')), LAYOUT.helm_path_value.size), 'role 1 matches its subtree');
    t.equal(map.lookup(encodePathKey(2, Buffer.from('/shared/x\0')), LAYOUT.helm_path_value.size), undefined, 'role 2 does not');
    // role ids are compared as bytes of a little-endian u32: 256 must not match 1.
    t.equal(map.lookup(encodePathKey(256, Buffer.from('/shared/x\0')), LAYOUT.helm_path_value.size), undefined, 'role 256 does not');
    t.equal(map.lookup(encodePathKey(1, Buffer.from('/sharedx\0')), LAYOUT.helm_path_value.size), undefined, 'a string-prefix sibling does not');
  });
}

if (requireRoot()) main();
