// On a fully preemptible kernel (preempt=full) a BPF LSM program can be preempted in the
// middle of a decision, and another task's decision then runs on the same CPU. Decisions
// must not share scratch space: two processes pinned to one CPU open, as fast as they can,
// one a file the agent may read and one it may not; not one open may go the other's way.
// scripts/test-all.sh boots a VM of its own for this suite, with preempt=full.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, RUNTIME_RULE, auditLines, helmctlAsync, requireBpfLsm, startHelmd } from '../vm/harness';

t.setTimeout(900_000);
const TOOLS = path.join(ROOT, 'build', 'escape-tools');
const SECONDS = Number(process.env.HELM_RACE_SECONDS ?? 20);

async function main(): Promise<void> {
  const why = requireBpfLsm();
  if (why) return void t.fail(why);
  const cmdline = fs.readFileSync('/proc/cmdline', 'utf8');
  t.match(cmdline, /\bpreempt=full\b/, 'the kernel runs fully preemptible (else this suite proves nothing)');

  const dir = fs.mkdtempSync('/srv/helm-preempt-');
  const files = fs.mkdtempSync('/srv/helm-preempt-files-');
  t.teardown(() => {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(files, { recursive: true, force: true });
  });
  const allowed = path.join(files, 'allowed.txt');
  const secret = path.join(files, 'secret.txt');
  fs.writeFileSync(allowed, 'allowed\n');
  fs.writeFileSync(secret, 'SECRET\n');
  const policy = path.join(dir, 'race.yaml');
  fs.writeFileSync(
    policy,
    `apiVersion: helm/v1\nkind: Policy\nmetadata: { name: race }\nspec:\n  roles: [racer]\n  allow:\n${RUNTIME_RULE}\n    - { id: tools, exec: [${TOOLS}] }\n    - { id: allowed, read: [${allowed}] }\n`,
  );
  const d = await startHelmd({ policy: [policy], audit: path.join(dir, 'audit.jsonl'), socket: path.join(dir, 'helmd.sock') });
  t.teardown(() => d.stop());

  const r = await helmctlAsync(['run', '--socket', d.socket, '--role', 'racer', '--name', 'racer', '--', TOOLS, 'preempt-race', allowed, secret, String(SECONDS)], (SECONDS + 300) * 1000);
  t.equal(r.status, 0, 'the race ran', { stderr: r.stderr });
  const m = /allowed_opens=(\d+) allowed_denied=(\d+) denied_opens=(\d+) denied_allowed=(\d+)/.exec(r.stdout);
  t.ok(m, 'the race reported its counts', { stdout: r.stdout });
  if (!m) return;
  const [allowedOpens, allowedDenied, deniedOpens, deniedAllowed] = m.slice(1).map(Number);
  t.comment(`${SECONDS} s on one CPU: ${allowedOpens} opens of the allowed file, ${deniedOpens} of the secret one`);
  t.ok(allowedOpens > 1000 && deniedOpens > 1000, 'both processes opened their file thousands of times');
  t.equal(deniedAllowed, 0, 'no open of the secret file was allowed (it would have been decided on the other path)');
  t.equal(allowedDenied, 0, 'no open of the allowed file was denied');
  // A denial is audited under the path that was really opened.
  const lines = await auditLines(d.audit, (ls) => ls.some((l) => l.type === 'decision' && l.agent === 'racer' && l.decision === 'deny'), 60_000);
  const denials = lines.filter((l) => l.type === 'decision' && l.agent === 'racer' && l.decision === 'deny');
  t.ok(denials.length > 0, 'the secret opens were audited');
  t.same([...new Set(denials.map((l) => l.path))], [secret], 'every audited denial names the secret file, none the allowed one');
}

void main();
