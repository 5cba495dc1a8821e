// The cgroup of a systemd unit, for `helmctl attach --unit`: what systemd says
// (systemctl show -p ControlGroup), or where systemd puts system services when it
// cannot be asked (no systemd running: containers, the test VM).
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { cgroup2Mount, CgroupError } from './cgroups';

const UNIT_RE = /^[A-Za-z0-9:_.\\@-]+\.(service|scope|slice)$/;

export function unitCgroup(unit: string, mount = cgroup2Mount()): { path: string; source: string } {
  if (!UNIT_RE.test(unit)) throw new CgroupError(`${JSON.stringify(unit)} is not a unit name (NAME.service, NAME.scope or NAME.slice)`);
  if (!mount) throw new CgroupError('no cgroup v2 hierarchy is mounted');
  const r = spawnSync('systemctl', ['show', '--property=ControlGroup', '--value', '--', unit], { encoding: 'utf8', timeout: 10_000 });
  const cg = r.status === 0 ? r.stdout.trim() : '';
  if (cg.startsWith('/')) return { path: path.join(mount, cg), source: 'systemctl show -p ControlGroup' };
  if (r.status === 0 && cg === '') throw new CgroupError(`${unit} has no cgroup: is it running? (systemctl status ${unit})`);
  const guess = path.join(mount, 'system.slice', unit);
  if (!fs.existsSync(guess)) {
    const why = r.error ? r.error.message : (r.stderr || '').trim().split('\n')[0];
    throw new CgroupError(`cannot find the cgroup of ${unit}: systemctl could not say (${why || `exit ${r.status}`}) and ${guess} does not exist`);
  }
  return { path: guess, source: `${guess} (systemctl could not be asked)` };
}
