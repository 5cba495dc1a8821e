// Loads proto/helm/v1/helm.proto at run time (no generated code to keep in sync).
import path from 'node:path';
import { installRoot } from '../install-root';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export const DEFAULT_SOCKET = '/run/helm/helmd.sock';

export function protoPath(): string {
  return path.join(installRoot(), 'proto', 'helm', 'v1', 'helm.proto');
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Loaded = any;

let cached: Loaded;
export function helmProto(): Loaded {
  if (!cached) {
    const def = protoLoader.loadSync(protoPath(), { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
    cached = grpc.loadPackageDefinition(def).helm;
  }
  return cached.v1;
}

export function socketAddress(socket: string): string {
  return `unix:${socket}`;
}
