// The escape suite: a governed agent running as root tries every way around the
// guard it could use. Each attempt must be stopped (EPERM/EACCES or the
// operation's denial) and audited, while the same attempt outside succeeds.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { requireBpfLsm, startHelmd, auditLines, helmctl, ROOT, RUNTIME_RULE, type Daemon } from './harness';

import { cgroup2Mount } from '../../daemon/control/cgroups';

t.setTimeout(900_000);

const T = '/srv/helm-esc';
const SOCK = '/run/helm/esc.sock';
const AUDIT_DIR = '/var/log/helm-esc';
const AUDIT = `${AUDIT_DIR}/audit.jsonl`;
// A file rotated out of the trail: helmd never listed it, it is helm's because of where it is.
const ROTATED = `${AUDIT_DIR}/audit.000001.20261130T000000Z.jsonl`;
const POLICY_DIR = '/srv/helm-esc-policy';
const POLICY = `${POLICY_DIR}/policy.yaml`;
const TOOLS = path.join(ROOT, 'build', 'escape-tools');
const FD_SOCK = '/run/helm-esc-fd.sock';
// xattr hooks name objects from the task's root filesystem only (README, threat model)
const ROOTFS_FILE = '/var/tmp/helm-esc-xattr.txt';

const POLICY_TEXT = `
apiVersion: helm/v1
kind: Policy
metadata: { name: escape }
spec:
  roles: [escaper]
  allow:
${RUNTIME_RULE}
    - { id: tools, exec: [${TOOLS}] }
    # the agent may reach the socket an outsider passes an fd over: the fd itself is what is refused
    - { id: fd-socket, connect: ["unix:${FD_SOCK}"] }
    - { id: workspace, read: [${T}/ro/, ${T}/rw/], write: [${T}/rw/, ${ROOTFS_FILE}] }
    # allowed by policy, so that only self-protection can stop the agent there
    - { id: helm-files, read: [${POLICY_DIR}/, ${AUDIT_DIR}/], write: [${POLICY_DIR}/, ${AUDIT_DIR}/] }
    - { id: scripts, exec: [${T}/ro/script-ok.sh, ${T}/ro/script-bad.sh] }
  block:
    - { id: secret, read: [${T}/secret.txt], write: [${T}/secret.txt] }
`;

function buildTree(): void {
  fs.rmSync(T, { recursive: true, force: true });
  for (const d of ['ro/sub', 'ro/bin', 'rw']) fs.mkdirSync(`${T}/${d}`, { recursive: true });
  fs.writeFileSync(`${T}/ro/file.txt`, 'allowed-content\n');
  fs.writeFileSync(`${T}/ro/victim.txt`, 'victim\n');
  fs.writeFileSync(`${T}/secret.txt`, 'SECRET\n');
  fs.copyFileSync('/usr/bin/true', `${T}/ro/bin/mytrue`);
  fs.chmodSync(`${T}/ro/bin/mytrue`, 0o755);
  const script = (name: string, interp: string, body: string) => {
    fs.writeFileSync(`${T}/ro/${name}`, `#!${interp}\n${body}\n`);
    fs.chmodSync(`${T}/ro/${name}`, 0o755);
  };
  script('script-ok.sh', '/bin/sh', 'echo script-ok');
  script('script-bad.sh', `${T}/ro/bin/mytrue`, ''); // its interpreter has no exec rule
  script('unlisted.sh', '/bin/sh', 'echo unlisted-ran');
  fs.mkdirSync(path.dirname(POLICY), { recursive: true });
  fs.writeFileSync(POLICY, POLICY_TEXT);
}

interface Attempt {
  cmd: string;
  /** The agent must be stopped (default), or allowed (a control showing the rule works). */
  allowed?: boolean;
  /** What the output must show, beyond the exit status. */
  expect?: RegExp;
  /** How this attempt reports being stopped, when not with EPERM/EACCES's own words. */
  denial?: RegExp;
}

/** Runs every attempt inside one governed agent; returns "rc=N output" per name. */
function runAgent(d: Daemon, attempts: Record<string, Attempt>): Map<string, { rc: number; out: string }> {
  const lines = Object.entries(attempts).map(([name, a]) => `out=$( { ${a.cmd} ; } 2>&1 ); echo "CASE ${name} rc=$? $(echo "$out" | tr '\\n' ' ')"`);
  const r = helmctl(['run', '--socket', d.socket, '--role', 'escaper', '--name', 'escaper', '--', 'sh', '-c', lines.join('\n')]);
  const out = new Map<string, { rc: number; out: string }>();
  for (const line of r.stdout.split('\n')) {
    const m = /^CASE (\S+) rc=(\d+) ?(.*)$/.exec(line);
    if (m) out.set(m[1], { rc: Number(m[2]), out: m[3] });
  }
  if (out.size === 0) throw new Error(`the agent produced nothing: ${r.stderr}`);
  return out;
}

const DENIED = /ERR (EPERM|EACCES)|Operation not permitted|Permission denied/;
const stopped = (r: { rc: number; out: string } | undefined, a: Attempt) => !!r && (a.denial ?? DENIED).test(r.out);

const missing = requireBpfLsm();
if (missing) {
  t.fail(`VM suite cannot run: ${missing}`);
} else {
  let d: Daemon;
  t.before(async () => {
    buildTree();
    d = await startHelmd({ policy: [POLICY], audit: AUDIT, socket: SOCK });
    fs.writeFileSync(ROTATED, 'an earlier part of the trail\n');
  });
  t.teardown(async () => {
    if (d?.proc.exitCode === null) await d.stop();
  });

  t.test('every route around the guard is stopped, and audited', async (t) => {
    const outsider = spawn('sleep', ['300'], { stdio: 'ignore' });
    t.teardown(() => outsider.kill('SIGKILL'));
    const sender = spawn(TOOLS, ['send-fd', FD_SOCK, `${T}/secret.txt`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((r) => sender.stdout!.once('data', r)); // READY
    const helmdPid = d.proc.pid!;
    const cg = cgroup2Mount()!;

    const attempts: Record<string, Attempt> = {
      // exec: the binary, a script and its interpreter, the loader, memfd
      'exec-allowed-script': { cmd: `${T}/ro/script-ok.sh`, allowed: true, expect: /script-ok/ },
      'exec-unlisted-binary': { cmd: `${T}/ro/bin/mytrue` },
      'exec-unlisted-script': { cmd: `${T}/ro/unlisted.sh` },
      'exec-script-interpreter-not-allowed': { cmd: `${T}/ro/script-bad.sh` },
      // ld.so reports a refused mmap in its own words
      'exec-through-the-loader': { cmd: `/lib64/ld-linux-x86-64.so.2 ${T}/ro/bin/mytrue`, denial: /failed to map segment|Operation not permitted/ },
      'exec-memfd': { cmd: `${TOOLS} memfd-exec ${T}/ro/bin/mytrue` },
      // write covers every mutation
      'create-allowed': { cmd: `: > ${T}/rw/new.txt && mkdir ${T}/rw/d && mv ${T}/rw/new.txt ${T}/rw/d/moved.txt && ln -s x ${T}/rw/l && chmod 600 ${T}/rw/d/moved.txt && rm ${T}/rw/d/moved.txt && rmdir ${T}/rw/d`, allowed: true },
      create: { cmd: `: > ${T}/ro/new.txt` },
      mkdir: { cmd: `mkdir ${T}/ro/newdir` },
      unlink: { cmd: `rm -f ${T}/ro/victim.txt` },
      rmdir: { cmd: `rmdir ${T}/ro/sub` },
      'rename-out-of-read-only': { cmd: `mv ${T}/ro/victim.txt ${T}/rw/stolen.txt` },
      'rename-into-read-only': { cmd: `: > ${T}/rw/mine.txt; mv ${T}/rw/mine.txt ${T}/ro/planted.txt` },
      'hardlink-blocked-file': { cmd: `ln ${T}/secret.txt ${T}/rw/secret-link` },
      'hardlink-read-only-file': { cmd: `ln ${T}/ro/victim.txt ${T}/rw/victim-link` },
      symlink: { cmd: `ln -s /etc/shadow ${T}/ro/sym` },
      chmod: { cmd: `chmod 777 ${T}/ro/victim.txt` },
      chown: { cmd: `chown 65534 ${T}/ro/victim.txt` },
      setxattr: { cmd: `${TOOLS} setxattr ${T}/ro/victim.txt` },
      'setxattr-allowed': { cmd: `: > ${ROOTFS_FILE}; ${TOOLS} setxattr ${ROOTFS_FILE}`, allowed: true, expect: /^OK|ERR EOPNOTSUPP/ },
      'setxattr-unnamed-filesystem': { cmd: `: > ${T}/rw/x.txt; ${TOOLS} setxattr ${T}/rw/x.txt` },
      'truncate-open': { cmd: `truncate -s 0 ${T}/ro/victim.txt` },
      // truncate(2) by name: no open at all, the path_truncate hook decides
      truncate: { cmd: `perl -e 'truncate("${T}/ro/victim.txt", 0) or die "$!\\n"'` },
      // the same answer by every route
      'route-allowed-io-uring': { cmd: `${TOOLS} uring-open ${T}/ro/file.txt`, allowed: true, expect: /OK allowed-content/ },
      'route-io-uring': { cmd: `${TOOLS} uring-open ${T}/secret.txt` },
      'route-openat2': { cmd: `${TOOLS} openat2 ${T}/secret.txt` },
      'route-opath-reopen': { cmd: `${TOOLS} opath-reopen ${T}/secret.txt` },
      'route-fd-passed-from-outside': { cmd: `${TOOLS} recv-fd ${FD_SOCK}` },
      'route-renamed-process': { cmd: `${TOOLS} renamed-open helmd ${T}/secret.txt` },
      // self-protection
      bpf: { cmd: `${TOOLS} bpf` },
      'signal-helmd': { cmd: `${TOOLS} kill ${helmdPid} 15` },
      'signal-host-process': { cmd: `${TOOLS} kill ${outsider.pid} 9` },
      'signal-own-child': { cmd: `sleep 30 & ${TOOLS} kill $! 9`, allowed: true, expect: /^OK/ },
      'ptrace-helmd': { cmd: `${TOOLS} ptrace ${helmdPid}` },
      mount: { cmd: `${TOOLS} mount ${T}/rw` },
      umount: { cmd: `${TOOLS} umount /sys/fs/bpf` },
      chroot: { cmd: `${TOOLS} chroot ${T}/rw` },
      'pivot-root': { cmd: `mkdir -p ${T}/rw/old; ${TOOLS} pivot-root ${T}/rw ${T}/rw/old` },
      kexec: { cmd: `${TOOLS} kexec-file ${T}/ro/file.txt` },
      'write-bpffs': { cmd: `: > /sys/fs/bpf/helm-escape` },
      'load-module': { cmd: `${TOOLS} finit-module ${T}/ro/file.txt` },
      'leave-cgroup': { cmd: `echo $$ > ${cg}/cgroup.procs` },
      'make-cgroup': { cmd: `mkdir ${cg}/helm-escape` },
      'read-policy': { cmd: `cat ${POLICY}` },
      'write-policy': { cmd: `echo "# x" >> ${POLICY}` },
      'read-audit': { cmd: `cat ${AUDIT}` },
      'delete-audit': { cmd: `rm -f ${AUDIT}` },
      'read-rotated-audit': { cmd: `cat ${ROTATED}` },
      'append-rotated-audit': { cmd: `echo forged >> ${ROTATED}` },
      'truncate-rotated-audit': { cmd: `perl -e 'truncate("${ROTATED}", 0) or die "$!\\n"'` },
      'rename-rotated-audit': { cmd: `mv ${ROTATED} ${T}/rw/moved.jsonl` },
      'control-socket': { cmd: `${TOOLS} connect ${SOCK}` },
      'symlink-race': { cmd: `${TOOLS} symlink-race ${T}/rw/race ${T}/ro/file.txt ${T}/secret.txt 3000`, allowed: true, expect: /OK allowed=[1-9]\d* secret=0 denied=[1-9]/ },
    };
    const results = runAgent(d, attempts);
    sender.kill();

    let stoppedCount = 0;
    const escapes = Object.entries(attempts).filter(([, a]) => !a.allowed);
    for (const [name, a] of Object.entries(attempts)) {
      const r = results.get(name);
      if (a.allowed) {
        t.equal(r?.rc, 0, `${name}: allowed (${r?.out})`);
      } else {
        const ok = stopped(r, a) && r!.rc !== undefined;
        if (ok) stoppedCount++;
        t.ok(ok, `${name}: stopped (${r ? `rc=${r.rc} ${r.out}` : 'no result'})`);
      }
      if (a.expect) t.match(r?.out ?? '', a.expect, `${name}: ${a.expect}`);
    }
    t.comment(`escape attempts: ${escapes.length}, stopped: ${stoppedCount}`);
    t.equal(stoppedCount, escapes.length, 'every escape attempt was stopped');

    // Nothing changed that the agent tried to change.
    t.ok(fs.existsSync(`${T}/ro/victim.txt`) && fs.readFileSync(`${T}/ro/victim.txt`, 'utf8') === 'victim\n', 'the victim file is intact');
    for (const p of ['ro/new.txt', 'ro/newdir', 'rw/stolen.txt', 'ro/planted.txt', 'rw/secret-link', 'rw/victim-link', 'ro/sym']) {
      t.notOk(fs.existsSync(`${T}/${p}`), `${p} was not created (a denied create leaves nothing behind)`);
    }
    t.ok(fs.existsSync(`${T}/ro/sub`), 'the directory was not removed');
    t.equal(d.proc.exitCode, null, 'helmd is alive');
    t.equal(outsider.exitCode, null, 'the host process is alive');
    t.ok(fs.existsSync(AUDIT), 'the audit trail is still there');
    t.equal(fs.readFileSync(ROTATED, 'utf8'), 'an earlier part of the trail\n', 'the rotated file is intact');
    t.notOk(fs.existsSync(`${cg}/helm-escape`), 'no cgroup was made');
    t.notOk(fs.existsSync('/sys/fs/bpf/helm-escape'), 'nothing was written to bpffs');

    // Each kind of denial is in the trail.
    const lines = await auditLines(AUDIT, (ls) => ls.some((l) => l.op === 'control'));
    const mine = lines.filter((l) => l.agent === 'escaper') as unknown as { op: string; detail?: string; reason: string; path: string | null; target_pid?: number }[];
    const has = (what: string, f: (l: (typeof mine)[number]) => boolean) => t.ok(mine.some(f), `audited: ${what}`);
    for (const detail of ['create', 'mkdir', 'unlink', 'rmdir', 'rename-from', 'rename-to', 'link-from', 'symlink', 'chmod', 'chown', 'truncate', 'xattr', 'mmap-exec', 'receive']) {
      has(`write/exec detail ${detail}`, (l) => l.detail === detail);
    }
    for (const op of ['bpf', 'signal', 'ptrace', 'mount', 'module', 'control']) {
      has(`self-protection ${op}`, (l) => l.op === op && l.reason === 'self-protection');
    }
    for (const p of [POLICY, AUDIT, ROTATED]) has(`${p} is protected whatever the policy says`, (l) => l.op === 'control' && l.path === p);
    has('the signal to helmd names it', (l) => l.op === 'signal' && l.target_pid === helmdPid);
    has('an exec denial', (l) => l.op === 'exec' && l.path === `${T}/ro/bin/mytrue`);
  });

  t.test('the same attempts outside helm succeed', async (t) => {
    const out = (args: string[]) => spawnSync(TOOLS, args, { encoding: 'utf8' }).stdout.trim();
    t.match(out(['uring-open', `${T}/secret.txt`]), /^OK SECRET/);
    t.match(out(['openat2', `${T}/secret.txt`]), /^OK SECRET/);
    t.match(out(['opath-reopen', `${T}/secret.txt`]), /^OK SECRET/);
    t.match(out(['bpf']), /^OK/);
    t.match(out(['renamed-open', 'helmd', `${T}/secret.txt`]), /^OK SECRET/);
    t.notMatch(out(['finit-module', `${T}/ro/file.txt`]), /EPERM/, 'a bad module is refused for its content, not by helm');
    t.notMatch(out(['kexec-file', `${T}/ro/file.txt`]), /EPERM/, 'a bad kexec image is refused for its content, not by helm');
    fs.mkdirSync(`${T}/rw/old2`, { recursive: true });
    t.notMatch(out(['pivot-root', `${T}/rw`, `${T}/rw/old2`]), /EPERM/, 'pivot_root outside fails for its arguments, not by helm');
    t.equal(spawnSync(`${T}/ro/bin/mytrue`).status, 0);
  });
}
