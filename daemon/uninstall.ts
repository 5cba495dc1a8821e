// Removing enforcement: the one explicit way to end what helmd pinned. A running
// helmd is stopped first (it would otherwise keep a trail of an enforcement that
// is gone), the act is written to the audit trail, and only then are the pins
// removed. If the trail cannot be written nothing is removed.
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { AuditTrail } from './audit/writer';
import { AUDIT_SCHEMA_VERSION, rfc3339Nanos } from './audit/record';
import { BpfMap, openPinned } from './kernel/bpf';
import { readPins, removePins } from './kernel/pins';
import { LockError, loadState, lockHolder, lockState, saveState, emptyState, type HelmdState } from './state';

export interface UninstallOptions {
  pinDir: string;
  stateDir: string;
  auditLog: string;
  /** Recorded in the trail file's first line if uninstall starts a new file. */
  version?: string;
  /** How long to wait for a running helmd to stop. */
  stopTimeoutMs?: number;
  say?: (line: string) => void;
}

export interface UninstallResult {
  removed: boolean;
  stoppedHelmd?: number;
  released: { agent: string; role: string; cgroup: string }[];
  set?: string;
}

/** Takes the state lock, stopping the helmd that holds it (SIGTERM) if need be. */
async function lockStopping(stateDir: string, timeoutMs: number, say: (l: string) => void): Promise<{ fd: number; stopped?: number }> {
  try {
    return { fd: lockState(stateDir) };
  } catch (e) {
    if (!(e instanceof LockError) || !e.holder) throw e;
  }
  const pid = lockHolder(stateDir)!;
  say(`stopping helmd (pid ${pid})`);
  try {
    process.kill(pid, 'SIGTERM');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
  }
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return { fd: lockState(stateDir), stopped: pid };
    } catch (e) {
      if (!(e instanceof LockError) || Date.now() > deadline) throw new LockError(`helmd (pid ${pid}) did not stop within ${timeoutMs / 1000} s; nothing was removed`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The governed cgroups of the current set, with names from the state file. */
function governedNow(pinDir: string, set: string, state: HelmdState): UninstallResult['released'] {
  const fd = openPinned(path.join(pinDir, set, 'maps', 'governed_cgroups'));
  if (fd === undefined) return [];
  const m = new BpfMap(fd, 'governed_cgroups', true);
  try {
    return m.keys().map((k) => {
      const id = k.readBigUInt64LE(0).toString();
      const a = state.agents.find((x) => x.cgroupId === id);
      return { agent: a?.name ?? `cgroup-${id}`, role: a?.role ?? 'unknown', cgroup: a?.cgroupPath ?? `cgroup id ${id}` };
    });
  } finally {
    m.close();
  }
}

export async function uninstall(o: UninstallOptions): Promise<UninstallResult> {
  const say = o.say ?? (() => undefined);
  const { fd, stopped } = await lockStopping(o.stateDir, o.stopTimeoutMs ?? 30_000, say);
  try {
    const status = readPins(o.pinDir);
    if (!status.present) return { removed: false, stoppedHelmd: stopped, released: [] };
    let state: HelmdState;
    try {
      state = loadState(o.stateDir);
    } catch {
      state = emptyState(); // names are a courtesy here: the removal is recorded either way
    }
    const released = status.current ? governedNow(o.pinDir, status.current, state) : [];
    // The record first: if it cannot be written, enforcement stays.
    let failure: Error | undefined;
    const audit = await AuditTrail.open({
      file: o.auditLog,
      fsync: { kind: 'every-batch' },
      // Never rotated from here: helmd rotates the trail it writes.
      rotation: { maxBytes: 0, maxAgeMs: 0, compress: false },
      origin: { host: os.hostname(), version: o.version ?? 'helmctl' },
      onError: (e) => (failure ??= e),
    });
    try {
      audit.append([
        {
          v: AUDIT_SCHEMA_VERSION,
          ts: rfc3339Nanos(BigInt(Date.now()) * 1_000_000n),
          seq: 0,
          type: 'control',
          action: 'uninstall',
          by: { uid: process.getuid?.() ?? -1, pid: process.pid, ppid: process.ppid, command: 'helmctl uninstall' },
          pins: { dir: o.pinDir, set: status.current ?? null, version: status.meta?.version ?? null },
          ...(stopped ? { stopped_helmd: stopped } : {}),
          released,
        },
      ]);
      await audit.written();
      if (audit.status().linesLost > 0) failure ??= new Error('the line was not written');
    } finally {
      await audit.close();
    }
    if (failure) throw new Error(`cannot write the audit trail ${o.auditLog} (${failure.message}): enforcement was left in place`);
    removePins(o.pinDir);
    if (fs.existsSync(o.stateDir)) {
      state.agents = [];
      state.running = false;
      state.instance = '';
      state.lostReported = '0';
      state.lostReportedAllow = '0';
      saveState(o.stateDir, state);
    }
    return { removed: true, stoppedHelmd: stopped, released, set: status.current };
  } finally {
    fs.closeSync(fd);
  }
}
