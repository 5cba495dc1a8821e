// Shared by the audit unit tests: trail options that fail loudly, and records to write.
import type { TrailOptions } from '../daemon/audit/writer';

export function trailOptions(file: string, over: Partial<TrailOptions> = {}): TrailOptions {
  return {
    file,
    fsync: { kind: 'every-batch' },
    rotation: { maxBytes: 0, maxAgeMs: 0, compress: false },
    origin: { host: 'test', version: '0' },
    onError: (e) => {
      throw e;
    },
    ...over,
  };
}

/** A decision line as helmd writes it (seq is set by the writer). */
export function decisionLine(over: Record<string, unknown> = {}): Record<string, unknown> {
  return { v: 1, ts: '2026-11-30T12:00:00.000000000Z', seq: 0, type: 'decision', decision: 'deny', op: 'read', path: '/srv/x', agent: 'a', role: 'r', policy: null, rule: 'default', mode: 'enforce', reason: 'default', generation: 1, ...over };
}
