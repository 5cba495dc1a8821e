// Loads proto/helm/v1/*.proto at run time (no generated code to keep in sync).
import path from 'node:path';
import { installRoot } from '../install-root';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export const DEFAULT_SOCKET = '/run/helm/helmd.sock';

export function protoDir(): string {
  return path.join(installRoot(), 'proto');
}

export function protoPath(): string {
  return path.join(protoDir(), 'helm', 'v1', 'helm.proto');
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Loaded = any;

const LOADER_OPTIONS: protoLoader.Options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

let definition: protoLoader.PackageDefinition | undefined;
let cached: Loaded;

function packageDefinition(): protoLoader.PackageDefinition {
  definition ??= protoLoader.loadSync('helm/v1/helm.proto', { ...LOADER_OPTIONS, includeDirs: [protoDir()] });
  return definition;
}

export function helmProto(): Loaded {
  cached ??= grpc.loadPackageDefinition(packageDefinition()).helm;
  return cached.v1;
}

/** Encoder and decoder of one helm.v1 message type (for error details). */
export function messageCodec(name: string): { encode(o: object): Buffer; decode(b: Buffer): Loaded } {
  const def = packageDefinition()[`helm.v1.${name}`] as unknown as { serialize(o: object): Buffer; deserialize(b: Buffer): Loaded };
  if (!def?.serialize) throw new Error(`no message helm.v1.${name}`);
  return { encode: (o) => def.serialize(o), decode: (b) => def.deserialize(b) };
}

export function socketAddress(socket: string): string {
  return `unix:${socket}`;
}
