// Finding and validating cgroup v2 directories.
import fs from 'node:fs';
import path from 'node:path';
import { HELM_MAX_CGROUP_DEPTH } from '../kernel/limits';

const CGROUP2_SUPER_MAGIC = 0x63677270;

/** The cgroup v2 mount point, read from /proc/mounts (hybrid hosts mount it at /sys/fs/cgroup/unified). */
export function cgroup2Mount(mounts = fs.readFileSync('/proc/mounts', 'utf8')): string | undefined {
  for (const line of mounts.split('\n')) {
    const [, where, type] = line.split(' ');
    if (type === 'cgroup2') return where.replace(/\\040/g, ' ');
  }
  return undefined;
}

export interface CgroupInfo {
  path: string;
  /** The kernel's cgroup id: the inode number of the cgroup's directory. */
  id: bigint;
  /** Levels below the root of the hierarchy (the root is 0). */
  level: number;
}

export class CgroupError extends Error {}

export function inspectCgroup(p: string, mount = cgroup2Mount()): CgroupInfo {
  if (!path.isAbsolute(p)) throw new CgroupError(`cgroup path must be absolute: ${p}`);
  if (!mount) throw new CgroupError('no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup)');
  let real: string;
  try {
    real = fs.realpathSync(p);
  } catch (e) {
    throw new CgroupError(`${p} is not a cgroup directory: ${(e as Error).message}`);
  }
  const rel = path.relative(mount, real);
  // "..x" is a child named "..x"; only ".." itself or "../..." leaves the mount.
  if (rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) throw new CgroupError(`${p} is not below the cgroup v2 mount ${mount}`);
  const st = fs.statSync(real, { bigint: true });
  if (!st.isDirectory()) throw new CgroupError(`${p} is not a cgroup directory`);
  if (fs.statfsSync(real).type !== CGROUP2_SUPER_MAGIC) throw new CgroupError(`${p} is not on a cgroup v2 filesystem`);
  const level = rel === '' ? 0 : rel.split(path.sep).length;
  if (level === 0) throw new CgroupError('refusing to govern the root cgroup: that would govern every process on the host');
  if (level >= HELM_MAX_CGROUP_DEPTH) throw new CgroupError(`${p} is ${level} levels deep; helm governs cgroups up to level ${HELM_MAX_CGROUP_DEPTH - 1}`);
  return { path: real, id: st.ino, level };
}

/** Processes in a cgroup and all cgroups below it. */
export function cgroupHasProcesses(dir: string): boolean {
  let procs = '';
  try {
    procs = fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8');
  } catch {
    return false;
  }
  if (procs.trim()) return true;
  for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
    if (d.isDirectory() && cgroupHasProcesses(path.join(dir, d.name))) return true;
  }
  return false;
}

/**
 * The directory of the cgroup with this id (its inode number), searched below
 * the v2 mount; undefined when it no longer exists.
 */
export function findCgroupById(id: bigint, mount = cgroup2Mount()): string | undefined {
  if (!mount) return undefined;
  let level = [mount];
  for (let depth = 0; depth <= HELM_MAX_CGROUP_DEPTH && level.length; depth++) {
    const next: string[] = [];
    for (const dir of level) {
      let entries: fs.Dirent[];
      try {
        entries = fs.readdirSync(dir, { withFileTypes: true });
      } catch {
        continue; // removed meanwhile
      }
      for (const d of entries) {
        if (!d.isDirectory()) continue;
        const p = path.join(dir, d.name);
        try {
          if (fs.statSync(p, { bigint: true }).ino === id) return p;
        } catch {
          continue;
        }
        next.push(p);
      }
    }
    level = next;
  }
  return undefined;
}
