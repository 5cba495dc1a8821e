// The gRPC client of helmctl: one call, a deadline, and errors a person can read.
// helmd is reached on its unix socket, or on a TCP address with mutual TLS.
import fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { helmProto, socketAddress } from './proto';
import { diagnosticsOf, type WireDiagnostic } from './status';

export type Service = 'AgentService' | 'SystemService' | 'PolicyService' | 'AuditService';

/** Where helmd is: its unix socket, or HOST:PORT with the client's certificate, key and the server's CA. */
export interface Endpoint {
  socket: string;
  tls?: { server: string; cert: string; key: string; ca: string };
}

export class ControlError extends Error {
  constructor(
    message: string,
    public readonly code: number,
    /** Located policy errors, when helmd rejected a policy. */
    public readonly diagnostics: WireDiagnostic[] = [],
  ) {
    super(message);
    this.name = 'ControlError';
  }
}

const CHANNEL_OPTIONS = { 'grpc.max_receive_message_length': 64 * 1024 * 1024 };

export function endpointOf(e: Endpoint | string): Endpoint {
  return typeof e === 'string' ? { socket: e } : e;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function client(service: Service, endpoint: Endpoint | string): any {
  const ep = endpointOf(endpoint);
  const Client = helmProto()[service];
  if (!ep.tls) return new Client(socketAddress(ep.socket), grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  const read = (what: string, f: string) => {
    try {
      return fs.readFileSync(f);
    } catch (e) {
      throw new ControlError(`--tls-${what} ${f}: ${(e as Error).message}`, grpc.status.INVALID_ARGUMENT);
    }
  };
  const creds = grpc.credentials.createSsl(read('ca', ep.tls.ca), read('key', ep.tls.key), read('cert', ep.tls.cert));
  return new Client(ep.tls.server, creds, CHANNEL_OPTIONS);
}

export function call<Res>(endpoint: Endpoint | string, service: Service, method: string, request: object, timeoutMs = 30000): Promise<Res> {
  const c = client(service, endpoint);
  return new Promise<Res>((resolve, reject) => {
    c[method](request, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: Res) => {
      c.close();
      if (!err) return resolve(res);
      reject(controlError(err, endpointOf(endpoint)));
    });
  });
}

/** A status from helmd as a ControlError; UNAVAILABLE says why helmd could not be reached. */
export function controlError(err: grpc.ServiceError, ep: Endpoint): ControlError {
  if (err.code === grpc.status.UNAVAILABLE) return new ControlError(unreachable(ep, err.details), err.code);
  if (err.code === grpc.status.DEADLINE_EXCEEDED) return new ControlError(`helmd at ${where(ep)} did not answer in time`, err.code);
  return new ControlError(err.details || err.message, err.code, diagnosticsOf(err));
}

function where(ep: Endpoint): string {
  return ep.tls ? ep.tls.server : ep.socket;
}

function unreachable(ep: Endpoint, details: string): string {
  if (ep.tls) return `cannot reach helmd at ${ep.tls.server} over mutual TLS: ${details}`;
  const s = ep.socket;
  let st: fs.Stats;
  try {
    st = fs.statSync(s);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return `cannot reach helmd: no socket at ${s}; is helmd running? (start it with: helmd --policy POLICY..., or give --socket)`;
    if (code === 'EACCES') return `cannot reach helmd at ${s}: permission denied on its directory; run as root or as a member of helmd's --socket-group`;
    return `cannot reach helmd at ${s}: ${(e as Error).message}`;
  }
  if (!st.isSocket()) return `cannot reach helmd: ${s} is not a socket`;
  try {
    fs.accessSync(s, fs.constants.W_OK);
  } catch {
    return `cannot reach helmd at ${s}: permission denied; run as root or as a member of helmd's --socket-group`;
  }
  if (/EPERM/.test(details)) return `cannot reach helmd at ${s}: the kernel refused the connection (a process governed by helm cannot use helmd's control socket)`;
  if (/ECONNREFUSED/.test(details)) return `cannot reach helmd at ${s}: nothing is listening (a socket left by a helmd that is no longer running?)`;
  return `cannot reach helmd at ${s}: ${details}`;
}
