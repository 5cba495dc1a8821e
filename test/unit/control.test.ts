// The control plane over gRPC, against a fake kernel binding: every service, its
// status codes, and the promise that a rejected change changes nothing — not the
// kernel's tables, not the policy in memory, not the modes — and is audited.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { execFile } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { Helmd, type HelmdOptions } from '../../daemon/helmd';
import { call, ControlError, type Endpoint } from '../../daemon/control/client';
import { tailAudit, type StreamedRecord } from '../../daemon/control/audit-stream';
import { helmProto, socketAddress } from '../../daemon/control/proto';
import { CgroupError } from '../../daemon/control/cgroups';
import { C } from '../../daemon/kernel/layout';
import { FakeKernel } from '../fake-kernel';
import { labelPairKey } from '../../daemon/policy/compile-cond';
import { loadPolicySources } from '../../daemon/policy/parse';
import { policyDigest } from '../../daemon/audit/recorder';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const HELMCTL = path.join(ROOT, 'bin', 'helmctl');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'helm-control-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

const policy = (name: string, roles: string[], allow: string, extra = '') => `apiVersion: helm/v1
kind: Policy
metadata: { name: ${name} }
spec:
  roles: [${roles.join(', ')}]
  allow:
    - { id: r1, read: [${allow}] }
${extra}`;

const A = policy('base', ['worker'], '/srv/a/');
const B = policy('base', ['worker'], '/srv/b/');
/** Two located errors: an unknown key (line 7) and a relative path (line 6). */
const BROKEN = `apiVersion: helm/v1
kind: Policy
metadata: { name: broken }
spec:
  roles: [worker]
  allow: [{ id: r, read: [relative/path] }]
  blok: []
`;

interface Env {
  dir: string;
  socket: string;
  audit: string;
  policyFile: string;
  kernel: FakeKernel;
  helmd: Helmd;
  processes: Set<string>;
  stop(): Promise<void>;
}

let envCount = 0;
async function startHelmd(t: { teardown(fn: () => unknown): void }, over: Partial<HelmdOptions> & { policyText?: string } = {}): Promise<Env> {
  const dir = fs.mkdtempSync(path.join(tmp, `env${envCount++}-`));
  const policyFile = path.join(dir, 'policies', 'base.yaml');
  fs.mkdirSync(path.dirname(policyFile));
  fs.writeFileSync(policyFile, over.policyText ?? A);
  const kernel = new FakeKernel();
  const processes = new Set<string>();
  let nextId = 1000n;
  const ids = new Map<string, bigint>();
  const helmd = new Helmd({
    policyPaths: [path.dirname(policyFile)],
    auditLog: path.join(dir, 'log', 'audit.jsonl'),
    dryRun: false,
    socket: path.join(dir, 'run', 'helmd.sock'),
    logger: pino({ level: 'silent' }),
    kernel: () => kernel,
    watch: false,
    // Agents' DNS forwarders listen on loopback; nothing here resolves names.
    dnsUpstreams: [],
    dnsTtlMinSec: 5,
    dnsTtlMaxSec: 3600,
    cgroups: {
      inspect: (p) => {
        if (!p.startsWith('/sys/fs/cgroup/')) throw new CgroupError(`${p} is not below the cgroup v2 mount /sys/fs/cgroup`);
        if (!ids.has(p)) ids.set(p, nextId++);
        return { path: p, id: ids.get(p)!, level: 2 };
      },
      hasProcesses: (d) => processes.has(d),
    },
    ...over,
  });
  await helmd.start();
  const env: Env = {
    dir,
    socket: path.join(dir, 'run', 'helmd.sock'),
    audit: path.join(dir, 'log', 'audit.jsonl'),
    policyFile,
    kernel,
    helmd,
    processes,
    stop: () => helmd.stop(),
  };
  t.teardown(() => env.stop());
  return env;
}

function auditLines(env: Env): Record<string, unknown>[] {
  return fs
    .readFileSync(env.audit, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}

const controlLines = (env: Env, action?: string) => auditLines(env).filter((l) => l.type === 'control' && (!action || l.action === action));

async function rpcError(p: Promise<unknown>): Promise<ControlError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ControlError) return e;
    throw e;
  }
  throw new Error('the call succeeded');
}

function helmctl(args: string[], opts: { uid?: number; gid?: number } = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    // A clean environment: tap's own hooks in NODE_OPTIONS write files another uid may not.
    execFile(HELMCTL, args, { encoding: 'utf8', timeout: 60_000, env: { PATH: process.env.PATH }, ...opts }, (err, stdout, stderr) => {
      resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

const src = (file: string, content: string) => ({ file, content });
const src2 = (file: string, text: string) => ({ file, text });

interface Status {
  generation: number;
  policies: string[];
  dry_run: boolean;
  policy_origin: string;
  live_generations: number[];
  last_apply: { ok: boolean; source: string; error: string };
}

// ---------------------------------------------------------------------------------------------

t.test('start-up: the socket is 0660 root, the first generation is loaded and audited', async (t) => {
  const env = await startHelmd(t);
  const st = fs.statSync(env.socket);
  t.ok(st.isSocket());
  t.equal(st.mode & 0o777, 0o660, 'mode 0660');
  t.equal(st.uid, 0, 'owned by root');
  const s = await call<Status>(env.socket, 'SystemService', 'Status', {});
  t.equal(s.generation, 1);
  t.same(s.policies, ['base']);
  t.equal(s.policy_origin, 'files');
  t.same(s.live_generations, [1]);
  const first = controlLines(env, 'apply')[0];
  t.match(first, { source: 'startup', generation: 1, policies: ['base'] }, 'the loaded generation is in the audit trail');
  t.ok(env.kernel.protectedPaths.includes(env.socket) && env.kernel.protectedPaths.includes(env.policyFile), "helm's own files are protected from governed agents");
  const v = await call<{ version: string; api: string; generation: number }>(env.socket, 'SystemService', 'Version', {});
  t.match(v, { api: 'helm.v1', generation: 1 });
  const d = await call<{ checks: { name: string; ok: boolean }[] }>(env.socket, 'SystemService', 'Doctor', {});
  t.ok(d.checks.some((c) => c.name === 'helmd enforcing' && c.ok));
});

t.test('apply: a valid set becomes a new generation; the old one is freed after the switch', async (t) => {
  const env = await startHelmd(t);
  env.kernel.retireDelayMs = 100;
  const r = await call<{ generation: number; previous_generation: number; policies: string[]; rules: number }>(env.socket, 'PolicyService', 'Apply', { sources: [src('b.yaml', B)] });
  t.match(r, { generation: 2, previous_generation: 1, policies: ['base'], rules: 1 });
  t.equal(env.kernel.activeGeneration, 2);
  const keys = env.kernel.active!.pathEntries.map((e) => e.data.toString());
  t.ok(keys.includes('/srv/b/') && !keys.includes('/srv/a/'), 'the kernel runs B');
  const got = await call<{ generation: number; sources: { file: string; content: string }[]; origin: string }>(env.socket, 'PolicyService', 'Get', {});
  t.match(got, { generation: 2, origin: 'api', sources: [{ file: 'b.yaml', content: B }] });
  // A second apply waits for the first one's old generation to be freed.
  await call(env.socket, 'PolicyService', 'Apply', { sources: [src('a.yaml', A)] });
  await env.helmd['queue'].idle();
  t.same(env.kernel.journal, ['apply 1', 'apply 2', 'retire 1', 'apply 3', 'retire 2'], 'each old generation is freed after the switch and before the next apply');
  t.same(env.kernel.liveGenerations, [3]);
  const applies = controlLines(env, 'apply');
  t.match(applies[1], { source: 'api', by: 'unix', generation: 2, previous_generation: 1, files: ['b.yaml'] });
});

t.test('apply: edits of a JSON policy, each from the parse before, as a parse from nothing would give them', async (t) => {
  const env = await startHelmd(t);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'helm-json-apply-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.mkdirSync(path.join(dir, 'one'));
  fs.mkdirSync(path.join(dir, 'two'));
  fs.symlinkSync('one', path.join(dir, 'link'));
  const json = (first: string) => {
    const rules = [{ id: 'through', read: [`${dir}/link/${first}`] }, ...Array.from({ length: 60 }, (_, i) => ({ id: `fill${i}`, read: [`/srv/fill/f${i}`] }))];
    return `{"apiVersion": "helm/v1", "kind": "Policy", "metadata": {"name": "base"},\n"spec": {"roles": ["worker"], "allow": [\n${rules.map((r) => JSON.stringify(r)).join(',\n')}\n]}}\n`;
  };
  // Path keys are "<path>\0" (and "<path>/\0" for what is below it).
  const keys = () => env.kernel.active!.pathEntries.map((e) => e.data.toString().replace(/\0$/, ''));
  const apply = (text: string) => call<{ generation: number; rules: number }>(env.socket, 'PolicyService', 'Apply', { sources: [src('p.json', text)] });
  t.match(await apply(json('x')), { rules: 61 });
  t.ok(keys().includes(`${dir}/one/x`) && keys().includes('/srv/fill/f59'));
  t.match(await apply(json('y')), { rules: 61 });
  t.ok(keys().includes(`${dir}/one/y`) && !keys().includes(`${dir}/one/x`) && keys().includes('/srv/fill/f59'), 'an edit of one rule: the kernel runs the edit and the rest');
  // The same text again after the symlink moved: the rule follows it.
  fs.unlinkSync(path.join(dir, 'link'));
  fs.symlinkSync('two', path.join(dir, 'link'));
  await apply(json('y'));
  t.ok(keys().includes(`${dir}/two/y`) && !keys().includes(`${dir}/one/y`), 'the same text after a symlink moved: the new target');
  // A broken edit is refused, located (line 3: the first rule), and changes nothing.
  const generation = env.kernel.activeGeneration;
  const e = await rpcError(apply(json('y').replace(`${dir}/link/y`, 'relative/y')));
  t.equal(e.code, grpc.status.INVALID_ARGUMENT);
  t.match(e.diagnostics[0], { file: 'p.json', line: 3, message: /relative/ });
  t.equal(env.kernel.activeGeneration, generation);
  // The digest each apply audits is that of the policy parsed from nothing.
  const fresh = loadPolicySources([src2('p.json', json('y'))]).policies;
  t.equal(controlLines(env, 'apply').at(-1)!.digest, policyDigest(fresh));
});

t.test('apply: an invalid set is refused with located errors and changes nothing', async (t) => {
  const env = await startHelmd(t);
  const before = await call<Status>(env.socket, 'SystemService', 'Status', {});
  const journal = [...env.kernel.journal];
  const e = await rpcError(call(env.socket, 'PolicyService', 'Apply', { sources: [src('ok.yaml', B), src('broken.yaml', BROKEN)] }));
  t.equal(e.code, grpc.status.INVALID_ARGUMENT);
  t.match(e.message, /the policy was rejected \(2 errors\); generation 1 stays in force/);
  t.match(e.message, /broken\.yaml:6:\d+: .*relative/, 'the message lists file:line:col');
  t.match(e.message, /broken\.yaml:7:3: .*blok/);
  t.same(
    e.diagnostics.map((d) => [d.file, d.line, d.severity]),
    [
      ['broken.yaml', 6, 'error'],
      ['broken.yaml', 7, 'error'],
    ],
    'the details carry the located diagnostics as data',
  );
  t.same(env.kernel.journal, journal, 'the kernel was not touched');
  const after = await call<Status>(env.socket, 'SystemService', 'Status', {});
  t.equal(after.generation, before.generation);
  const got = await call<{ sources: { file: string }[] }>(env.socket, 'PolicyService', 'Get', {});
  t.same(got.sources.map((s) => s.file), [env.policyFile], 'the running sources are the same');
  const reject = controlLines(env, 'reject')[0];
  t.match(reject, { source: 'api', generation: 1, files: ['ok.yaml', 'broken.yaml'], errors_total: 2 });
  t.match((reject.errors as string[])[0], /^broken\.yaml:6:/);
  t.match(after.last_apply, { ok: false, source: 'api' });

  const dup = await rpcError(call(env.socket, 'PolicyService', 'Apply', { sources: [src('x.yaml', A), src('y.yaml', A)] }));
  t.equal(dup.code, grpc.status.INVALID_ARGUMENT);
  t.match(dup.diagnostics[0], { file: 'y.yaml', message: /duplicate policy name "base"/ }, 'names are unique across sources');
  t.equal(env.kernel.activeGeneration, 1);
});

t.test('apply: a kernel failure is INTERNAL and changes nothing in helmd either', async (t) => {
  const env = await startHelmd(t);
  await call(env.socket, 'AgentService', 'SetMode', { policy: 'base', mode: 'MODE_DRY_RUN' });
  const listBefore = await call<object>(env.socket, 'PolicyService', 'List', {});
  const getBefore = await call<object>(env.socket, 'PolicyService', 'Get', {});
  env.kernel.failNextApply = new Error('cannot create map helm_paths: ENOMEM');
  const e = await rpcError(call(env.socket, 'PolicyService', 'Apply', { sources: [src('other.yaml', policy('other', ['worker'], '/srv/o/'))] }));
  t.equal(e.code, grpc.status.INTERNAL);
  t.match(e.message, /ENOMEM/);
  t.same(await call(env.socket, 'PolicyService', 'List', {}), listBefore, 'policies and their modes are as before');
  t.same(await call(env.socket, 'PolicyService', 'Get', {}), getBefore, 'sources are as before');
  t.equal(env.kernel.activeGeneration, 2);
  t.match(controlLines(env, 'reject')[0], { error: /ENOMEM/, generation: 2 });
});

t.test('expected_generation: ABORTED on a mismatch; of concurrent applies exactly one wins', async (t) => {
  const env = await startHelmd(t);
  const stale = await rpcError(call(env.socket, 'PolicyService', 'Apply', { sources: [src('b.yaml', B)], expected_generation: 7 }));
  t.equal(stale.code, grpc.status.ABORTED);
  t.match(stale.message, /expected generation 7, but generation 1 is loaded/);
  t.equal(env.kernel.activeGeneration, 1, 'nothing applied');
  t.match(controlLines(env, 'reject')[0], { source: 'api', error: /expected generation 7/ });

  // expected_generation 0 is a real value (not "absent"): nothing was ever generation 0 after start.
  t.equal((await rpcError(call(env.socket, 'PolicyService', 'Apply', { sources: [src('b.yaml', B)], expected_generation: 0 }))).code, grpc.status.ABORTED);

  env.kernel.retireDelayMs = 20;
  const racers = 12;
  const results = await Promise.allSettled(
    Array.from({ length: racers }, (_, i) => call<{ generation: number }>(env.socket, 'PolicyService', 'Apply', { sources: [src(`r${i}.yaml`, i % 2 ? A : B)], expected_generation: 1 })),
  );
  const won = results.filter((r) => r.status === 'fulfilled');
  const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  t.equal(won.length, 1, 'exactly one apply wins');
  t.equal((won[0] as PromiseFulfilledResult<{ generation: number }>).value.generation, 2);
  t.ok(lost.every((r) => r.reason instanceof ControlError && r.reason.code === grpc.status.ABORTED), 'every other one is ABORTED');
  t.equal(env.kernel.activeGeneration, 2);

  // Without expectations, concurrent applies are serialised: each gets its own generation.
  const all = await Promise.all(Array.from({ length: 8 }, (_, i) => call<{ generation: number; previous_generation: number }>(env.socket, 'PolicyService', 'Apply', { sources: [src(`s${i}.yaml`, i % 2 ? A : B)] })));
  const gens = all.map((r) => r.generation).sort((a, b) => a - b);
  t.same(gens, [3, 4, 5, 6, 7, 8, 9, 10], 'one generation each, none lost');
  t.ok(all.every((r) => r.previous_generation === r.generation - 1), 'each saw the one before it');
  await env.helmd['queue'].idle();
  t.same(env.kernel.liveGenerations, [10], 'every superseded generation was freed');
});

t.test('malformed and oversize requests', async (t) => {
  const env = await startHelmd(t, { maxRequestBytes: 64 * 1024 });
  const raw = new grpc.Client(socketAddress(env.socket), grpc.credentials.createInsecure());
  t.teardown(() => raw.close());
  const rawCall = (method: string, bytes: Buffer) =>
    new Promise<grpc.ServiceError | null>((resolve) =>
      raw.makeUnaryRequest(method, (b: Buffer) => b, (b: Buffer) => b, bytes, (err) => resolve(err)),
    );
  // Field 1 (sources) says 127 bytes follow; two do.
  const err = await rawCall('/helm.v1.PolicyService/Apply', Buffer.from([0x0a, 0x7f, 0x0a, 0x01]));
  t.equal(err?.code, grpc.status.INVALID_ARGUMENT, 'an undecodable message is INVALID_ARGUMENT');
  t.match(err?.details, /malformed request/);
  const err2 = await rawCall('/helm.v1.AgentService/SetMode', Buffer.from([0xff, 0xff, 0xff]));
  t.equal(err2?.code, grpc.status.INVALID_ARGUMENT);

  const cases: [string, object, RegExp][] = [
    ['Apply', { sources: [] }, /no policy sources/],
    ['Apply', { sources: [{ file: '', content: A }] }, /no file name/],
    ['Apply', { sources: [{ file: 'a\nb.yaml', content: A }] }, /printable/],
    ['Validate', { sources: [] }, /no policy sources/],
    ['Explain', { verb: 'read', target: '/srv/a/x' }, /give a role or an agent/],
    ['Explain', { role: 'worker', verb: 'raed', target: '/srv/a/x' }, /not a verb/],
    ['Explain', { role: 'worker', verb: 'read', target: 'relative' }, /read target/],
  ];
  for (const [method, req, msg] of cases) {
    const e = await rpcError(call(env.socket, 'PolicyService', method, req));
    t.equal(e.code, grpc.status.INVALID_ARGUMENT, `${method} ${JSON.stringify(req).slice(0, 60)}`);
    t.match(e.message, msg);
  }
  const modeCases: [object, RegExp][] = [
    [{ mode: 'MODE_DRY_RUN' }, /say what to switch/],
    [{ helmd: false, mode: 'MODE_DRY_RUN' }, /say what to switch/],
    [{ helmd: true, mode: 'MODE_UNSPECIFIED' }, /mode must be/],
    [{ helmd: true, mode: 7 }, /mode must be/],
  ];
  for (const [req, msg] of modeCases) {
    const e = await rpcError(call(env.socket, 'AgentService', 'SetMode', req));
    t.equal(e.code, grpc.status.INVALID_ARGUMENT, `SetMode ${JSON.stringify(req)}`);
    t.match(e.message, msg);
  }
  const attachCases: [object, RegExp][] = [
    [{ cgroup_path: '/sys/fs/cgroup/x', role: 'bad role' }, /role must match/],
    [{ cgroup_path: '/sys/fs/cgroup/x', role: 'worker', name: 'a/b' }, /agent name must match/],
    [{ cgroup_path: '/sys/fs/cgroup/x', role: 'worker', labels: { 'bad key': 'v' } }, /label key/],
    [{ cgroup_path: '/sys/fs/cgroup/x', role: 'worker', labels: JSON.parse('{"__proto__": "v"}') }, /label key.*__proto__/],
    [{ cgroup_path: 'relative', role: 'worker' }, /not below the cgroup v2 mount/],
  ];
  for (const [req, msg] of attachCases) {
    const e = await rpcError(call(env.socket, 'AgentService', 'Attach', req));
    t.equal(e.code, grpc.status.INVALID_ARGUMENT, `Attach ${JSON.stringify(req)}`);
    t.match(e.message, msg);
  }
  const tail = await rpcError(tailAudit(env.socket, { last: 1_000_000, follow: false }, () => undefined));
  t.equal(tail.code, grpc.status.INVALID_ARGUMENT);

  const big = await rpcError(call(env.socket, 'PolicyService', 'Apply', { sources: [src('big.yaml', A + '#'.repeat(100 * 1024))] }));
  t.equal(big.code, grpc.status.RESOURCE_EXHAUSTED, 'a request over --max-request-bytes is RESOURCE_EXHAUSTED');
  t.equal(env.kernel.activeGeneration, 1, 'nothing was applied');
  t.same(env.kernel.journal, ['apply 1']);
  const ok = await call<{ generation: number }>(env.socket, 'PolicyService', 'Apply', { sources: [src('b.yaml', B)] });
  t.equal(ok.generation, 2, 'helmd still serves after all that');
});

t.test('agents: attach, list with mode and counters, unknown agents are NOT_FOUND', async (t) => {
  const env = await startHelmd(t);
  const cg = '/sys/fs/cgroup/helm/w1';
  const a = await call<{ id: string; name: string; mode: string; generation: number }>(env.socket, 'AgentService', 'Attach', { cgroup_path: cg, role: 'worker', name: 'w1', labels: { team: 'a' } });
  t.match(a, { name: 'w1', mode: 'MODE_ENFORCE', generation: 1 });
  const roleId = env.kernel.active!.roles.get('worker')!;
  const governed = env.kernel.governed.get(1000n);
  t.match(governed, { agentId: BigInt(a.id), roleId, dryRun: false, dnsPort: Number }, 'the kernel governs the cgroup, its DNS sent to its forwarder');
  const listed = await call<{ agents: { dns_port: number }[] }>(env.socket, 'AgentService', 'List', {});
  t.equal(listed.agents[0].dns_port, governed?.dnsPort);
  t.equal((await rpcError(call(env.socket, 'AgentService', 'Attach', { cgroup_path: cg, role: 'worker' }))).code, grpc.status.ALREADY_EXISTS);

  // A role no policy names gets entries (a new generation) before the cgroup is governed.
  await call(env.socket, 'AgentService', 'Attach', { cgroup_path: '/sys/fs/cgroup/helm/x', role: 'stranger', name: 'x' });
  t.equal(env.kernel.activeGeneration, 2);
  t.ok(env.kernel.active!.roles.has('stranger'));

  env.kernel.events.emit(
    { agentId: BigInt(a.id), roleId, generation: 2, path: '/etc/shadow' },
    { agentId: BigInt(a.id), roleId, generation: 2, path: '/etc/passwd', decision: C.HELM_DECISION_WOULD_DENY, mode: C.HELM_MODE_DRY_RUN },
  );
  await new Promise((r) => setImmediate(r));
  const list = await call<{ agents: { name: string; role: string; cgroup_path: string; mode: string; counters: { denied: string; would_deny: string; last_decision_at: string } }[] }>(env.socket, 'AgentService', 'List', {});
  t.match(list.agents[0], { name: 'w1', role: 'worker', cgroup_path: cg, mode: 'MODE_ENFORCE', counters: { denied: '1', would_deny: '1', last_decision_at: /Z$/ } });

  const notFound: [string, string, object][] = [
    ['AgentService', 'SetMode', { agent: 'nobody', mode: 'MODE_DRY_RUN' }],
    ['AgentService', 'SetMode', { agent: '999', mode: 'MODE_DRY_RUN' }],
    ['AgentService', 'SetMode', { policy: 'nope', mode: 'MODE_DRY_RUN' }],
    ['AgentService', 'Detach', { cgroup_path: '/sys/fs/cgroup/helm/never' }],
    ['PolicyService', 'Explain', { agent: 'nobody', verb: 'read', target: '/x' }],
  ];
  for (const [svc, method, req] of notFound) {
    const e = await rpcError(call(env.socket, svc as 'AgentService', method, req));
    t.equal(e.code, grpc.status.NOT_FOUND, `${method} ${JSON.stringify(req)}`);
  }
  env.processes.add(cg);
  t.equal((await rpcError(call(env.socket, 'AgentService', 'Detach', { cgroup_path: cg }))).code, grpc.status.FAILED_PRECONDITION, 'a cgroup with processes is not released');
  t.ok(env.kernel.governed.has(1000n));
  await call(env.socket, 'AgentService', 'Detach', { cgroup_path: cg, force: true });
  t.notOk(env.kernel.governed.has(1000n));
  t.match(controlLines(env, 'attach')[0], { subject: { agent: 'w1', role: 'worker', cgroup: cg } });
  t.match(controlLines(env, 'detach')[0], { subject: { agent: 'w1' }, forced: true });
  t.notOk(
    auditLines(env).some((l) => l.type === 'control' && 'agent' in l),
    'control lines name agents under subject, never as a decision line would',
  );
});

/** A policy with contextual rules on label pairs (`team: pay` first) and connect rules on host names. */
const labelled = (pairs: [string, string][], hosts: string[]) =>
  policy(
    'base',
    ['worker'],
    '/srv/a/',
    `  contextual:\n${pairs.map(([k, v], i) => `    - { id: c${i}, read: [/srv/p${i}/], when: { label: { ${k}: ${v} } } }`).join('\n')}\n` +
      `    - { id: net, connect: [${hosts.map((h) => `"${h}:443"`).join(', ')}], when: { role: worker } }\n`,
  );

t.test('agents: label bits in the kernel — at attach, through mode switches, before each new generation, restored when a switch fails', async (t) => {
  const env = await startHelmd(t, { policyText: labelled([['team', 'pay']], ['api.example.com']) });
  // The order of kernel writes: an agent's new bits must be in place before the generation that needs them.
  const govern = env.kernel.govern.bind(env.kernel);
  env.kernel.govern = (cg, agent) => {
    env.kernel.journal.push(`govern ${cg} ${agent.labelBits}`);
    govern(cg, agent);
  };
  const bit = (k: string, v: string) => 1n << BigInt(env.kernel.active!.labelIds.get(labelPairKey(k, v))! - 1);
  const pay = await call<{ id: string }>(env.socket, 'AgentService', 'Attach', { cgroup_path: '/sys/fs/cgroup/helm/pay', role: 'worker', name: 'pay', labels: { team: 'pay', env: 'prod' } });
  await call(env.socket, 'AgentService', 'Attach', { cgroup_path: '/sys/fs/cgroup/helm/ops', role: 'worker', name: 'ops', labels: { team: 'ops' } });
  const payCg = 1000n;
  const opsCg = 1001n;
  t.equal(env.kernel.governed.get(payCg)?.labelBits, bit('team', 'pay'), 'attach: the pairs the policies name, as bits (env: prod is named by none)');
  t.equal(env.kernel.governed.get(opsCg)?.labelBits, 0n, 'an agent without those pairs has no bits');
  const payId = env.kernel.active!.labelIds.get(labelPairKey('team', 'pay'));
  const hostId = env.kernel.active!.nameIds.get('api.example.com');

  await call(env.socket, 'AgentService', 'SetMode', { agent: pay.id, mode: 'MODE_DRY_RUN' });
  t.match(env.kernel.governed.get(payCg), { dryRun: true, labelBits: bit('team', 'pay') }, 'a mode switch keeps the bits');

  // A new generation naming env: prod (and a host name that sorts first): ids already given are kept.
  env.kernel.journal.length = 0;
  await call(env.socket, 'PolicyService', 'Apply', { sources: [src('b.yaml', labelled([['env', 'prod'], ['team', 'pay']], ['aaa.example.com', 'api.example.com']))] });
  t.equal(env.kernel.active!.labelIds.get(labelPairKey('team', 'pay')), payId, 'team: pay keeps its id');
  t.equal(env.kernel.active!.nameIds.get('api.example.com'), hostId, 'a host-name pattern keeps its id (learned addresses name it)');
  const both = bit('team', 'pay') | bit('env', 'prod');
  t.equal(env.kernel.governed.get(payCg)?.labelBits, both, 'the agent gets the bit of the newly named pair');
  t.same(env.kernel.journal.slice(0, 2), [`govern ${payCg} ${both}`, 'apply 2'], 'written before the generation that needs it is switched in');
  t.equal(env.kernel.governed.get(opsCg)?.labelBits, 0n);

  // A switch that fails puts the bits back.
  env.kernel.failNextApply = new Error('cannot create map helm_paths: ENOMEM');
  const e = await rpcError(call(env.socket, 'PolicyService', 'Apply', { sources: [src('c.yaml', labelled([['team', 'ops']], ['api.example.com']))] }));
  t.equal(e.code, grpc.status.INTERNAL);
  t.equal(env.kernel.governed.get(opsCg)?.labelBits, 0n, 'a rejected generation leaves no bits behind');
  t.equal(env.kernel.governed.get(payCg)?.labelBits, both);
  t.match(env.kernel.journal, [String, 'apply 2', /^retire/, /^govern 1001 \d+$/, 'fail', 'govern 1001 0'], 'set for the generation, then restored');

  // An agent attached with a role no generation knows yet: its bits under the generation it gets.
  await call(env.socket, 'AgentService', 'Attach', { cgroup_path: '/sys/fs/cgroup/helm/new', role: 'stranger', name: 'new', labels: { env: 'prod' } });
  t.equal(env.kernel.governed.get(1002n)?.labelBits, bit('env', 'prod'));
});

t.test('modes: an agent, a policy, and all of helmd; each audited', async (t) => {
  const env = await startHelmd(t);
  const a = await call<{ id: string }>(env.socket, 'AgentService', 'Attach', { cgroup_path: '/sys/fs/cgroup/helm/m', role: 'worker', name: 'm' });
  const r = await call<{ target: string; previous: string; mode: string; generation: number }>(env.socket, 'AgentService', 'SetMode', { agent: a.id, mode: 'MODE_DRY_RUN' });
  t.match(r, { target: 'agent m', previous: 'MODE_ENFORCE', mode: 'MODE_DRY_RUN', generation: 1 });
  t.equal(env.kernel.governed.get(1000n)?.dryRun, true, 'the kernel has the agent in dry-run');
  t.ok((env.kernel.governed.get(1000n)?.dnsPort ?? 0) > 0, 'and still sends its DNS to its forwarder');
  await call(env.socket, 'AgentService', 'SetMode', { agent: 'm', mode: 'MODE_ENFORCE' });
  t.equal(env.kernel.governed.get(1000n)?.dryRun, false, 'by name too');

  const p = await call<{ generation: number; previous: string }>(env.socket, 'AgentService', 'SetMode', { policy: 'base', mode: 'MODE_DRY_RUN' });
  t.match(p, { generation: 2, previous: 'MODE_ENFORCE' }, 'a policy switch is a new generation');
  t.same(env.kernel.active!.policies, [{ name: 'base', mode: 'dry-run' }]);
  const list = await call<{ policies: { name: string; mode: string; source_mode: string }[] }>(env.socket, 'PolicyService', 'List', {});
  t.match(list.policies[0], { name: 'base', mode: 'MODE_DRY_RUN', source_mode: 'MODE_ENFORCE' });
  // The switch outlives an apply that keeps the policy, and is dropped with it.
  await call(env.socket, 'PolicyService', 'Apply', { sources: [src('b.yaml', B)] });
  t.same(env.kernel.active!.policies, [{ name: 'base', mode: 'dry-run' }], 'kept across an apply of the same policy');
  await call(env.socket, 'PolicyService', 'Apply', { sources: [src('o.yaml', policy('other', ['worker'], '/srv/o/'))] });
  await call(env.socket, 'PolicyService', 'Apply', { sources: [src('b.yaml', B)] });
  t.same(env.kernel.active!.policies, [{ name: 'base', mode: 'enforce' }], 'forgotten once the policy was gone');

  const h = await call<{ target: string; generation: number }>(env.socket, 'AgentService', 'SetMode', { helmd: true, mode: 'MODE_DRY_RUN' });
  t.equal(h.target, 'helmd');
  t.equal(env.kernel.globalDryRun, true);
  t.equal((await call<Status>(env.socket, 'SystemService', 'Status', {})).dry_run, true);
  const modes = controlLines(env, 'mode');
  t.match(modes, [
    { target: 'agent', subject: { agent: 'm' }, mode: 'dry-run', previous_mode: 'enforce', by: 'unix' },
    { target: 'agent', mode: 'enforce' },
    { target: 'policy', subject: { policy: 'base' }, mode: 'dry-run', generation: 2, previous_generation: 1 },
    { target: 'helmd', mode: 'dry-run', previous_mode: 'enforce' },
  ]);

  const ex = await call<{ decision: string; notes: string[] }>(env.socket, 'PolicyService', 'Explain', { agent: 'm', verb: 'read', target: '/etc/shadow' });
  t.equal(ex.decision, 'would_deny', 'explain reports what the kernel does: helmd-wide dry-run');
  t.match(ex.notes.join('\n'), /helmd runs in dry-run/);
});

t.test('validate and explain do not change anything', async (t) => {
  const env = await startHelmd(t);
  const v = await call<{ valid: boolean; diagnostics: { text: string; severity: string }[] }>(env.socket, 'PolicyService', 'Validate', { sources: [src('broken.yaml', BROKEN)] });
  t.equal(v.valid, false);
  t.match(v.diagnostics.map((d) => d.text), [/^broken\.yaml:6:/, /^broken\.yaml:7:3:/]);
  const ok = await call<{ valid: boolean; policies: string[]; rules: number }>(env.socket, 'PolicyService', 'Validate', { sources: [src('b.yaml', B)] });
  t.match(ok, { valid: true, policies: ['base'], rules: 1 });
  const ex = await call<{ decision: string; rule: string; policy: string; generation: number; text: string }>(env.socket, 'PolicyService', 'Explain', { role: 'worker', verb: 'read', target: '/srv/a/file' });
  t.match(ex, { decision: 'allow', policy: 'base', rule: 'r1', generation: 1 });
  t.match(ex.text, /decision:\s+allow/);
  const exB = await call<{ decision: string; generation: number }>(env.socket, 'PolicyService', 'Explain', { role: 'worker', verb: 'read', target: '/srv/a/file', sources: [src('b.yaml', B)] });
  t.match(exB, { decision: 'deny', generation: 0 }, 'against given sources');
  t.same(env.kernel.journal, ['apply 1']);
  t.equal(controlLines(env).length, 1, 'only the start-up is audited');
});

t.test('audit stream: recent records, follow, filters', async (t) => {
  const env = await startHelmd(t);
  const a = await call<{ id: string }>(env.socket, 'AgentService', 'Attach', { cgroup_path: '/sys/fs/cgroup/helm/s', role: 'worker', name: 's' });
  const roleId = env.kernel.active!.roles.get('worker')!;
  const ev = (p: string, op: number = C.HELM_OP_READ, decision: number = C.HELM_DECISION_DENY) => ({ agentId: BigInt(a.id), roleId, generation: 1, path: p, op, decision });
  env.kernel.events.emit(ev('/one'), ev('/two', C.HELM_OP_EXEC), ev('/three'));
  await new Promise((r) => setImmediate(r));

  const got: StreamedRecord[] = [];
  await tailAudit(env.socket, { last: 2, follow: false, type: ['decision'] }, (r) => got.push(r));
  t.same(got.map((r) => r.path), ['/two', '/three'], 'the last two decisions');
  const fileLines = fs.readFileSync(env.audit, 'utf8').split('\n');
  t.ok(fileLines.includes(got[1].line), 'each record carries its line exactly as in the file (chain included)');
  t.match(JSON.parse(got[1].line), { chain: /^[0-9a-f]{64}$/ });

  const followed: StreamedRecord[] = [];
  const stop = new AbortController();
  const done = tailAudit(env.socket, { last: 0, follow: true, agent: [a.id], op: ['read'] }, (r) => {
    followed.push(r);
    if (followed.length === 2) stop.abort();
  }, stop.signal);
  await new Promise((r) => setTimeout(r, 200));
  env.kernel.events.emit(ev('/x', C.HELM_OP_EXEC), ev('/y'), ev('/z', C.HELM_OP_WRITE), ev('/w'));
  await done;
  t.same(followed.map((r) => `${r.agent} ${r.op} ${r.path}`), ['s read /y', 's read /w'], 'follows new records, filtered by agent id and op');

  const other: StreamedRecord[] = [];
  await tailAudit(env.socket, { last: 100, follow: false, role: ['nobody'] }, (r) => other.push(r));
  t.same(other, [], 'a filter that matches nothing sends nothing');
  const controls: StreamedRecord[] = [];
  await tailAudit(env.socket, { last: 100, follow: false, type: ['control'] }, (r) => controls.push(r));
  t.same(controls.map((r) => JSON.parse(r.line).action), ['apply', 'attach']);
});

t.test('policy sources on disk: a change is applied, a broken one rejected and audited, SIGHUP reloads', async (t) => {
  const env = await startHelmd(t, { watch: true, watchDebounceMs: 50 });
  const waitFor = async (what: string, cond: () => boolean) => {
    const deadline = Date.now() + 10_000;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  fs.writeFileSync(env.policyFile, B);
  // The kernel switches first; the trail is written a moment later.
  await waitFor('the edit to be applied and audited', () => env.kernel.activeGeneration === 2 && controlLines(env, 'apply').length === 2);
  t.ok(env.kernel.active!.pathEntries.some((e) => e.data.toString() === '/srv/b/'), 'the edited file is in force');
  t.match(controlLines(env, 'apply')[1], { source: 'files', generation: 2 });

  // An editor's save: write a new file, rename it over the old one.
  const tmpFile = path.join(path.dirname(env.policyFile), '.base.yaml.swp');
  fs.writeFileSync(tmpFile, A);
  fs.renameSync(tmpFile, env.policyFile);
  await waitFor('the renamed file to be applied', () => env.kernel.activeGeneration === 3);

  fs.writeFileSync(env.policyFile, BROKEN);
  await waitFor('the broken file to be rejected', () => controlLines(env, 'reject').length === 1);
  t.equal(env.kernel.activeGeneration, 3, 'the running policy stays');
  t.match(controlLines(env, 'reject')[0], { source: 'files', errors: [/base\.yaml:6:/, /base\.yaml:7:3:/] });
  t.match((await call<Status>(env.socket, 'SystemService', 'Status', {})).last_apply, { ok: false, source: 'files', error: /base\.yaml:6:/ });

  // A new file in the directory is protected as soon as it is seen.
  const added = path.join(path.dirname(env.policyFile), 'more.yaml');
  fs.writeFileSync(added, policy('more', ['worker'], '/srv/m/'));
  fs.writeFileSync(env.policyFile, A);
  await waitFor('both files to be applied', () => env.kernel.activeGeneration === 4);
  t.same(env.kernel.active!.policies.map((p) => p.name), ['base', 'more']);
  t.ok(env.kernel.protectedPaths.includes(added), 'the new policy file is one of helm\'s protected files');

  // Touching a file without changing it is not a new policy.
  fs.utimesSync(env.policyFile, new Date(), new Date());
  await new Promise((r) => setTimeout(r, 300));
  t.equal(env.kernel.activeGeneration, 4);
  // SIGHUP always recompiles (the filesystem behind the rules may have changed).
  await env.helmd.reload('sighup');
  t.equal(env.kernel.activeGeneration, 5);
  t.match(controlLines(env, 'apply').at(-1), { source: 'sighup', generation: 5 });
});

t.test('helmctl speaks gRPC to helmd', async (t) => {
  const env = await startHelmd(t);
  const sock = ['--socket', env.socket];
  const ok = path.join(env.dir, 'b.yaml');
  fs.writeFileSync(ok, B);
  const broken = path.join(env.dir, 'broken.yaml');
  fs.writeFileSync(broken, BROKEN);

  const applied = await helmctl(['policy', 'apply', ...sock, ok]);
  t.equal(applied.status, 0, applied.stderr);
  t.match(applied.stdout, /^applied: generation 2 \(was 1\): 1 policy \(base\), 1 rule, \d+ kernel path entries\n$/);
  const rejected = await helmctl(['policy', 'apply', ...sock, ok, broken]);
  t.equal(rejected.status, 1);
  t.match(rejected.stderr, new RegExp(`^${broken}:6:\\d+: .*\\n${broken}:7:3: .*\\nhelmctl: the policy was rejected \\(2 errors\\); generation 2 stays in force\\n$`), 'located errors, one a line, then the summary');
  const stale = await helmctl(['policy', 'apply', ...sock, '--expect-generation', '1', ok]);
  t.equal(stale.status, 1);
  t.match(stale.stderr, /expected generation 1, but generation 2 is loaded/);
  const fresh = await helmctl(['policy', 'apply', ...sock, '--expect-generation', '2', ok]);
  t.equal(fresh.status, 0, fresh.stderr);

  const validate = await helmctl(['policy', 'validate', ...sock, broken]);
  t.equal(validate.status, 1);
  t.match(validate.stderr, /broken\.yaml:7:3: .*blok[\s\S]*helmd would reject this/);
  const get = await helmctl(['policy', 'get', ...sock]);
  t.match(get.stdout, new RegExp(`# generation 3, from helmctl policy apply[^\\n]*\\n# --- ${ok}\\n${B.replace(/[[\]{}()*+?.\\^$|]/g, '\\$&')}`));
  const list = await helmctl(['policy', 'list', ...sock]);
  t.match(list.stdout, /base\s+worker\s+enforce\s+1\s/);

  const att = await call<{ id: string }>(env.socket, 'AgentService', 'Attach', { cgroup_path: '/sys/fs/cgroup/helm/c', role: 'worker', name: 'cli' });
  const mode = await helmctl(['mode', ...sock, '--agent', 'cli', 'dry-run']);
  t.equal(mode.stdout, 'agent cli: enforce → dry-run (generation 3)\n');
  t.equal(env.kernel.governed.get(1000n)?.dryRun, true);
  const agents = await helmctl(['agents', ...sock]);
  t.match(agents.stdout, new RegExp(`^ID\\s+NAME\\s+ROLE\\s+MODE\\s+DENIED\\s+WOULD_DENY\\s+CGROUP\\n${att.id}\\s+cli\\s+worker\\s+dry-run\\s+0\\s+0\\s+/sys/fs/cgroup/helm/c\\n$`));
  t.equal((await helmctl(['mode', ...sock, 'dry-run'])).status, 1, 'mode needs a target');
  const unknown = await helmctl(['mode', ...sock, '--agent', 'ghost', 'enforce']);
  t.match(unknown, { status: 1, stderr: /no agent "ghost"/ });
  const hw = await helmctl(['mode', ...sock, '--helmd', 'dry-run']);
  t.equal(hw.stdout, 'helmd: enforce → dry-run (generation 3)\n');

  const explained = await helmctl(['policy', 'explain', ...sock, '--agent', 'cli', 'read', '/srv/b/x']);
  t.match(explained.stdout, /decision:\s+allow[\s\S]*\(helmd, generation 3\)/);

  const status = JSON.parse((await helmctl(['status', ...sock])).stdout);
  t.match(status, { generation: 3, dry_run: true, policy_origin: 'api', agents: 1 });
  const tail = await helmctl(['audit', 'tail', ...sock, '-n', '3', '--type', 'control', '--json']);
  const tailed = tail.stdout.trim().split('\n').map((l) => JSON.parse(l));
  t.match(tailed, [{ action: 'attach' }, { action: 'mode', target: 'agent' }, { action: 'mode', target: 'helmd' }]);
  t.match((await helmctl(['audit', 'tail', ...sock, '-n', '1', '--type', 'control'])).stdout, /^\S+Z control\s+action=mode by=unix target=helmd mode=dry-run previous_mode=enforce generation=3\n$/);
});

t.test('helmctl says clearly when helmd cannot be reached', async (t) => {
  const dir = fs.mkdtempSync(path.join(tmp, 'unreach-'));
  const none = await helmctl(['status', '--socket', path.join(dir, 'none.sock')]);
  t.match(none, { status: 1, stderr: `helmctl: cannot reach helmd: no socket at ${path.join(dir, 'none.sock')}; is helmd running? (start it with: helmd --policy POLICY..., or give --socket)\n` });
  // A socket file nobody listens on (a helmd that died without cleaning up): node unlinks the
  // socket when its server closes, so keep a hard link to it.
  const stale = path.join(dir, 'stale.sock');
  await new Promise<void>((resolve) => {
    const srv = net.createServer().listen(path.join(dir, 'live.sock'), () => {
      fs.linkSync(path.join(dir, 'live.sock'), stale);
      srv.close(() => resolve());
    });
  });
  const refused = await helmctl(['status', '--socket', stale]);
  t.match(refused, { status: 1, stderr: /nothing is listening/ });
  const env = await startHelmd(t);
  for (const d of [tmp, env.dir]) fs.chmodSync(d, 0o755);
  const denied = await helmctl(['status', '--socket', env.socket], { uid: 65534, gid: 65534 });
  t.match(denied, { status: 1, stderr: /permission denied.*root or as a member of helmd's --socket-group/ }, 'an unprivileged user is refused, and told why');
});

t.test('--socket-group: root and that group may connect, nobody else', async (t) => {
  const env = await startHelmd(t, { socketGroup: '65534' });
  // Only the socket's own directory stands in the way.
  for (const d of [tmp, env.dir]) fs.chmodSync(d, 0o755);
  const st = fs.statSync(env.socket);
  t.equal(st.gid, 65534);
  t.equal(st.mode & 0o777, 0o660);
  const dirSt = fs.statSync(path.dirname(env.socket));
  t.equal(dirSt.gid, 65534);
  t.equal(dirSt.mode & 0o777, 0o750);
  const member = await helmctl(['status', '--socket', env.socket], { uid: 65534, gid: 65534 });
  t.equal(member.status, 0, `a member of the group gets through: ${member.stderr}`);
  const other = await helmctl(['status', '--socket', env.socket], { uid: 65533, gid: 65533 });
  t.equal(other.status, 1, 'anyone else does not');
});

t.test('TCP listener: mutual TLS only; a client without a certificate, or with one from another CA, is refused', async (t) => {
  const dir = fs.mkdtempSync(path.join(tmp, 'tls-'));
  const openssl = (...args: string[]) =>
    new Promise<void>((resolve, reject) => execFile('openssl', args, { cwd: dir }, (err, _o, stderr) => (err ? reject(new Error(`openssl ${args.join(' ')}: ${stderr}`)) : resolve())));
  const ca = async (name: string) => {
    await openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '1', '-subj', `/CN=${name}`);
  };
  const leaf = async (name: string, caName: string, ext: string) => {
    await openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    fs.writeFileSync(path.join(dir, `${name}.ext`), ext);
    await openssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${caName}.pem`, '-CAkey', `${caName}.key`, '-CAcreateserial', '-out', `${name}.pem`, '-days', '1', '-extfile', `${name}.ext`);
  };
  await ca('ca1');
  await ca('ca2');
  await leaf('server', 'ca1', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  await leaf('operator', 'ca1', 'extendedKeyUsage=clientAuth\n');
  await leaf('intruder', 'ca2', 'extendedKeyUsage=clientAuth\n');
  const f = (n: string) => path.join(dir, n);

  const env = await startHelmd(t, { tls: { listen: '127.0.0.1:0', cert: f('server.pem'), key: f('server.key'), ca: f('ca1.pem') } });
  const port = env.helmd['server']!.tlsPort;
  t.ok(port && port > 0, `listening on 127.0.0.1:${port}`);
  const ep = (client: string): Endpoint => ({ socket: '', tls: { server: `127.0.0.1:${port}`, cert: f(`${client}.pem`), key: f(`${client}.key`), ca: f('ca1.pem') } });

  const s = await call<Status>(ep('operator'), 'SystemService', 'Status', {}, 10_000);
  t.equal(s.generation, 1, 'a client with a certificate from the configured CA is served');
  await call(ep('operator'), 'AgentService', 'SetMode', { helmd: true, mode: 'MODE_DRY_RUN' }, 10_000);
  t.match(controlLines(env, 'mode')[0], { by: 'tls:operator' }, 'the audit trail names the certificate');

  const intruder = await rpcError(call(ep('intruder'), 'SystemService', 'Status', {}, 10_000));
  t.equal(intruder.code, grpc.status.UNAVAILABLE, 'a certificate from another CA is refused at the handshake');
  const noCert = new (helmProto().SystemService)(`127.0.0.1:${port}`, grpc.credentials.createSsl(fs.readFileSync(f('ca1.pem'))));
  const bare = await new Promise<grpc.ServiceError | null>((resolve) => noCert.Status({}, { deadline: Date.now() + 10_000 }, (err: grpc.ServiceError | null) => resolve(err)));
  noCert.close();
  t.equal(bare?.code, grpc.status.UNAVAILABLE, 'a client without a certificate is refused');
  const plain = new (helmProto().SystemService)(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const plainErr = await new Promise<grpc.ServiceError | null>((resolve) => plain.Status({}, { deadline: Date.now() + 5_000 }, (err: grpc.ServiceError | null) => resolve(err)));
  plain.close();
  t.ok(plainErr && plainErr.code !== grpc.status.OK, 'plaintext gRPC is refused');
  t.equal(env.kernel.globalDryRun, true, 'only the operator changed anything');
  for (const n of ['server.key', 'server.pem', 'ca1.pem']) t.ok(env.kernel.protectedPaths.includes(f(n)), `${n} is one of helm's protected files`);

  const cli = await helmctl(['status', '--server', `127.0.0.1:${port}`, '--tls-cert', f('operator.pem'), '--tls-key', f('operator.key'), '--tls-ca', f('ca1.pem')]);
  t.equal(cli.status, 0, cli.stderr);
  t.equal(JSON.parse(cli.stdout).dry_run, true);
  const cliNo = await helmctl(['status', '--server', `127.0.0.1:${port}`]);
  t.match(cliNo, { status: 1, stderr: /--server needs --tls-cert, --tls-key and --tls-ca/ });
  t.notOk(fs.readdirSync(dir).some((n) => n.endsWith('.key') && fs.existsSync(path.join(ROOT, n))), 'no key ends up in the checkout');
});

t.test('the TCP listener is off unless configured', async (t) => {
  const env = await startHelmd(t);
  t.equal(env.helmd['server']!.tlsPort, undefined);
});
