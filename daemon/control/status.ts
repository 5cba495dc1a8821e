// gRPC status codes for helm's errors, on both ends. A rejected policy travels as
// INVALID_ARGUMENT whose message is the located `file:line:col: message` list and
// whose grpc-status-details-bin trailer is a google.rpc.Status carrying a
// helm.v1.Diagnostics, so any gRPC client can read the list as data.
import * as grpc from '@grpc/grpc-js';
import { formatDiagnostic, type PolicyDiagnostic } from '../policy/types';
import { messageCodec } from './proto';

export const DETAILS_KEY = 'grpc-status-details-bin';
export const DIAGNOSTICS_TYPE_URL = 'type.googleapis.com/helm.v1.Diagnostics';
/** Trailers are headers: keep them well under HTTP/2 header-list limits (Validate returns everything). */
const MAX_DETAIL_DIAGNOSTICS = 100;
const MAX_MESSAGE_CHARS = 4000;

export class RpcError extends Error {
  constructor(
    public readonly code: grpc.status,
    message: string,
    public readonly diagnostics: PolicyDiagnostic[] = [],
  ) {
    super(message);
    this.name = 'RpcError';
  }
}

export const invalidArgument = (m: string, diagnostics: PolicyDiagnostic[] = []) => new RpcError(grpc.status.INVALID_ARGUMENT, m, diagnostics);
export const notFound = (m: string) => new RpcError(grpc.status.NOT_FOUND, m);
export const aborted = (m: string) => new RpcError(grpc.status.ABORTED, m);
export const alreadyExists = (m: string) => new RpcError(grpc.status.ALREADY_EXISTS, m);
export const failedPrecondition = (m: string) => new RpcError(grpc.status.FAILED_PRECONDITION, m);
export const resourceExhausted = (m: string) => new RpcError(grpc.status.RESOURCE_EXHAUSTED, m);

export interface WireDiagnostic {
  severity: string;
  file: string;
  line: number;
  col: number;
  pointer: string;
  message: string;
  text: string;
}

export function wireDiagnostic(d: PolicyDiagnostic): WireDiagnostic {
  return { severity: d.severity, file: d.loc.file, line: d.loc.line, col: d.loc.col, pointer: d.loc.pointer, message: d.message, text: formatDiagnostic(d) };
}

/** The located list as one message, shortened to fit a trailer. */
export function diagnosticsMessage(summary: string, diagnostics: PolicyDiagnostic[]): string {
  let text = summary;
  for (let i = 0; i < diagnostics.length; i++) {
    const line = formatDiagnostic(diagnostics[i]);
    if (text.length + line.length + 1 > MAX_MESSAGE_CHARS) {
      text += `\n… and ${diagnostics.length - i} more (helmctl policy validate lists them all)`;
      break;
    }
    text += `\n${line}`;
  }
  return text;
}

/** The status a handler's exception becomes. Unknown exceptions are INTERNAL: a bug or the kernel said no. */
export function toServiceError(e: unknown, fallback: grpc.status = grpc.status.INTERNAL): Partial<grpc.StatusObject> {
  const err = e instanceof Error ? e : new Error(String(e));
  const code = e instanceof RpcError ? e.code : ((e as { grpcCode?: grpc.status }).grpcCode ?? fallback);
  const diagnostics = e instanceof RpcError ? e.diagnostics : [];
  if (diagnostics.length === 0) return { code, details: err.message };
  const details = diagnosticsMessage(err.message, diagnostics);
  const metadata = new grpc.Metadata();
  const shown = diagnostics.slice(0, MAX_DETAIL_DIAGNOSTICS).map(wireDiagnostic);
  const detail = messageCodec('Diagnostics').encode({ diagnostics: shown });
  metadata.set(DETAILS_KEY, messageCodec('RpcStatus').encode({ code, message: details, details: [{ type_url: DIAGNOSTICS_TYPE_URL, value: detail }] }));
  return { code, details, metadata };
}

/** The located diagnostics a status carries, if any (client side). */
export function diagnosticsOf(err: { metadata?: grpc.Metadata }): WireDiagnostic[] {
  const raw = err.metadata?.get(DETAILS_KEY)?.[0];
  if (!Buffer.isBuffer(raw)) return [];
  try {
    const status = messageCodec('RpcStatus').decode(raw) as { details: { type_url: string; value: Buffer }[] };
    const any = status.details.find((d) => d.type_url === DIAGNOSTICS_TYPE_URL);
    return any ? (messageCodec('Diagnostics').decode(Buffer.from(any.value)).diagnostics as WireDiagnostic[]) : [];
  } catch {
    return [];
  }
}
