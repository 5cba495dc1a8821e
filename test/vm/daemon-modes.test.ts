// helmd as a whole: --dry-run enforces nothing and says so in every record.
// (When the audit reader falls behind: test/vm/audit.test.ts.)
import t from 'tap';
import fs from 'node:fs';
import { requireBpfLsm, startHelmd, probe, auditLines, type Daemon, RUNTIME_RULE } from './harness';

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
}
