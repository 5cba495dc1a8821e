// cgroup v2 handling on the host: inspectCgroup's identity and refusals, cgroupHasProcesses
// with real processes moved in, and build/helm-enter joining a cgroup before it execs.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { CgroupError, cgroupHasProcesses, inspectCgroup } from '../../daemon/control/cgroups';
import { BUILD, removeCgroupTree, requireRoot, run, scratchCgroup, scratchDir, v2Mount, type Scope } from './host';

const HELM_ENTER = path.join(BUILD, 'helm-enter');

/** A `sleep` child, killed at teardown. */
function sleeper(scope: Scope): ChildProcess {
  const child = spawn('sleep', ['300'], { stdio: 'ignore' });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  scope.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  return child;
}

function moveInto(cgroup: string, pid: number): void {
  fs.writeFileSync(path.join(cgroup, 'cgroup.procs'), `${pid}\n`);
}

/** The v2 line of a process's /proc/<pid>/cgroup ("0::/path"). */
function v2CgroupOf(text: string): string | undefined {
  return text
    .split('\n')
    .find((l) => l.startsWith('0::'))
    ?.slice(3);
}

function main(): void {
  const mount = v2Mount();
  t.comment(`cgroup v2 at ${mount}`);

  t.test('inspectCgroup: id is the directory inode, level counts from the mount', async (t) => {
    const cg = scratchCgroup(t, 'inspect');
    const child = path.join(cg, 'child');
    fs.mkdirSync(child);
    const grandchild = path.join(child, 'grandchild');
    fs.mkdirSync(grandchild);
    for (const [dir, level] of [
      [cg, 1],
      [child, 2],
      [grandchild, 3],
    ] as const) {
      const info = inspectCgroup(dir);
      t.equal(info.id, fs.statSync(dir, { bigint: true }).ino, `${path.relative(mount, dir)}: id is the inode`);
      t.equal(info.level, level, `${path.relative(mount, dir)}: level ${level}`);
      t.equal(info.path, dir, 'path');
    }
    t.not(inspectCgroup(cg).id, inspectCgroup(child).id, 'different cgroups, different ids');

    // A symlink to a cgroup is the cgroup it points at.
    const tmp = scratchDir(t, 'cglink');
    fs.symlinkSync(child, path.join(tmp, 'link'));
    t.same(inspectCgroup(path.join(tmp, 'link')), inspectCgroup(child), 'a symlink resolves to the cgroup');

    // A cgroup whose name starts with ".." is still below the mount, at any level.
    const topDots = path.join(mount, `..helm-host-dots-${process.pid}`);
    fs.mkdirSync(topDots);
    t.teardown(() => removeCgroupTree(topDots));
    const dots = path.join(cg, '..dots');
    fs.mkdirSync(dots);
    t.same(inspectCgroup(topDots), { path: topDots, id: fs.statSync(topDots, { bigint: true }).ino, level: 1 }, 'a top-level name starting with ".." is accepted');
    t.same(inspectCgroup(dots), { path: dots, id: fs.statSync(dots, { bigint: true }).ino, level: 2 }, 'a nested name starting with ".." is accepted');
  });

  t.test('inspectCgroup refuses what is not a governable cgroup', async (t) => {
    const cg = scratchCgroup(t, 'refuse');
    const refusals: [string, string, RegExp][] = [
      ['the root cgroup', mount, /root cgroup/],
      ['the root cgroup, written with a trailing slash', `${mount}/`, /root cgroup/],
      ['a non-cgroup directory (/tmp)', '/tmp', /not below the cgroup v2 mount/],
      ['a relative path', path.relative('/', cg), /must be absolute/],
      ['a path outside the mount', '/etc', /not below the cgroup v2 mount/],
      ['a path that climbs out of the mount', path.join(cg, '..', '..'), /not below the cgroup v2 mount/],
      ['a file in a cgroup', path.join(cg, 'cgroup.procs'), /not a cgroup directory/],
      ['a cgroup that does not exist', path.join(cg, 'nonexistent'), /nonexistent/],
    ];
    if (path.dirname(mount) !== '/') {
      // A v1 hierarchy or the tmpfs above the v2 mount (hybrid hosts): not cgroup v2.
      refusals.push(['the directory above the mount', path.dirname(mount), /not below the cgroup v2 mount/]);
    }
    for (const [what, p, msg] of refusals) {
      let err: unknown;
      try {
        inspectCgroup(p);
      } catch (e) {
        err = e;
      }
      t.type(err, CgroupError, `${what}: CgroupError`);
      t.match((err as Error)?.message, msg, `${what}: ${(err as Error)?.message}`);
    }
  });

  t.test('cgroupHasProcesses follows processes in and below the cgroup', async (t) => {
    const cg = scratchCgroup(t, 'procs');
    const nested = path.join(cg, 'nested');
    fs.mkdirSync(nested);
    t.equal(cgroupHasProcesses(cg), false, 'an empty cgroup has none');
    t.equal(cgroupHasProcesses(nested), false, 'its empty child has none');

    const child = sleeper(t);
    await new Promise((r) => child.once('spawn', r));
    moveInto(cg, child.pid!);
    t.equal(v2CgroupOf(fs.readFileSync(`/proc/${child.pid}/cgroup`, 'utf8')), `/${path.relative(mount, cg)}`, 'the sleep moved');
    t.equal(cgroupHasProcesses(cg), true, 'true with a process in it');
    t.equal(cgroupHasProcesses(nested), false, 'the child cgroup still has none');

    moveInto(nested, child.pid!);
    t.equal(fs.readFileSync(path.join(cg, 'cgroup.procs'), 'utf8').trim(), '', 'the parent itself is empty');
    t.equal(cgroupHasProcesses(cg), true, 'true with a process in a nested cgroup');
    t.equal(cgroupHasProcesses(nested), true, 'and for the nested cgroup itself');

    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    let empty = false;
    for (let i = 0; i < 100 && !empty; i++) {
      empty = !cgroupHasProcesses(cg);
      if (!empty) await new Promise((r) => setTimeout(r, 10));
    }
    t.equal(empty, true, 'false again once the process is gone');
  });

  t.test('helm-enter joins the cgroup before exec and exits with the command status', async (t) => {
    t.ok(fs.existsSync(HELM_ENTER), `${HELM_ENTER} is built`);
    const cg = scratchCgroup(t, 'enter');
    const r = await run(HELM_ENTER, [cg, '--', 'sh', '-c', 'cat /proc/self/cgroup; exit 7'], { timeoutMs: 30_000 });
    t.equal(r.code, 7, "exits with the command's status (7)");
    t.equal(v2CgroupOf(r.stdout), `/${path.relative(mount, cg)}`, `the command ran in ${cg}`);
    t.equal(r.stderr, '', 'nothing on stderr');
    t.equal(cgroupHasProcesses(cg), false, 'nothing left in the cgroup');

    const ok = await run(HELM_ENTER, [cg, '--', 'true'], { timeoutMs: 30_000 });
    t.equal(ok.code, 0, 'exits 0 when the command does');

    const missing = await run(HELM_ENTER, [cg, '--', '/nonexistent/helm-no-such-command'], { timeoutMs: 30_000 });
    t.equal(missing.code, 127, 'a missing command exits 127');
    t.match(missing.stderr, /cannot run \/nonexistent\/helm-no-such-command: No such file or directory/, 'and says so');

    const tmp = scratchDir(t, 'enter');
    const notExec = path.join(tmp, 'script.sh');
    fs.writeFileSync(notExec, '#!/bin/sh\nexit 0\n', { mode: 0o644 });
    const noexec = await run(HELM_ENTER, [cg, '--', notExec], { timeoutMs: 30_000 });
    t.equal(noexec.code, 126, 'a command that cannot be executed exits 126');

    const nocg = path.join(mount, `helm-host-absent-${process.pid}`);
    const absent = await run(HELM_ENTER, [nocg, '--', 'sh', '-c', 'echo ran'], { timeoutMs: 30_000 });
    t.equal(absent.code, 125, 'a non-existent cgroup exits 125');
    t.match(absent.stderr, new RegExp(`helm-enter: cannot open ${nocg}/cgroup.procs: No such file or directory`), 'with a message naming it');
    t.equal(absent.stdout, '', 'and the command never ran');
    t.notOk(fs.existsSync(nocg), 'nor was the cgroup created');

    const usage = await run(HELM_ENTER, [cg, 'sh'], { timeoutMs: 30_000 });
    t.equal(usage.code, 125, 'a usage error exits 125');
    t.match(usage.stderr, /usage: helm-enter CGROUP_DIR -- CMD/, 'with the usage');
  });
}

if (requireRoot()) main();
