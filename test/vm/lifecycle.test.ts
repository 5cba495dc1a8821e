// helm as a service on an agent host, end to end in the VM (whose root is a
// throwaway overlay): installed with the README's steps (make install), started
// as systemd starts the unit (ExecStart under its capability bounding set, READY=1
// over NOTIFY_SOCKET), then, while an agent keeps trying operations in a loop:
//  - SIGKILL helmd: every attempt is still denied; a restarted helmd re-adopts the
//    pinned programs (no second attachment) and the agent (listed with its role),
//    and every denial of the downtime reaches the trail or is counted lost;
//  - stop/start for upgrades (a changed policy; new programs with the same
//    layout; a new layout): every attempt's outcome is the old policy's or the
//    new one's, never neither's;
//  - helmctl uninstall: recorded in the trail, then enforcement is gone;
//  - make uninstall: the files go, the configuration and the trail stay.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { requireBpfLsm, HELM_ENTER, ROOT, RUNTIME_RULE } from './harness';
import { capEff, capMask, helmLinks, readUnit, startService, type Service } from './service';
import { cgroup2Mount } from '../../daemon/control/cgroups';

t.setTimeout(1_800_000);

const D = '/srv/lc';
const PREFIX = '/usr/local';
const UNIT = `${PREFIX}/lib/systemd/system/helmd.service`;
const HELMCTL = `${PREFIX}/bin/helmctl`;
const AUDIT = '/var/log/helm/audit.jsonl';
const POLICY = '/etc/helm/policies/lifecycle.yaml';
const LOG = `${D}/out/log`;
const INSTALLED_OBJECT = `${PREFIX}/lib/helm/build/helm.bpf.o`;

/**
 * v1 allows writes into flip/, v2 blocks them; blocked/ is blocked and open/
 * allowed by both: an attempt there decided by neither policy would show.
 */
function policy(version: 1 | 2): string {
  return `
apiVersion: helm/v1
kind: Policy
metadata: { name: lifecycle }
spec:
  roles: [lifecycle]
  allow:
${RUNTIME_RULE}
    - { id: loop, read: [${D}/], write: [${D}/open/, ${D}/out/${version === 1 ? `, ${D}/flip/` : ''}] }
  block:
    - { id: blocked, write: [${D}/blocked/] }
${version === 2 ? `    - { id: flipped, write: [${D}/flip/] }\n` : ''}`;
}

/**
 * The agent: each round tries A (blocked/, a new name each time), B (open/) and C
 * (flip/), and logs the outcomes. (`true`, not `:`: a failed redirection of a
 * special built-in ends the shell.)
 */
const LOOP = `
i=0
while [ ! -e "$1/stop" ]; do
  if true 2>/dev/null >"$1/blocked/a-$i"; then a=ok; else a=denied; fi
  if true 2>/dev/null >"$1/open/b"; then b=ok; else b=denied; fi
  if true 2>/dev/null >"$1/flip/c"; then c=ok; else c=denied; fi
  echo "$i $a $b $c" >> "$1/out/log"
  i=$((i+1))
  sleep 0.05
done
`;

interface Round {
  i: number;
  a: string;
  b: string;
  c: string;
}

function rounds(): Round[] {
  if (!fs.existsSync(LOG)) return [];
  return fs
    .readFileSync(LOG, 'utf8')
    .split('\n')
    .map((l) => /^(\d+) (\w+) (\w+) (\w+)$/.exec(l))
    .filter((m): m is RegExpExecArray => !!m)
    .map((m) => ({ i: Number(m[1]), a: m[2], b: m[3], c: m[4] }));
}

async function until<T>(what: string, f: () => T | undefined | false, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** At least n more rounds than now. */
async function moreRounds(n: number): Promise<number> {
  const from = rounds().length;
  await until(`${n} more rounds of the agent`, () => rounds().length >= from + n);
  return rounds().length;
}

interface Line {
  type: string;
  action?: string;
  decision?: string;
  path?: string | null;
  agent?: string | null;
  role?: string | null;
  rule?: string;
  count?: string;
  generation?: number;
  [k: string]: unknown;
}

function trail(): Line[] {
  if (!fs.existsSync(AUDIT)) return [];
  const text = fs.readFileSync(AUDIT, 'utf8');
  return text
    .slice(0, text.lastIndexOf('\n') + 1)
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Line);
}

function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): { status: number | null; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 600_000, cwd: ROOT, env: env ?? process.env });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

const starts = () => trail().filter((l) => l.type === 'control' && l.action === 'start');

const missing = requireBpfLsm();
if (missing) {
  t.fail(`VM suite cannot run: ${missing}`);
} else {
  let svc: Service | undefined;
  let agent: ChildProcess | undefined;
  let agentExit: Promise<number | null> | undefined;

  t.before(() => {
    // Earlier suites in this VM leave their enforcement pinned, as helmd should: start clean.
    const pre = run(path.join(ROOT, 'bin', 'helmctl'), ['uninstall', '--audit-log', '/srv/lc-earlier-audit.jsonl']);
    if (pre.status !== 0) throw new Error(`clearing earlier pins: ${pre.out}`);
    fs.rmSync(D, { recursive: true, force: true });
    for (const d of ['blocked', 'open', 'flip', 'out']) fs.mkdirSync(`${D}/${d}`, { recursive: true });
  });
  t.teardown(async () => {
    fs.writeFileSync(`${D}/stop`, '');
    if (svc && svc.proc.exitCode === null) svc.proc.kill('SIGKILL');
    if (agent && agent.exitCode === null) agent.kill('SIGKILL');
  });

  t.test('make install puts everything in place, and keeps an administrator\'s configuration', async (t) => {
    const r = run('make', ['install']);
    t.equal(r.status, 0, `make install\n${r.out}`);
    t.equal(fs.readlinkSync(`${PREFIX}/bin/helmd`), '../lib/helm/bin/helmd');
    t.ok(fs.existsSync(`${PREFIX}/bin/helmctl`), 'helmctl');
    t.same(readUnit(UNIT).execStart, [`${PREFIX}/bin/helmd`, '--config', '/etc/helm/helmd.yaml'], 'the unit starts the installed helmd with the configuration');
    t.ok(fs.existsSync('/etc/helm/helmd.yaml') && fs.existsSync('/etc/helm/policies/default.yaml'), 'configuration and default policy');
    t.match(fs.readFileSync('/etc/group', 'utf8'), /^helm:x:\d+:/m, 'the helm group');
    t.equal(fs.statSync('/var/lib/helm').mode & 0o777, 0o700, 'state directory 0700');

    const mine = fs.readFileSync('/etc/helm/helmd.yaml', 'utf8') + '# edited by the administrator\n';
    fs.writeFileSync('/etc/helm/helmd.yaml', mine);
    t.equal(run('make', ['install']).status, 0, 'installing again');
    t.equal(fs.readFileSync('/etc/helm/helmd.yaml', 'utf8'), mine, 'the edited configuration is kept');
    // The agent here needs its own policy only. (The default one has helmd walk /etc and /root
    // for hard links of blocked files: minutes over the VM's 9p root under emulation.)
    fs.renameSync('/etc/helm/policies/default.yaml', '/etc/helm/default.yaml.off');
    fs.writeFileSync(POLICY, policy(1));
  });

  t.test('started as systemd starts it: bounded capabilities, READY=1 once it enforces', async (t) => {
    svc = await startService(UNIT);
    t.match(svc.log(), /helmd pinned new enforcement/, 'nothing was pinned: it pinned its own');
    t.match(svc.notifications.join('\n'), /^READY=1\|STATUS=enforcing: generation \d+, 0 agents$/m, 'READY=1 with a status line');
    const caps = readUnit(UNIT).caps;
    t.equal(capEff(svc.pid).toString(16), capMask(caps).toString(16), `it runs with exactly ${caps.join(' ')}`);
    const sock = fs.statSync('/run/helm/helmd.sock');
    const helmGid = Number(/^helm:x:(\d+):/m.exec(fs.readFileSync('/etc/group', 'utf8'))![1]);
    t.equal(sock.gid, helmGid, 'the socket belongs to the helm group');
    t.equal(sock.mode & 0o777, 0o660, 'socket 0660');
    t.equal(fs.statSync('/run/helm').gid, helmGid, 'and so does its directory');
    t.same(fs.readdirSync('/sys/fs/bpf/helm').sort(), ['current', 'set-1'], 'pinned under /sys/fs/bpf/helm');

    const doc = run(HELMCTL, ['doctor']);
    t.equal(doc.status, 0, `helmctl doctor passes every check on this host\n${doc.out}`);
    for (const check of ['kernel', 'BPF LSM active', 'kernel BTF', 'cgroup v2', 'bpffs', 'BPF LSM programs load', 'configuration', 'pinned enforcement', 'helmd reachable', 'policy loaded', 'audit writable', 'clock']) {
      t.match(doc.out, new RegExp(`^PASS  ${check}\\s`, 'm'), check);
    }
    t.match(doc.out, /pinned enforcement\s+\/sys\/fs\/bpf\/helm\/set-1 by helm .*the installed helmd re-adopts it as it is/);
  });

  t.test('SIGKILL: the agent stays denied throughout; the restart re-adopts it and accounts for the downtime', async (t) => {
    agent = spawn(HELMCTL, ['run', '--role', 'lifecycle', '--name', 'looper', '--', 'sh', '-c', LOOP, 'loop', D], { stdio: ['ignore', 'pipe', 'pipe'] });
    let agentOut = '';
    agent.stdout!.on('data', (d) => (agentOut += d));
    agent.stderr!.on('data', (d) => (agentOut += d));
    agentExit = new Promise((r) => agent!.on('exit', (code) => r(code)));
    await until('the agent to run', () => rounds().length >= 5 || agent!.exitCode !== null);
    t.equal(agent.exitCode, null, `the agent runs\n${agentOut}`);
    const linksBefore = helmLinks();
    t.ok(linksBefore.size >= 20, `${linksBefore.size} helm programs attached`);
    // A second agent whose cgroup goes away while no helmd runs: the restart must release it.
    const gone = `${cgroup2Mount()!}/lc-gone`;
    fs.mkdirSync(gone, { recursive: true });
    const att = run(HELMCTL, ['attach', '--cgroup', gone, '--role', 'lifecycle', '--name', 'gone']);
    t.equal(att.status, 0, `attached a second agent: ${att.out}`);

    svc!.proc.kill('SIGKILL');
    await svc!.exited;
    const killedAt = rounds().length;
    fs.rmdirSync(gone);
    const downtime = await moreRounds(10);
    t.ok(fs.existsSync('/sys/fs/bpf/helm/current'), 'the pins outlive helmd');

    svc = await startService(UNIT);
    const readyAt = rounds().length;
    t.match(svc.log(), /helmd re-adopted the pinned enforcement/);
    t.same([...helmLinks()].sort(), [...linksBefore].sort(), 'the same links, the same programs: nothing attached a second time');
    const agents = JSON.parse(run(HELMCTL, ['agents', '--json']).out) as { name: string; role: string; cgroup_path: string }[];
    t.match(agents, [{ name: 'looper', role: 'lifecycle' }], 'the agent is re-adopted, with its role');
    const start = starts().pop()!;
    t.match(start, { previous: 'crashed', pins: { outcome: 'adopted', set: 'set-1' }, agents: [{ agent: 'looper', role: 'lifecycle' }] }, 'the trail records the re-adoption');
    t.equal((start.agents as unknown[]).length, 1, 'only the agent whose cgroup still exists');
    t.same(start.vanished, ['gone'], 'the agent whose cgroup vanished meanwhile is released, and named');
    t.same(agents.map((a) => a.name), ['looper'], 'helmctl agents: not the vanished one');

    await moreRounds(5);
    const all = rounds();
    t.same(all.filter((r) => r.a !== 'denied').map((r) => r.i), [], `every one of ${all.length} attempts on blocked/ was denied, ${downtime - killedAt}+ of them while no helmd ran`);
    t.ok(readyAt - killedAt >= 10, `${readyAt - killedAt} attempts between the kill and the restart`);

    // Each attempt wrote a new name: every one is in the trail, or counted lost.
    const wanted = all.filter((r) => r.i < readyAt).map((r) => `${D}/blocked/a-${r.i}`);
    const seen = await until('the downtime denials in the trail', () => {
      const lines = trail();
      const paths = new Set(lines.filter((l) => l.type === 'decision' && l.agent === 'looper' && l.rule === 'blocked').map((l) => l.path));
      const lost = lines.filter((l) => l.type === 'lost').reduce((n, l) => n + Number(l.count), 0);
      const absent = wanted.filter((p) => !paths.has(p));
      return absent.length <= lost ? { absent, lost, lines } : undefined;
    });
    t.ok(true, `${wanted.length - seen.absent.length} of ${wanted.length} denials are in the trail, ${seen.lost} counted lost`);
    const downtimeLines = seen.lines.filter((l) => l.type === 'decision' && l.agent === 'looper' && Number(/a-(\d+)$/.exec(l.path ?? '')?.[1]) >= killedAt && Number(/a-(\d+)$/.exec(l.path ?? '')?.[1]) < readyAt);
    t.ok(downtimeLines.length > 0 || seen.lost > 0, `the downtime's denials reached the trail (${downtimeLines.length}) or were counted`);
    t.match(downtimeLines[0] ?? {}, { decision: 'deny', role: 'lifecycle', rule: 'blocked', policy: 'lifecycle' }, 'named as when they were decided');
    const verify = run(HELMCTL, ['audit', 'verify', AUDIT]);
    t.equal(verify.status, 0, `the chain verifies across the crash: ${verify.out}`);
  });

  t.test('a unit governed by name: attach --unit', async (t) => {
    const cg = cgroup2Mount()!;
    const unit = `${cg}/system.slice/lc-unit.service`;
    fs.mkdirSync(unit, { recursive: true });
    const r = run(HELMCTL, ['attach', '--unit', 'lc-unit.service', '--role', 'lifecycle']);
    t.equal(r.status, 0, r.out);
    t.match(r.out, new RegExp(`governing ${unit} as agent lc-unit\\.service \\(id \\d+, role lifecycle`), 'without systemd to ask, the system.slice cgroup');
    const tryBlocked = (cgroup: string) =>
      spawnSync(HELM_ENTER, [cgroup, '--', 'sh', '-c', `true 2>/dev/null >${D}/blocked/unit-try && echo allowed || echo denied`], { encoding: 'utf8' }).stdout.trim();
    t.equal(tryBlocked(unit), 'denied', 'a process of the unit is governed');

    // Where systemd can be asked, its answer is used.
    const other = `${cg}/system.slice/lc.slice/lc-unit2.service`;
    fs.mkdirSync(other, { recursive: true });
    const fake = `${D}-bin`;
    fs.mkdirSync(fake, { recursive: true });
    fs.writeFileSync(`${fake}/systemctl`, `#!/bin/sh\n[ "$*" = "show --property=ControlGroup --value -- lc-unit2.service" ] && echo /system.slice/lc.slice/lc-unit2.service\n`, { mode: 0o755 });
    const r2 = run(HELMCTL, ['attach', '--unit', 'lc-unit2.service', '--role', 'lifecycle'], { ...process.env, PATH: `${fake}:${process.env.PATH}` });
    t.match(r2.out, `governing ${other} as agent lc-unit2.service (id`, r2.out);
    t.equal(tryBlocked(other), 'denied', 'governed');
    const bad = run(HELMCTL, ['attach', '--unit', 'no such unit', '--role', 'lifecycle']);
    t.equal(bad.status, 1);
    t.match(bad.out, /is not a unit name/);
    for (const c of [unit, other]) {
      const d = run(HELMCTL, ['detach', '--cgroup', c]);
      t.equal(d.status, 0, `detached ${c}: ${d.out}`);
    }
  });

  t.test('upgrades with the agent running: every outcome is the old policy\'s or the new one\'s', async (t) => {
    const expectC = (v: 1 | 2) => (v === 1 ? 'ok' : 'denied');
    const generations = [starts().pop()!.generation!];
    const steps: { policy: 1 | 2; object?: string; outcome: string }[] = [
      { policy: 2, outcome: 'adopted' }, // a changed policy, the same helmd
      { policy: 1, object: 'helm-next-object.bpf.o', outcome: 'replaced' }, // new programs, same layout
      { policy: 2, object: 'helm-next-layout.bpf.o', outcome: 'rebuilt' }, // a new layout
    ];
    let current: 1 | 2 = 1;
    for (const s of steps) {
      await moreRounds(3);
      t.equal(await svc!.stop(), 0, 'systemctl stop: exit 0');
      fs.writeFileSync(POLICY, policy(s.policy));
      if (s.object) fs.copyFileSync(path.join(ROOT, 'build', 'test', s.object), INSTALLED_OBJECT);
      await moreRounds(5); // stopped: the pinned programs decide alone
      svc = await startService(UNIT);
      const start = starts().pop()!;
      t.match(start, { previous: 'stopped', pins: { outcome: s.outcome }, agents: [{ agent: 'looper', role: 'lifecycle' }] }, `${s.outcome}: the agent stays governed`);
      generations.push(start.generation!);
      await until('the new policy to decide', () => rounds().slice(-1)[0]?.c === expectC(s.policy));
      current = s.policy;
      if (s.outcome === 'replaced') {
        const p = start.pins as { updated?: string[]; replaced?: string[] };
        t.ok((p.replaced ?? []).includes('helm_file_open'), 'LSM links cannot be updated in place: the new program was attached before the old link went');
      }
      if (s.outcome === 'rebuilt') {
        t.match(start.pins, { set: 'set-2' }, 'a new set');
        t.same(fs.readdirSync('/sys/fs/bpf/helm').sort(), ['current', 'set-2'], 'the old set is gone');
      }
    }
    await moreRounds(3);
    t.equal(current, 2);
    const all = rounds();
    t.same(all.filter((r) => r.a !== 'denied').map((r) => r.i), [], `blocked/ was denied in every one of ${all.length} rounds`);
    t.same(all.filter((r) => r.b !== 'ok').map((r) => r.i), [], 'open/ was allowed in every round: never the default deny of a missing table');
    const changes = all.filter((r, k) => k > 0 && r.c !== all[k - 1].c).map((r) => `${r.i}:${r.c}`);
    t.equal(changes.length, 3, `flip/ changed exactly once per policy change (${changes.join(' ')})`);
    t.ok(generations.every((g, k) => k === 0 || g > generations[k - 1]), `generations continue: ${generations.join(' → ')}`);
    const verify = run(HELMCTL, ['audit', 'verify', AUDIT]);
    t.equal(verify.status, 0, `the chain verifies across every restart: ${verify.out}`);
  });

  t.test('helmctl uninstall: recorded first, then enforcement is gone', async (t) => {
    const r = run(HELMCTL, ['uninstall']);
    t.equal(r.status, 0, r.out);
    t.match(r.out, new RegExp(`stopping helmd \\(pid ${svc!.pid}\\)`));
    t.match(r.out, /released looper \(role lifecycle/);
    t.equal(await svc!.exited, 0, 'helmd stopped cleanly');
    t.notOk(fs.existsSync('/sys/fs/bpf/helm'), 'nothing pinned');
    t.equal(helmLinks().size, 0, 'no helm program attached');
    const lines = trail();
    const last = lines[lines.length - 1];
    t.match(last, { type: 'control', action: 'uninstall', by: { uid: 0, command: 'helmctl uninstall' }, released: [{ agent: 'looper', role: 'lifecycle' }] }, 'the last line of the trail');
    t.match(lines[lines.length - 2], { type: 'stop' }, 'after the stopped helmd\'s own last line');
    t.ok(lines.some((l) => l.type === 'control' && l.action === 'stop'), 'which said that enforcement continues');
    t.equal(run(HELMCTL, ['audit', 'verify', AUDIT]).status, 0, 'one chain to the end');
    await until('the agent to be allowed what was blocked', () => rounds().slice(-1)[0]?.a === 'ok');
    t.pass('the agent runs ungoverned now');
    fs.writeFileSync(`${D}/stop`, '');
    await agentExit;
  });

  t.test('make uninstall removes the installation, keeps the configuration and the trail', async (t) => {
    const r = run('make', ['uninstall']);
    t.equal(r.status, 0, r.out);
    t.match(r.out, /nothing is pinned at \/sys\/fs\/bpf\/helm/);
    for (const f of [`${PREFIX}/bin/helmd`, `${PREFIX}/bin/helmctl`, UNIT, `${PREFIX}/lib/helm`, '/var/lib/helm']) t.notOk(fs.existsSync(f), `${f} removed`);
    t.ok(fs.existsSync('/etc/helm/helmd.yaml') && fs.existsSync(AUDIT), 'configuration and audit trail kept');
  });
}
