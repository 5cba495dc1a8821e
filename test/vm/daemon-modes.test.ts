// helmd as a whole: --dry-run enforces nothing and says so in every record; and
// when the audit reader falls behind, every decision is either in the trail or
// counted in a `lost` line — exactly, never silently.
import t from 'tap';
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { requireBpfLsm, startHelmd, probe, auditLines, helmctl, HELM_ENTER, type Daemon, type AuditLine, RUNTIME_RULE } from './harness';
import { cgroup2Mount } from '../../daemon/control/cgroups';

t.setTimeout(900_000);

const T = '/srv/helm-modes';
const POLICY = `
apiVersion: helm/v1
kind: Policy
metadata: { name: modes }
spec:
  roles: [worker]
  allow:
${RUNTIME_RULE}
  block:
    - id: secret
      read: [${T}/secret.txt]
`;

const missing = requireBpfLsm();
if (missing) {
  t.fail(`VM suite cannot run: ${missing}`);
} else {
  t.before(() => {
    fs.rmSync(T, { recursive: true, force: true });
    fs.mkdirSync(T, { recursive: true });
    fs.writeFileSync(`${T}/secret.txt`, 'secret\n');
    fs.writeFileSync(`${T}/unlisted.txt`, 'unlisted\n');
    fs.writeFileSync(`${T}/policy.yaml`, POLICY);
  });

  t.test('helmd --dry-run decides everything and enforces nothing', async (t) => {
    const audit = `${T}/dry/audit.jsonl`;
    const d: Daemon = await startHelmd({ policy: [`${T}/policy.yaml`], audit, socket: '/run/helm/dry.sock', extra: ['--dry-run'] });
    t.teardown(async () => {
      if (d.proc.exitCode === null) await d.stop();
    });
    t.match(d.log(), /DRY-RUN: denials are audited as would_deny and NOT enforced/, 'the log says loudly that nothing is enforced');
    const r = probe(d, { role: 'worker', name: 'dry-worker' }, [`secret:read:${T}/secret.txt`, `unlisted:read:${T}/unlisted.txt`, `w:write:${T}/new.txt`]);
    t.equal(r.cases.get('secret'), 'ok');
    t.equal(r.cases.get('unlisted'), 'ok');
    t.equal(r.cases.get('w'), 'ok');
    const lines = await auditLines(audit, (ls) => ls.filter((l) => l.agent === 'dry-worker').length >= 3);
    const by = (p: string, op = 'read') => lines.find((l) => l.agent === 'dry-worker' && l.path === p && l.op === op);
    t.hasStrict(by(`${T}/secret.txt`), { decision: 'would_deny', rule: 'secret', mode: 'dry-run' });
    t.hasStrict(by(`${T}/unlisted.txt`), { decision: 'would_deny', rule: 'default', mode: 'dry-run' });
    t.hasStrict(by(`${T}/new.txt`, 'write'), { decision: 'would_deny', rule: 'default' });
    t.notOk(lines.some((l) => l.decision === 'deny'), 'no record claims an enforced deny');
  });

  t.test('a frozen helmd: every denial is audited or counted lost, exactly', async (t) => {
    const audit = `${T}/lost/audit.jsonl`;
    const sock = '/run/helm/lost.sock';
    const d: Daemon = await startHelmd({ policy: [`${T}/policy.yaml`], audit, socket: sock });
    const cg = `${cgroup2Mount()}/helm-lost`;
    if (fs.existsSync(cg)) fs.rmdirSync(cg);
    fs.mkdirSync(cg);
    t.teardown(async () => {
      d.proc.kill('SIGCONT');
      helmctl(['detach', '--socket', sock, '--cgroup', cg]);
      if (fs.existsSync(cg)) fs.rmdirSync(cg);
      if (d.proc.exitCode === null) await d.stop();
    });
    t.equal(helmctl(['attach', '--socket', sock, '--cgroup', cg, '--role', 'worker', '--name', 'flood']).status, 0);

    const flood = (n: number) =>
      spawnSync(HELM_ENTER, [cg, '--', 'perl', '-e', `my $n = 0; for (1..${n}) { open(my $f, '<', '${T}/secret.txt') or $n++ } print "$n\\n"`], { encoding: 'utf8' });
    const fromFlood = (ls: AuditLine[]) => ls.filter((l) => l.agent === 'flood');
    const lostIn = (ls: AuditLine[]) => ls.filter((l) => l.type === 'lost').reduce((sum, l) => sum + Number((l as unknown as { count: string }).count), 0);

    // Calibration, with helmd draining: what else perl itself is denied on start-up.
    const one = flood(1);
    t.equal(one.stdout.trim(), '1', `calibration run: ${one.stderr}`);
    const calibrated = await auditLines(audit, (ls) => fromFlood(ls).some((l) => l.path === `${T}/secret.txt`));
    const extra = fromFlood(calibrated).filter((l) => l.path !== `${T}/secret.txt`).length;
    const before = fromFlood(calibrated).length;
    t.equal(lostIn(calibrated), 0, 'nothing lost while helmd drains');

    // 20000 denials while helmd cannot drain: the 4 MiB ring holds about 6800.
    const N = 20000;
    d.proc.kill('SIGSTOP');
    const r = flood(N);
    d.proc.kill('SIGCONT');
    t.equal(r.status, 0, `the flood ran: ${r.stderr}`);
    t.equal(Number(r.stdout.trim()), N, 'every open was denied, with or without a reader');

    const want = N + extra;
    const lines = await auditLines(audit, (ls) => fromFlood(ls).length - before + lostIn(ls) >= want, 60_000);
    const audited = fromFlood(lines).length - before;
    const lostCount = lostIn(lines);
    t.ok(lostCount > 0, `some events did not fit while helmd was frozen (lost ${lostCount})`);
    t.ok(audited > 0, `the ring's contents reached the trail (${audited})`);
    t.equal(audited + lostCount, want, 'audited + counted lost = every denial');
    const lost = lines.find((l) => l.type === 'lost') as unknown as { count: string; total: string; since: string; ts: string } | undefined;
    t.match(lost, { count: /^\d+$/, total: /^\d+$/, since: /Z$/, ts: /Z$/ }, 'the lost line carries count, total and the interval');
    const status = helmctl(['status', '--socket', sock]);
    t.equal(JSON.parse(status.stdout).events_lost, String(lostCount), 'helmctl status reports the same loss');
  });
}
