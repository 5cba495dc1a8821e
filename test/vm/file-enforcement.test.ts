// End to end in a kernel with BPF LSM: helmd started as the README starts it,
// agents run with helmctl, real opens allowed or denied, the audit trail checked.
import t from 'tap';

t.setTimeout(900_000); // software-emulated kernel: slow, and each helmctl is a node start-up
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { requireBpfLsm, startHelmd, probe, auditLines, helmctl, sh, HELM_ENTER, type Daemon, type AuditLine, RUNTIME_RULE } from './harness';
import { cgroup2Mount } from '../../daemon/control/cgroups';

const T = '/srv/helm-test';
const SOCK = '/run/helm/test.sock';
const AUDIT = `${T}/audit/audit.jsonl`;

const POLICY = `
apiVersion: helm/v1
kind: Policy
metadata:
  name: tester
spec:
  roles: [tester]
  allow:
${RUNTIME_RULE}
    - id: workspace
      read: [${T}/allowed/]
      write: [${T}/out/]
  block:
    - id: secret-file
      read: [${T}/allowed/secret.txt, ${T}/shadow]
    - id: secret-dir
      read: [${T}/blockdir/]
---
apiVersion: helm/v1
kind: Policy
metadata:
  name: observer
spec:
  roles: [observer]
  mode: dry-run
  allow:
${RUNTIME_RULE}
  block:
    - id: secret-observer
      read: [${T}/blockdir/]
`;

function buildTree(): void {
  fs.rmSync(T, { recursive: true, force: true });
  for (const d of ['allowed/sub', 'allowed/mnt', 'out', 'private', 'blockdir', 'audit']) fs.mkdirSync(`${T}/${d}`, { recursive: true });
  fs.writeFileSync(`${T}/allowed/ok.txt`, 'ok\n');
  fs.writeFileSync(`${T}/allowed/secret.txt`, 'secret\n');
  fs.writeFileSync(`${T}/private/data.txt`, 'private\n');
  fs.writeFileSync(`${T}/blockdir/inner.txt`, 'inner\n');
  fs.writeFileSync(`${T}/blockdir/linked.txt`, 'linked\n');
  fs.writeFileSync(`${T}/shadow`, 'root:*:\n');
  fs.symlinkSync('../private/data.txt', `${T}/allowed/link-private`);
  fs.symlinkSync('../blockdir/inner.txt', `${T}/allowed/link-blockdir`);
  // Hard links exist before the policy is compiled: that is when helm records them.
  fs.linkSync(`${T}/shadow`, `${T}/allowed/shadow-link`);
  fs.linkSync(`${T}/blockdir/linked.txt`, `${T}/allowed/hard-inner`);
  fs.writeFileSync(`${T}/policy.yaml`, POLICY);
}

const missing = requireBpfLsm();
if (missing) {
  t.fail(`VM suite cannot run: ${missing}`);
} else {
  let d: Daemon;
  t.before(async () => {
    buildTree();
    d = await startHelmd({ policy: [`${T}/policy.yaml`], audit: AUDIT, socket: SOCK });
    // A bind mount made after the policy was compiled: the blocked directory seen under an allowed one.
    sh(`mount --bind ${T}/blockdir ${T}/allowed/mnt`);
  });
  t.teardown(async () => {
    spawnSync('umount', [`${T}/allowed/mnt`]);
    if (d?.proc.exitCode === null) await d.stop();
  });

  const expectations: Record<string, { op: string; path: string; ok: boolean; auditPath?: string; rule?: string }> = {
    'allowed-read': { op: 'read', path: `${T}/allowed/ok.txt`, ok: true },
    'allowed-dir': { op: 'list', path: `${T}/allowed`, ok: true },
    'out-write': { op: 'write', path: `${T}/out/result.txt`, ok: true },
    unlisted: { op: 'read', path: `${T}/private/data.txt`, ok: false, rule: 'default' },
    'blocked-in-allowed': { op: 'read', path: `${T}/allowed/secret.txt`, ok: false, rule: 'secret-file' },
    'blocked-dir': { op: 'read', path: `${T}/blockdir/inner.txt`, ok: false, rule: 'secret-dir' },
    'symlink-to-unlisted': { op: 'read', path: `${T}/allowed/link-private`, ok: false, auditPath: `${T}/private/data.txt`, rule: 'default' },
    'symlink-to-blocked': { op: 'read', path: `${T}/allowed/link-blockdir`, ok: false, auditPath: `${T}/blockdir/inner.txt`, rule: 'secret-dir' },
    dotdot: { op: 'read', path: `${T}/allowed/../private/data.txt`, ok: false, auditPath: `${T}/private/data.txt`, rule: 'default' },
    'dotdot-blocked': { op: 'read', path: `${T}/allowed/sub/../../blockdir/inner.txt`, ok: false, auditPath: `${T}/blockdir/inner.txt`, rule: 'secret-dir' },
    'bind-mount': { op: 'read', path: `${T}/allowed/mnt/inner.txt`, ok: false, rule: 'secret-dir' },
    'hardlink-to-blocked-file': { op: 'read', path: `${T}/allowed/shadow-link`, ok: false, rule: 'secret-file' },
    'hardlink-into-blocked-dir': { op: 'read', path: `${T}/allowed/hard-inner`, ok: false, rule: 'secret-dir' },
    'write-read-only-dir': { op: 'write', path: `${T}/allowed/new.txt`, ok: false, rule: 'default' },
    'write-unlisted': { op: 'write', path: `${T}/private/new.txt`, ok: false, rule: 'default' },
  };

  t.test('a governed agent: allowed, unlisted, blocked, and every alias of a denied file', async (t) => {
    const cases = Object.entries(expectations).map(([name, e]) => `${name}:${e.op}:${e.path}`);
    const r = probe(d, { role: 'tester', name: 'e2e-probe' }, cases);
    t.equal(r.raw.status, 0, `helmctl run exits with the agent's status\n${r.raw.stderr}`);
    t.ok(r.pid > 0, 'the probe reported its pid');
    for (const [name, e] of Object.entries(expectations)) {
      const got = r.cases.get(name);
      if (e.ok) t.equal(got, 'ok', `${name}: ${e.op} ${e.path} is allowed`);
      else t.match(got, /^denied .*(Operation not permitted|Permission denied)/, `${name}: ${e.op} ${e.path} is denied with EPERM/EACCES`);
    }

    // Every denial is in the audit trail with the fields an investigator needs.
    const denied = Object.entries(expectations).filter(([, e]) => !e.ok);
    const lines = await auditLines(AUDIT, (ls) => denied.every(([, e]) => ls.some((l) => l.path === (e.auditPath ?? e.path) && l.agent === 'e2e-probe')));
    for (const [name, e] of denied) {
      const want = e.auditPath ?? e.path;
      const line = lines.find((l) => l.path === want && l.agent === 'e2e-probe');
      t.ok(line, `${name}: audit line for ${want}`);
      if (!line) continue;
      t.equal(line.decision, 'deny', `${name}: decision`);
      t.equal(line.op, e.op === 'list' ? 'read' : e.op, `${name}: op`);
      t.equal(line.role, 'tester', `${name}: role`);
      t.equal(line.rule, e.rule, `${name}: deciding rule`);
      t.equal(line.policy, e.rule === 'default' ? null : 'tester', `${name}: deciding policy`);
      t.equal(line.mode, 'enforce', `${name}: mode`);
      t.ok(line.pid > 0 && line.ppid > 0, `${name}: pid and ppid`);
      t.equal(line.exe, e.op === 'write' ? '/usr/bin/dash' : '/usr/bin/cat', `${name}: exe resolved by the kernel`);
      t.match(line.ts, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/, `${name}: RFC 3339 timestamp with ns`);
      t.match(line.cgroup.path ?? '', /e2e-probe$/, `${name}: cgroup path`);
    }
    const fromProbe = lines.filter((l) => l.agent === 'e2e-probe' && l.op === 'read');
    t.ok(fromProbe.some((l) => l.ppid === r.pid || l.pid === r.pid), 'the acting processes descend from the probe shell');
    const seqs = lines.map((l) => l.seq);
    t.same(seqs, [...seqs].sort((a, b) => a - b), 'seq increases line by line');
    t.notOk(lines.some((l) => l.agent === 'e2e-probe' && (l.path ?? '').startsWith(`${T}/allowed/ok.txt`)), 'allowed operations are not reported as denials');
  });

  t.test('an ungoverned process reads everything the agent could not', async (t) => {
    for (const [name, e] of Object.entries(expectations)) {
      if (e.op !== 'read') continue;
      t.doesNotThrow(() => fs.readFileSync(e.path), `${name}: ${e.path} readable outside helm`);
    }
  });

  t.test('a cgroup attached with helmctl attach governs cgroups created after the attach', async (t) => {
    const mount = cgroup2Mount()!;
    const cg = path.join(mount, 'helm-e2e-attached');
    const other = path.join(mount, 'helm-e2e-other');
    for (const dir of [cg, other]) {
      if (fs.existsSync(dir)) fs.rmdirSync(dir);
      fs.mkdirSync(dir);
    }
    t.teardown(() => {
      helmctl(['detach', '--socket', SOCK, '--cgroup', cg]);
      for (const dir of [`${cg}/late/deeper`, `${cg}/late`, cg, other]) if (fs.existsSync(dir)) fs.rmdirSync(dir);
    });
    const a = helmctl(['attach', '--socket', SOCK, '--cgroup', cg, '--role', 'tester', '--name', 'attached']);
    t.equal(a.status, 0, `attach succeeds: ${a.stderr}`);
    fs.mkdirSync(`${cg}/late/deeper`, { recursive: true });

    const inLate = spawnSync(HELM_ENTER, [`${cg}/late/deeper`, '--', 'cat', `${T}/private/data.txt`], { encoding: 'utf8' });
    t.not(inLate.status, 0, 'an unlisted file is denied two levels below the attached cgroup');
    t.match(inLate.stderr, /Operation not permitted/);
    const okLate = spawnSync(HELM_ENTER, [`${cg}/late/deeper`, '--', 'cat', `${T}/allowed/ok.txt`], { encoding: 'utf8' });
    t.equal(okLate.status, 0, 'an allowed file is readable there');
    t.equal(okLate.stdout, 'ok\n');

    const outside = spawnSync(HELM_ENTER, [other, '--', 'cat', `${T}/private/data.txt`], { encoding: 'utf8' });
    t.equal(outside.status, 0, 'a sibling cgroup that is not attached is not governed');

    const lines = await auditLines(AUDIT, (ls) => ls.some((l) => l.agent === 'attached'));
    const line = lines.find((l) => l.agent === 'attached');
    t.ok(line, 'the denial in the late child cgroup is audited under the attached agent');
    t.match(line?.cgroup.path ?? '', /helm-e2e-attached$/);

    const busy = helmctl(['agents', '--socket', SOCK, '--json']);
    t.equal(busy.status, 0);
    t.ok((JSON.parse(busy.stdout) as { name: string }[]).some((x) => x.name === 'attached'), 'helmctl agents lists the attached agent');
  });

  t.test('dry-run lets the operation through and audits would_deny', async (t) => {
    const forced = probe(d, { role: 'tester', name: 'dry-agent', dryRun: true }, [`unlisted:read:${T}/private/data.txt`, `blocked:read:${T}/blockdir/inner.txt`]);
    t.equal(forced.cases.get('unlisted'), 'ok', 'an agent forced into dry-run reads an unlisted file');
    t.equal(forced.cases.get('blocked'), 'ok', 'and a blocked one');

    const policyDry = probe(d, { role: 'observer', name: 'observer-agent' }, [`blocked:read:${T}/blockdir/inner.txt`, `unlisted:read:${T}/private/data.txt`]);
    t.equal(policyDry.cases.get('blocked'), 'ok', 'a dry-run policy lets a blocked read through');
    t.equal(policyDry.cases.get('unlisted'), 'ok', 'and the default deny is dry-run when every governing policy is');

    const want = (agent: string, p: string) => (l: AuditLine) => l.agent === agent && l.path === p;
    const lines = await auditLines(AUDIT, (ls) => ls.some(want('observer-agent', `${T}/private/data.txt`)) && ls.some(want('dry-agent', `${T}/blockdir/inner.txt`)));
    const checks: [string, string, string][] = [
      ['dry-agent', `${T}/private/data.txt`, 'default'],
      ['dry-agent', `${T}/blockdir/inner.txt`, 'secret-dir'],
      ['observer-agent', `${T}/blockdir/inner.txt`, 'secret-observer'],
      ['observer-agent', `${T}/private/data.txt`, 'default'],
    ];
    for (const [agent, p, rule] of checks) {
      const l = lines.find(want(agent, p));
      t.ok(l, `${agent}: ${p} audited`);
      t.equal(l?.decision, 'would_deny', `${agent}: ${p} is would_deny`);
      t.equal(l?.mode, 'dry-run');
      t.equal(l?.rule, rule, `${agent}: ${p} names rule ${rule}`);
    }
  });

  t.test('an agent whose role no policy names can do nothing, not even start', async (t) => {
    const r = probe(d, { role: 'nobody', name: 'nobody-agent' }, [`x:read:${T}/allowed/ok.txt`]);
    t.equal(r.raw.status, 126, 'exec of the agent itself is denied (helm-enter exits 126)');
    t.match(r.raw.stderr, /Operation not permitted/);
    const lines = await auditLines(AUDIT, (ls) => ls.some((l) => l.agent === 'nobody-agent'));
    const l = lines.find((x) => x.agent === 'nobody-agent');
    t.equal(l?.op, 'exec', `the first denial is the exec of the agent's program (${l?.path})`);
    t.equal(l?.reason, 'no-policy');
  });

  t.test('helmctl run refuses to start an agent helmd did not govern', async (t) => {
    const r = helmctl(['run', '--socket', '/run/helm/nothing-here.sock', '--role', 'tester', '--', 'true']);
    t.equal(r.status, 1);
    t.match(r.stderr, /not starting the agent/);
  });

  t.test('helmd stops cleanly on SIGTERM and leaves no socket', async (t) => {
    t.equal(await d.stop(), 0);
    t.notOk(fs.existsSync(SOCK), 'the control socket is removed');
  });

  t.test("the trail helmd wrote is one intact hash chain", async (t) => {
    const ok = helmctl(['audit', 'verify', AUDIT]);
    t.equal(ok.status, 0, `helmctl audit verify: ${ok.stdout}${ok.stderr}`);
    const lines = fs.readFileSync(AUDIT, 'utf8').split('\n');
    const tampered = `${T}/audit/tampered.jsonl`;
    fs.writeFileSync(tampered, [...lines.slice(0, 2), ...lines.slice(3)].join('\n'));
    const bad = helmctl(['audit', 'verify', tampered]);
    t.equal(bad.status, 1, 'a deleted line is found');
    t.match(bad.stderr, /tampered\.jsonl:3: the chain is broken/);
  });
}
