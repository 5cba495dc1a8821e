// helmd's state between runs (<stateDir>/state.json): what the pinned kernel maps
// cannot tell a restarted helmd. The names behind the ids the kernel reports
// (roles, agents, the policies and rules of recent generations), where numbering
// continues (generations, role and agent ids), and how much of the pinned
// lost-event counter is already in the audit trail. It is written atomically
// (temporary file, fsync, rename) before the kernel change it describes, so a
// helmd killed at any moment finds names for whatever the kernel holds.
//
// The names of a generation's policies and rules are in files of their own
// (names-<generation>.json), written once and shared by the generations that have
// the same names (an edit of a rule's paths names the same rules): the state file
// is written on every apply and every attach, and with the names inline (format 1)
// eight generations of a 10,000-rule policy made it 6.6 MB, most of an apply's time.
import fs from 'node:fs';
import path from 'node:path';
import type { GenerationNames } from './audit/record';
import { native } from './kernel/native';

/** 2: generations' names in names files; 1 (still read): inline. */
export const STATE_FORMAT = 2;

export interface PersistedAgent {
  id: string;
  name: string;
  role: string;
  cgroupPath: string;
  cgroupId: string;
  dryRun: boolean;
  labels: Record<string, string>;
  generation: number;
}

export interface HelmdState {
  format: number;
  /** The pinned set (its meta's instance) that lostReported counts for. */
  instance: string;
  /** The last generation helmd installed: the next one continues from here. */
  generation: number;
  /** Role name → kernel role id. Ids are never reused for another name. */
  roles: Record<string, number>;
  /** Label pair (key=value) → id: the bits of agents' labels in the pinned map. */
  labels: Record<string, number>;
  nextAgentId: string;
  /** The pinned lost-event counter's value last written to the trail (the deny ring's). */
  lostReported: string;
  /** The same for the allow ring. */
  lostReportedAllow: string;
  /** When that was: the start of the interval the next `lost` line covers. */
  lostSince: string;
  agents: PersistedAgent[];
  /** Names for recent generations, by generation number: events drained after a restart name them. */
  generations: Record<string, GenerationNames>;
  /** true while a helmd runs: found true at start, the previous one did not stop cleanly. */
  running: boolean;
}

export function emptyState(): HelmdState {
  return { format: STATE_FORMAT, instance: '', generation: 0, roles: {}, labels: {}, nextAgentId: '1', lostReported: '0', lostReportedAllow: '0', lostSince: '', agents: [], generations: {}, running: false };
}

export class StateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StateError';
  }
}

export function statePath(stateDir: string): string {
  return path.join(stateDir, 'state.json');
}

/** Reads the state; a missing file is an empty state. Throws StateError for one this helmd cannot trust. */
export function loadState(stateDir: string): HelmdState {
  const file = statePath(stateDir);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return emptyState();
    throw new StateError(`cannot read ${file}: ${(e as Error).message}`);
  }
  let raw: Partial<HelmdState>;
  try {
    raw = JSON.parse(text) as Partial<HelmdState>;
  } catch (e) {
    throw new StateError(`${file} is not valid JSON (${(e as Error).message}); move it aside to start without it (agents are then re-learned from the kernel with generic names)`);
  }
  if (typeof raw !== 'object' || raw === null || typeof raw.format !== 'number') throw new StateError(`${file} is not a helmd state file (no format)`);
  if (raw.format > STATE_FORMAT) throw new StateError(`${file} was written by a newer helmd (state format ${raw.format}; this one reads ${STATE_FORMAT})`);
  const s = { ...emptyState(), ...raw };
  if (raw.format >= 2) s.generations = loadNames(stateDir, raw.generations as unknown as Record<string, unknown>);
  const problems: string[] = [];
  if (!Number.isInteger(s.generation) || s.generation < 0) problems.push('generation');
  if (typeof s.roles !== 'object' || Object.values(s.roles).some((v) => !Number.isInteger(v) || v <= 0)) problems.push('roles');
  if (!/^\d+$/.test(s.nextAgentId) || !/^\d+$/.test(s.lostReported) || !/^\d+$/.test(s.lostReportedAllow)) problems.push('counters');
  if (!Array.isArray(s.agents) || s.agents.some((a) => !/^\d+$/.test(a?.id ?? '') || !/^\d+$/.test(a?.cgroupId ?? '') || typeof a.role !== 'string')) problems.push('agents');
  if (problems.length) throw new StateError(`${file} has invalid ${problems.join(', ')}; move it aside to start without it`);
  return s;
}

/** Writes the state so that a reader sees the old file or the new one, never a mix. */
export function saveState(stateDir: string, state: HelmdState): void {
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  // Each generation's names: a file already holding them, or a new one (durable before the state names it).
  const files: Record<string, string> = {};
  let written = false;
  for (const [g, names] of Object.entries(state.generations)) {
    let file = namesFileOf(stateDir, names);
    if (file === undefined) {
      for (const other of Object.values(state.generations)) {
        const f = other !== names ? namesFileOf(stateDir, other) : undefined;
        if (f !== undefined && sameNames(other, names)) {
          file = f;
          break;
        }
      }
    }
    if (file === undefined) {
      file = `names-${g}.json`;
      writeDurably(path.join(stateDir, file), JSON.stringify(names));
      written = true;
    }
    namesFiles.set(names, { dir: stateDir, file });
    files[g] = file;
  }
  // New names files are on disk before a state naming them can be.
  if (written) syncDirectory(stateDir);
  writeDurably(statePath(stateDir), JSON.stringify({ ...state, format: STATE_FORMAT, generations: files }, null, 1) + '\n');
  // Durable before the kernel changes, not only whole: the trail's records of what follows
  // name the generation this numbers, and a state lost to a power cut would number it again.
  syncDirectory(stateDir);
  // Names no generation of the state has any more (the state that named them is replaced).
  const kept = new Set(Object.values(files));
  for (const n of fs.readdirSync(stateDir)) if (NAMES_FILE.test(n) && !kept.has(n)) fs.rmSync(path.join(stateDir, n), { force: true });
}

/** A file's new content, whole or not at all: a temporary file, fsync, rename (the directory is synced by the caller). */
function writeDurably(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeSync(fd, text);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

const NAMES_FILE = /^names-\d+\.json$/;

/** Names objects already in a names file: the file and its directory (a process may keep several). */
const namesFiles = new WeakMap<GenerationNames, { dir: string; file: string }>();

function namesFileOf(stateDir: string, names: GenerationNames): string | undefined {
  const at = namesFiles.get(names);
  return at && at.dir === stateDir ? at.file : undefined;
}

function sameNames(a: GenerationNames, b: GenerationNames): boolean {
  if (a.policies.length !== b.policies.length || a.rules.length !== b.rules.length) return false;
  for (let i = 0; i < a.policies.length; i++) if (a.policies[i].name !== b.policies[i].name || a.policies[i].mode !== b.policies[i].mode) return false;
  for (let i = 0; i < a.rules.length; i++) {
    const x = a.rules[i];
    const y = b.rules[i];
    if (x !== y && (x.policy !== y.policy || x.rule !== y.rule)) return false;
  }
  return true;
}

/** The names files a format-2 state refers to, each read once; StateError for any it cannot trust. */
function loadNames(stateDir: string, refs: Record<string, unknown> | undefined): Record<string, GenerationNames> {
  const out: Record<string, GenerationNames> = {};
  const read = new Map<string, GenerationNames>();
  if (typeof refs !== 'object' || refs === null) throw new StateError(`${statePath(stateDir)} has invalid generations; move it aside to start without it`);
  for (const [g, file] of Object.entries(refs)) {
    // A name, never a path: the state file does not send helmd reading elsewhere.
    if (typeof file !== 'string' || !NAMES_FILE.test(file)) throw new StateError(`${statePath(stateDir)} has invalid generations (${JSON.stringify(file)}); move it aside to start without it`);
    let names = read.get(file);
    if (names === undefined) {
      const at = path.join(stateDir, file);
      try {
        names = JSON.parse(fs.readFileSync(at, 'utf8')) as GenerationNames;
      } catch (e) {
        throw new StateError(`cannot read ${at} (${(e as Error).message}); move ${statePath(stateDir)} aside to start without it`);
      }
      if (typeof names !== 'object' || names === null || !Array.isArray(names.policies) || !Array.isArray(names.rules)) throw new StateError(`${at} is not a names file; move ${statePath(stateDir)} aside to start without it`);
      read.set(file, names);
      namesFiles.set(names, { dir: stateDir, file });
    }
    out[g] = names;
  }
  return out;
}

export class LockError extends Error {
  constructor(message: string, public readonly holder?: number) {
    super(message);
    this.name = 'LockError';
  }
}

export function lockPath(stateDir: string): string {
  return path.join(stateDir, 'helmd.lock');
}

/** The pid written in the lock file by whoever holds it (it may have exited since). */
export function lockHolder(stateDir: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(lockPath(stateDir), 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Takes the state directory's lock for the life of this process (one helmd, or
 * helmctl uninstall, at a time) and writes our pid into it. Throws LockError
 * naming the holder.
 */
export function lockState(stateDir: string): number {
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const fd = native().helm_lock_file(lockPath(stateDir));
  if (fd === -11) {
    const holder = lockHolder(stateDir);
    throw new LockError(`another helmd${holder ? ` (pid ${holder})` : ''} holds ${lockPath(stateDir)}`, holder);
  }
  if (fd < 0) throw new LockError(`cannot lock ${lockPath(stateDir)}: errno ${-fd}`);
  fs.ftruncateSync(fd, 0);
  fs.writeSync(fd, `${process.pid}\n`, 0);
  return fd;
}

function syncDirectory(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
