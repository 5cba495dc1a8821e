// Network enforcement together with the LSM hooks, in the VM kernel: the host suite's scenario
// (test/support/network-scenario.ts) under a full helmd — file rules enforced too, so the agent's
// policy also has to let it run its probe — plus a kernel/evaluator differential on random
// network policies. Everything stays on the VM's loopback.
import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { ROOT, RUNTIME_RULE, auditLines, helmctlAsync, requireBpfLsm, startHelmd, type Daemon } from './harness';
import { AGENT_CASES, PORT, parseCases, scenarioPolicy, startServers } from '../support/network-scenario';
import { ROLES, kernelDecision, randomNetworkOps, randomNetworkPolicy } from '../support/network-differential';
import { Rng } from '../rng';
import { loadPolicies } from '../../daemon/policy/parse';
import { evaluateOperation } from '../../daemon/policy/evaluate';

t.setTimeout(900_000);
const PROBE = path.join(ROOT, 'build', 'net-probe');
// What the probe needs to run and to resolve names (libc's resolver reads /etc).
const PROBE_RULES = `${RUNTIME_RULE}\n    - { id: probe, exec: [${PROBE}], read: [${PROBE}, /etc/] }\n`;

interface NetLine {
  type: string;
  decision: string;
  op: string;
  addr?: string;
  port?: number;
  host?: string;
  rule: string | null;
  agent: string | null;
  outcome?: string;
  path?: string | null;
}

/** Asynchronous: the test's own DNS and HTTP servers must answer the agent meanwhile. */
async function governed(d: Daemon, role: string, name: string, cases: string[]): Promise<Map<string, string>> {
  const r = await helmctlAsync(['run', '--socket', d.socket, '--role', role, '--name', name, '--', PROBE, ...cases]);
  if (r.status !== 0) throw new Error(`helmctl run failed (${r.status}): ${r.stderr}`);
  return parseCases(r.stdout);
}

async function main(): Promise<void> {
  const why = requireBpfLsm();
  if (why) {
    t.fail(why);
    return;
  }
  const dir = fs.mkdtempSync('/srv/helm-net-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const servers = await startServers();
  t.teardown(() => servers.close());
  const policy = path.join(dir, 'egress.yaml');
  fs.writeFileSync(policy, scenarioPolicy(PROBE_RULES));
  const dnsArgs = ['--dns-upstream', `127.0.0.1:${servers.dns.port}`, '--dns-ttl-min', '1', '--dns-ttl-max', '30'];
  const d = await startHelmd({ policy: [policy], audit: path.join(dir, 'audit.jsonl'), socket: path.join(dir, 'helmd.sock'), extra: dnsArgs });

  await t.test('with the LSM hooks too: network rules by address and name, and file rules at once', async (t) => {
    t.notMatch(d.log(), /NETWORK-ONLY/, 'a full helmd here, not network-only');
    const cases = [...AGENT_CASES.map(([id, probe]) => `${id}=${probe}`)];
    const got = await governed(d, 'agent', 'vm-egress', cases);
    for (const [id, , expect] of AGENT_CASES) t.match(got.get(id), expect, `${id}: ${got.get(id)}`);
    t.notOk(servers.dns.asked.includes('other.helm.test'), 'a refused name never left');
    // The file side is still enforced for the same agent: it may not read what its policy does not list.
    // Not in `dir`: helmd protects its audit trail's and socket's directory (a self-protection denial).
    const dataDir = fs.mkdtempSync('/srv/helm-net-data-');
    t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
    const data = path.join(dataDir, 'data.txt');
    fs.writeFileSync(data, 'not for the agent\n');
    const cat = await helmctlAsync(['run', '--socket', d.socket, '--role', 'agent', '--name', 'vm-files', '--', '/usr/bin/cat', data]);
    t.not(cat.status, 0, 'reading a file no rule lists is denied');
    const lines = (await auditLines(d.audit, (l) => (l as unknown as NetLine[]).some((x) => x.agent === 'vm-files' && x.op === 'read'), 60_000)) as unknown as NetLine[];
    t.match(lines.find((l) => l.agent === 'vm-egress' && l.addr === '127.0.0.9'), { decision: 'deny', op: 'connect', rule: 'never-9', port: PORT });
    t.match(lines.find((l) => l.agent === 'vm-egress' && l.type === 'dns' && l.outcome === 'refused'), { decision: 'deny' });
    t.ok(lines.some((l) => l.agent === 'vm-files' && l.op === 'read' && l.path === data && l.rule === 'default'), 'the file denial is audited beside the network ones', {
      cat: cat.stderr,
      linesOfThatAgent: lines.filter((l) => l.agent === 'vm-files'),
    });
  });

  await t.test('contextual name rule by role', async (t) => {
    t.equal((await governed(d, 'payment_processor', 'vm-payer', ['s=name:api.stripe.helm.test:' + PORT])).get('s'), 'ok 127.0.0.6');
    t.match((await governed(d, 'analyst', 'vm-analyst', ['s=name:api.stripe.helm.test:' + PORT])).get('s'), /^dns /);
  });
  await t.test('stop', async () => void (await d.stop()));

  await t.test('unix, raw and packet sockets: denied unless a connect rule names them', async (t) => {
    const sdir = path.join(dir, 'sockets');
    for (const sub of ['ok', 'other']) fs.mkdirSync(path.join(sdir, sub), { recursive: true });
    const listeners: net.Server[] = [];
    const listen = (where: string) =>
      new Promise<void>((resolve, reject) => {
        const srv = net.createServer((c) => c.end());
        srv.once('error', reject);
        srv.listen(where, () => resolve());
        listeners.push(srv);
      });
    for (const p of ['ok/a.sock', 'ok/secret.sock', 'other/b.sock']) await listen(path.join(sdir, p));
    fs.symlinkSync(path.join(sdir, 'other/b.sock'), path.join(sdir, 'ok/link.sock'));
    // Datagram and abstract unix sockets: Node has neither, python has both. "@" names are abstract.
    const py = [
      'import socket,sys,time',
      'keep=[]',
      'for a in sys.argv[1:]:',
      '  kind,name=a.split("=",1)',
      '  s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM if kind=="dgram" else socket.SOCK_STREAM)',
      '  s.bind("\\0"+name[1:] if name.startswith("@") else name)',
      '  if kind=="stream": s.listen(8)',
      '  keep.append(s)',
      'print("ready", flush=True)',
      'time.sleep(600)',
    ].join('\n');
    const dgram = spawn('python3', ['-c', py, `dgram=${path.join(sdir, 'dgram-ok.sock')}`, `dgram=${path.join(sdir, 'dgram-no.sock')}`, 'stream=@helm-allowed', 'stream=@helm-denied'], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((r) => dgram.stdout!.once('data', r));
    t.teardown(() => {
      dgram.kill();
      for (const l of listeners) l.close();
    });
    const policyFile = path.join(dir, 'sockets.yaml');
    fs.writeFileSync(
      policyFile,
      `apiVersion: helm/v1\nkind: Policy\nmetadata: { name: sockets }\nspec:\n  roles: [agent]\n  allow:\n${PROBE_RULES}    - id: sockets\n      connect: ["unix:${sdir}/ok/", "unix:@helm-allowed", "unix:${sdir}/dgram-ok.sock", "raw:icmp"]\n  block:\n    - id: secret\n      connect: ["unix:${sdir}/ok/secret.sock"]\n`,
    );
    const sd = await startHelmd({ policy: [policyFile], audit: path.join(dir, 'sockets.jsonl'), socket: path.join(dir, 'sockets.sock'), extra: dnsArgs });
    try {
      const cases: [string, string, string][] = [
        ['unix-allowed', `unix:${sdir}/ok/a.sock:0`, 'ok'],
        ['unix-blocked', `unix:${sdir}/ok/secret.sock:0`, 'EPERM'],
        ['unix-default', `unix:${sdir}/other/b.sock:0`, 'EPERM'],
        ['unix-symlink', `unix:${sdir}/ok/link.sock:0`, 'EPERM'],
        ['abstract-allowed', 'unix:@helm-allowed:0', 'ok'],
        ['abstract-default', 'unix:@helm-denied:0', 'EPERM'],
        ['dgram-allowed', `unixd:${sdir}/dgram-ok.sock:0`, 'ok'],
        ['dgram-default', `unixd:${sdir}/dgram-no.sock:0`, 'EPERM'],
        ['raw-icmp', 'raw:1:0', 'ok'],
        ['raw-udp', 'raw:17:0', 'EPERM'],
        ['packet', 'packet:0x0003:0', 'EPERM'],
        ['control-socket', `unix:${sd.socket}:0`, 'EPERM'],
      ];
      const got = await governed(sd, 'agent', 'sockets', cases.map(([id, c]) => `${id}=${c}`));
      for (const [id, , want] of cases) t.equal(got.get(id), want, id);
      const ungoverned = parseCases(spawnSync(PROBE, [`u=unix:${sdir}/other/b.sock:0`, 'p=packet:0x0003:0'], { encoding: 'utf8' }).stdout);
      t.same([ungoverned.get('u'), ungoverned.get('p')], ['ok', 'ok'], 'ungoverned processes are not affected');
      const lines = (await auditLines(sd.audit, (l) => (l as unknown as { detail?: string }[]).filter((x) => x.detail === 'unix' || x.detail === 'raw' || x.detail === 'packet').length >= 6)) as unknown as (NetLine & { detail?: string; proto?: string; ethertype?: string })[];
      t.match(lines.find((l) => l.detail === 'unix' && l.path === `${sdir}/other/b.sock` && l.agent === 'sockets'), { op: 'connect', decision: 'deny', rule: 'default' }, 'a unix denial names the socket path the kernel resolved');
      t.equal(lines.filter((l) => l.detail === 'unix' && l.path === `${sdir}/other/b.sock`).length, 2, 'the symlinked attempt is reported at the real path');
      t.match(lines.find((l) => l.detail === 'unix' && l.path === `${sdir}/ok/secret.sock`), { rule: 'secret' });
      t.match(lines.find((l) => l.detail === 'unix' && l.path === '@helm-denied'), { decision: 'deny' });
      t.match(lines.find((l) => l.detail === 'raw'), { proto: 'udp', decision: 'deny' });
      t.match(lines.find((l) => l.detail === 'packet'), { ethertype: '0x0003', decision: 'deny' });
      t.match(lines.find((l) => l.op === 'control'), { decision: 'deny', reason: 'self-protection' }, "helmd's own socket stays out of reach");
    } finally {
      await sd.stop();
    }
  });

  await t.test('differential: kernel = reference evaluator on random network policies', async (t) => {
    const seed = Number(process.env.HELM_SEED ?? Date.now() % 1_000_000);
    t.comment(`seed ${seed} (HELM_SEED=${seed} replays it)`);
    const rng = new Rng(seed);
    for (let round = 0; round < 2; round++) {
      const file = path.join(dir, `random-${round}.yaml`);
      fs.writeFileSync(file, randomNetworkPolicy(rng, PROBE_RULES));
      const policies = loadPolicies([file]).policies;
      const dd = await startHelmd({ policy: [file], audit: path.join(dir, `random-${round}.jsonl`), socket: path.join(dir, `r${round}.sock`), extra: dnsArgs });
      try {
        for (const role of ROLES) {
          const agent = `vm-diff-${round}-${role}`;
          const ops = randomNetworkOps(rng, role, 50);
          const wants = ops.map((op) => evaluateOperation(policies, { role, verb: op.verb, addr: op.addr, port: op.port }));
          const got = await governed(dd, role, agent, ops.map((o) => o.probe));
          const audited = wants.filter((w) => w.decision !== 'allow').length;
          const lines = (await auditLines(dd.audit, (l) => (l as unknown as NetLine[]).filter((x) => x.agent === agent && (x.op === 'connect' || x.op === 'bind')).length >= audited)) as unknown as NetLine[];
          let bad = 0;
          ops.forEach((op, i) => {
            const want = wants[i];
            const kernel = kernelDecision(got.get(op.id));
            const line = lines.find((l) => l.agent === agent && l.op === op.verb && l.addr === op.addr && l.port === op.port);
            const ok = (want.decision === 'deny' ? kernel === 'deny' : kernel === 'passed') && (want.decision === 'allow' ? !line : line?.rule === (want.rule ?? 'default') && line?.decision === want.decision);
            if (!ok) {
              bad++;
              t.fail(`seed ${seed} (HELM_SEED=${seed} replays it), round ${round}: ${op.verb} ${op.addr}:${op.port} by ${role}: evaluator ${want.decision} ${want.rule}, kernel ${got.get(op.id)}, audit ${JSON.stringify(line)}`);
            }
          });
          const tally = ['allow', 'deny', 'would_deny'].map((k) => `${wants.filter((w) => w.decision === k).length} ${k}`).join(', ');
          t.equal(bad, 0, `seed ${seed}, round ${round}, ${role}: ${ops.length} operations agree (${tally})`);
        }
      } finally {
        await dd.stop();
      }
    }
  });
}

void main();
