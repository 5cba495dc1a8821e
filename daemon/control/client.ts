// A gRPC client for helmctl: one call, a deadline, and errors a person can read.
import * as grpc from '@grpc/grpc-js';
import { helmProto, socketAddress } from './proto';

export class ControlError extends Error {
  constructor(message: string, public readonly code: number) {
    super(message);
  }
}

export function call<Res>(socket: string, service: 'AgentService' | 'SystemService', method: string, request: object, timeoutMs = 10000): Promise<Res> {
  const proto = helmProto();
  const client = new proto[service](socketAddress(socket), grpc.credentials.createInsecure());
  return new Promise<Res>((resolve, reject) => {
    client[method](request, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: Res) => {
      client.close();
      if (!err) return resolve(res);
      if (err.code === grpc.status.UNAVAILABLE) {
        return reject(new ControlError(`cannot reach helmd at ${socket}: is it running? (${err.details})`, err.code));
      }
      reject(new ControlError(err.details || err.message, err.code));
    });
  });
}
