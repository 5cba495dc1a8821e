// helmctl audit tail (without a file): AuditService.Tail, printed as it arrives.
// The file-based audit tools read the trail itself; this is the live view.
import * as grpc from '@grpc/grpc-js';
import { client, controlError, endpointOf, type Endpoint } from './client';

export interface TailOptions {
  last: number;
  follow: boolean;
  agent?: string[];
  role?: string[];
  decision?: string[];
  op?: string[];
  type?: string[];
}

export interface StreamedRecord {
  seq: string;
  ts: string;
  type: string;
  decision: string;
  op: string;
  path: string;
  agent: string;
  role: string;
  policy: string;
  rule: string;
  mode: string;
  generation: number;
  pid: number;
  /** The JSON line exactly as in the audit file. */
  line: string;
}

/**
 * Streams records to `each` until the server ends the stream (without follow: once the
 * recent records are sent) or `signal` aborts. Rejects with a ControlError.
 */
export function tailAudit(endpoint: Endpoint | string, o: TailOptions, each: (r: StreamedRecord) => void, signal?: AbortSignal): Promise<void> {
  const ep = endpointOf(endpoint);
  const c = client('AuditService', ep);
  return new Promise((resolve, reject) => {
    const stream: grpc.ClientReadableStream<StreamedRecord> = c.Tail({
      last: o.last,
      follow: o.follow,
      agent: o.agent ?? [],
      role: o.role ?? [],
      decision: o.decision ?? [],
      op: o.op ?? [],
      type: o.type ?? [],
    });
    const abort = () => stream.cancel();
    signal?.addEventListener('abort', abort, { once: true });
    stream.on('data', each);
    stream.on('error', (err: grpc.ServiceError) => {
      c.close();
      signal?.removeEventListener('abort', abort);
      if (err.code === grpc.status.CANCELLED && signal?.aborted) resolve();
      else reject(controlError(err, ep));
    });
    stream.on('end', () => {
      c.close();
      signal?.removeEventListener('abort', abort);
      resolve();
    });
  });
}

/** One line for a person: time, decision, op, path, agent/role, rule. */
export function formatStreamed(r: StreamedRecord): string {
  if (r.type === 'decision') return `${r.ts} ${r.decision.padEnd(10)} ${r.op.padEnd(5)} ${r.path || '-'}  agent=${r.agent || '-'} role=${r.role || '-'} rule=${r.policy ? `${r.policy}/` : ''}${r.rule} gen=${r.generation} pid=${r.pid}`;
  // Other lines (control, lost, recovered) say what they are best in their own words.
  let rest = r.line;
  try {
    const o = JSON.parse(r.line) as Record<string, unknown>;
    delete o.v;
    delete o.ts;
    delete o.seq;
    delete o.type;
    delete o.chain;
    rest = Object.entries(o)
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join(' ');
  } catch {
    /* print the line as it came */
  }
  return `${r.ts} ${r.type.padEnd(10)} ${rest}`;
}
