// Network enforcement on this host's own kernel (it refuses BPF LSM programs, but runs the
// cgroup sock_addr programs): helmd --network-only governs agents' connect, sendmsg and bind by
// address, port and learned host name; their DNS goes to helmd's forwarder, which refuses
// unlisted names before they leave the host. All traffic stays on loopback.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { BUILD, REPO, ensureKernelMounts, requireRoot, run, scratchDir } from './host';
import { startHelmd, auditLines, type Daemon } from '../vm/harness';
import { AGENT_CASES, PORT, parseCases, scenarioPolicy, startServers, type Servers } from '../support/network-scenario';
import { ROLES, kernelDecision, randomNetworkOps, randomNetworkPolicy } from '../support/network-differential';
import { Rng } from '../rng';
import { scratchPins } from '../support/scratch-pins';
import { loadPolicies } from '../../daemon/policy/parse';
import { evaluateOperation } from '../../daemon/policy/evaluate';

t.setTimeout(600_000);
const HELMCTL = path.join(REPO, 'bin/helmctl');
const PROBE = path.join(BUILD, 'net-probe');

interface NetLine {
  type: string;
  decision: string;
  op: string;
  detail?: string;
  addr?: string;
  port?: number;
  proto?: string;
  host?: string;
  rule: string | null;
  policy: string | null;
  agent: string | null;
  role: string | null;
  outcome?: string;
  exe?: string | null;
  mode?: string;
}

async function governed(d: Daemon, role: string, name: string, cases: string[], opts: { dryRun?: boolean; env?: string } = {}): Promise<Map<string, string>> {
  const cmd = opts.env ? ['env', opts.env, PROBE, ...cases] : [PROBE, ...cases];
  const r = await run(HELMCTL, ['run', '--socket', d.socket, '--role', role, '--name', name, ...(opts.dryRun ? ['--dry-run'] : []), '--', ...cmd], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`helmctl run failed (${r.code}): ${r.stderr}`);
  return parseCases(r.stdout);
}

async function lines(d: Daemon, until: (l: NetLine[]) => boolean): Promise<NetLine[]> {
  return (await auditLines(d.audit, (l) => until(l as unknown as NetLine[]), 60_000)) as unknown as NetLine[];
}

async function main(): Promise<void> {
  if (!requireRoot()) return;
  ensureKernelMounts();
  const servers: Servers = await startServers();
  t.teardown(() => servers.close());
  const dir = scratchDir(t, 'net');
  const policy = path.join(dir, 'egress.yaml');
  fs.writeFileSync(policy, scenarioPolicy());

  const base = ['--network-only', '--dns-upstream', `127.0.0.1:${servers.dns.port}`, '--dns-ttl-min', '1', '--dns-ttl-max', '30'];
  const d = await startHelmd({ policy: [policy], audit: path.join(dir, 'audit.jsonl'), socket: path.join(dir, 'helmd.sock'), extra: base });
  t.teardown(() => d.stop());

  await t.test('helmd says loudly that it enforces network rules only', async (t) => {
    t.match(d.log(), /NETWORK-ONLY MODE: connect and bind rules are enforced; file \(read\/write\/exec\) rules and self-protection are NOT/);
    const status = spawnSync(HELMCTL, ['status', '--socket', d.socket], { encoding: 'utf8' });
    t.match(status.stdout, /network.only/i, 'helmctl status says so too');
  });

  await t.test('a governed agent reaches only what the policy allows, by address and by name', async (t) => {
    const got = await governed(d, 'agent', 'egress-agent', AGENT_CASES.map(([id, probe]) => `${id}=${probe}`));
    for (const [id, , expect] of AGENT_CASES) t.match(got.get(id), expect, `${id}: ${got.get(id)}`);
    // A refused name never left the host: the upstream resolver was never asked.
    for (const name of ['other.helm.test', 'wild.helm.test', 'api.stripe.helm.test']) {
      t.notOk(servers.dns.asked.includes(name), `${name} was not sent upstream`);
    }
    for (const name of ['allowed.helm.test', 'alias.helm.test', 'x.wild.helm.test']) t.ok(servers.dns.asked.includes(name), `${name} was resolved upstream`);

    const all = await lines(d, (l) => l.some((x) => x.type === 'decision' && x.addr === '127.0.0.5'));
    const agentLines = all.filter((l) => l.agent === 'egress-agent');
    const deny = (addr: string, port: number, op = 'connect') => agentLines.find((l) => l.type === 'decision' && l.addr === addr && l.port === port && l.op === op);
    t.match(deny('127.0.0.3', PORT), { decision: 'deny', proto: 'tcp', rule: 'default', policy: null, detail: 'connect', exe: PROBE }, 'default deny, with addr, port, proto and the kernel-resolved exe');
    t.match(deny('127.0.0.9', PORT), { decision: 'deny', rule: 'never-9', policy: 'egress' }, 'the block rule decided');
    t.equal(agentLines.filter((l) => l.addr === '127.0.0.3' && l.port === PORT).length, 2, 'the IPv4-mapped attempt is reported as the IPv4 address it is');
    t.match(deny('127.0.0.2', 19011), { proto: 'udp', detail: 'sendmsg' }, 'an unconnected UDP send');
    t.match(deny('127.0.0.1', 18501, 'bind'), { op: 'bind', decision: 'deny' }, 'a bind');
    t.match(deny('::1', PORT + 1), { addr: '::1', decision: 'deny' }, 'IPv6');
    t.match(deny('127.0.0.12', PORT + 1), { host: 'allowed.helm.test', rule: 'default' }, 'a learned address carries the name the agent looked up');
    t.notOk(deny('127.0.0.5', PORT)?.host, 'an expired address is no longer known by name');
    const refused = agentLines.filter((l) => l.type === 'dns' && l.outcome === 'refused');
    t.same([...new Set(refused.map((l) => (l as unknown as { host: string }).host))].sort(), ['api.stripe.helm.test', 'other.helm.test', 'wild.helm.test'], 'every refused name is audited');
    t.ok(refused.every((l) => l.decision === 'deny'));
    const answered = agentLines.find((l) => l.type === 'dns' && (l as unknown as { host: string }).host === 'allowed.helm.test' && l.outcome === 'answered');
    t.match(answered, { decision: 'allow', addresses: ['127.0.0.12'], ttl: 30 }, 'an answered name: its addresses, learned for the TTL capped to --dns-ttl-max');
  });

  await t.test('a governed curl gets what the policy allows, by name and by address; an ungoverned one everything', async (t) => {
    const script = [
      `curl -s -o /dev/null -w "name %{http_code}\\n" --max-time 10 http://allowed.helm.test:${PORT}/ || echo "name failed $?"`,
      `curl -s -o /dev/null -w "addr %{http_code}\\n" --max-time 10 http://127.0.0.2:${PORT}/ || echo "addr failed $?"`,
      `curl -s -o /dev/null -w "unlisted %{http_code}\\n" --max-time 10 http://127.0.0.3:${PORT}/ || echo "unlisted failed $?"`,
      `curl -s -o /dev/null -w "unlisted-name %{http_code}\\n" --max-time 10 http://other.helm.test:${PORT}/ || echo "unlisted-name failed $?"`,
    ].join('; ');
    const r = await run(HELMCTL, ['run', '--socket', d.socket, '--role', 'agent', '--name', 'curl-agent', '--', 'sh', '-c', script], { timeoutMs: 120_000 });
    t.match(r.stdout, /^name 200$/m, 'a name the policy lists');
    t.match(r.stdout, /^addr 200$/m, 'an address the policy lists');
    t.match(r.stdout, /^unlisted failed 7$/m, 'an unlisted address: connection refused by the kernel (curl exit 7)');
    t.match(r.stdout, /^unlisted-name failed 6$/m, 'an unlisted name: it does not even resolve (curl exit 6)');
    const free = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '10', `http://127.0.0.3:${PORT}/`]);
    t.equal(free.stdout, '200', 'ungoverned curl reaches the unlisted server');
  });

  await t.test('learned addresses belong to the agent that looked them up', async (t) => {
    const a = await governed(d, 'agent', 'learner', ['n=name:allowed.helm.test:' + PORT, 'direct=tcp:127.0.0.12:' + PORT]);
    t.equal(a.get('direct'), 'ok');
    const b = await governed(d, 'agent', 'bystander', ['direct=tcp:127.0.0.12:' + PORT]);
    t.equal(b.get('direct'), 'EPERM', 'another agent of the same role did not learn it');
  });

  await t.test('DNS over TCP is redirected and decided the same way', async (t) => {
    const got = await governed(d, 'agent', 'tcp-dns', ['ok=name:alias.helm.test:' + PORT, 'no=name:other.helm.test:' + PORT], { env: 'RES_OPTIONS=use-vc' });
    t.equal(got.get('ok'), 'ok 127.0.0.4');
    t.match(got.get('no'), /^dns /);
  });

  await t.test('contextual name rule: api.stripe only for payment_processor, even with *:port allowed', async (t) => {
    const pay = await governed(d, 'payment_processor', 'payer', ['stripe=name:api.stripe.helm.test:' + PORT]);
    t.equal(pay.get('stripe'), 'ok 127.0.0.6');
    const other = await governed(d, 'analyst', 'analyst', ['stripe=name:api.stripe.helm.test:' + PORT, 'web=tcp:127.0.0.3:' + PORT, 'off-port=tcp:127.0.0.3:' + (PORT + 1)]);
    t.match(other.get('stripe'), /^dns /, 'the analyst cannot even resolve it');
    t.equal(other.get('web'), 'ok', 'while *:port admits addresses for the analyst');
    t.equal(other.get('off-port'), 'EPERM');
    const l = await lines(d, (x) => x.some((y) => y.agent === 'payer' && y.type === 'dns'));
    t.match(l.find((y) => y.agent === 'payer' && y.type === 'dns'), { decision: 'allow', outcome: 'answered', role: 'payment_processor' });
  });

  await t.test('dry-run agent: everything proceeds, denials are would_deny', async (t) => {
    const got = await governed(d, 'agent', 'rehearsal', ['web=tcp:127.0.0.3:' + PORT, 'name=name:other.helm.test:' + PORT], { dryRun: true });
    t.equal(got.get('web'), 'ok');
    t.equal(got.get('name'), 'ok 127.0.0.3', 'an unlisted name is answered in dry-run');
    const l = await lines(d, (x) => x.some((y) => y.agent === 'rehearsal' && y.type === 'dns') && x.some((y) => y.agent === 'rehearsal' && y.addr === '127.0.0.3'));
    t.match(l.find((y) => y.agent === 'rehearsal' && y.type === 'decision' && y.addr === '127.0.0.3'), { decision: 'would_deny', mode: 'dry-run' });
    t.match(l.find((y) => y.agent === 'rehearsal' && y.type === 'dns'), { decision: 'would_deny' });
  });

  await t.test('an ungoverned process reaches everything', async (t) => {
    const r = await run(PROBE, ['a=tcp:127.0.0.3:' + PORT, 'b=tcp:127.0.0.9:' + PORT, 'c=udp:127.0.0.2:19011', 'd=bind-tcp:127.0.0.1:18501']);
    const got = parseCases(r.stdout);
    for (const id of ['a', 'b', 'c', 'd']) t.equal(got.get(id), 'ok', id);
  });

  await t.test('without --network-only helmd still refuses to start on a kernel without BPF LSM', async (t) => {
    const pins = scratchPins('refused'); // never the host's /var/lib/helm
    const r = await run(path.join(REPO, 'bin/helmd'), ['--policy', policy, '--audit-log', path.join(dir, 'refused.jsonl'), '--socket', path.join(dir, 'refused.sock'), ...pins.args], { timeoutMs: 60_000 });
    t.notOk(fs.existsSync(pins.stateDir), 'no state directory left behind');
    if (/NOT ENFORCING/.test(r.stderr)) {
      t.not(r.code, 0);
      t.match(r.stderr, /--network-only/, 'and says how to enforce network rules alone');
    } else {
      t.fail(`helmd started (this kernel runs BPF LSM?): ${r.stderr}`);
    }
  });
  await t.test('differential: the kernel decides every random network operation as the reference evaluator does', async (t) => {
    await d.stop();
    const seed = Number(process.env.HELM_SEED ?? Date.now() % 1_000_000);
    t.comment(`seed ${seed} (HELM_SEED=${seed} replays it)`);
    const rng = new Rng(seed);
    for (let round = 0; round < 3; round++) {
      const file = path.join(dir, `random-${round}.yaml`);
      fs.writeFileSync(file, randomNetworkPolicy(rng));
      const policies = loadPolicies([file]).policies;
      const dd = await startHelmd({ policy: [file], audit: path.join(dir, `random-${round}.jsonl`), socket: path.join(dir, `random-${round}.sock`), extra: base });
      try {
        for (const role of ROLES) {
          const ops = randomNetworkOps(rng, role, 60);
          const agent = `diff-${round}-${role}`;
          const wants = ops.map((op) => evaluateOperation(policies, { role, verb: op.verb, addr: op.addr, port: op.port }));
          const audited = wants.filter((w) => w.decision !== 'allow').length;
          const got = await governed(dd, role, agent, ops.map((o) => o.probe));
          const all = await lines(dd, (l) => l.filter((x) => x.agent === agent).length >= audited);
          t.equal(all.filter((x) => x.agent === agent).length, audited, 'one audit line per denial or would-denial, none for allows');
          let mismatches = 0;
          for (const [i, op] of ops.entries()) {
            const want = wants[i];
            const kernel = kernelDecision(got.get(op.id));
            const line = all.find((l) => l.agent === agent && l.op === op.verb && l.addr === op.addr && l.port === op.port);
            const ok = want.decision === 'deny' ? kernel === 'deny' : kernel === 'passed';
            const ruleOk = want.decision === 'allow' ? line === undefined : line?.rule === (want.rule ?? 'default') && line?.decision === want.decision;
            if (!ok || !ruleOk) {
              mismatches++;
              t.fail(`seed ${seed} (HELM_SEED=${seed} replays it), round ${round}: ${op.verb} ${op.addr}:${op.port} by ${role}: evaluator ${want.decision} (${want.policy}/${want.rule}), kernel ${got.get(op.id)} audit ${JSON.stringify(line)}\n${fs.readFileSync(file, 'utf8')}`);
            }
          }
          const tally = ['allow', 'deny', 'would_deny'].map((k) => `${wants.filter((w) => w.decision === k).length} ${k}`).join(', ');
          t.equal(mismatches, 0, `seed ${seed}, round ${round}, role ${role}: ${ops.length} operations agree (${tally})`);
        }
      } finally {
        await dd.stop();
      }
    }
  });
}

void main();
