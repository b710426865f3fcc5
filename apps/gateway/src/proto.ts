/**
 * Loads the sysbox-mgr wire contract (proto/sysboxMgr.proto) with the field names kept exactly as
 * written, plus grpc.health.v1 so server reflection describes both. The server encodes with
 * codec.ts; this parse runs for reflection's first call, tests and benches, so @grpc/proto-loader
 * and grpc-health-check (which parses its .proto when loaded) are required here on first use.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { loadPackageDefinition, type GrpcObject } from '@grpc/grpc-js';
import type { PackageDefinition } from '@grpc/proto-loader';

const require = createRequire(import.meta.url);

export const PROTO_PATH = fileURLToPath(new URL('../proto/sysboxMgr.proto', import.meta.url));
export const SERVICE_NAME = 'protobuf.sysboxMgrStateChannel';

/** keepCase: field names stay as upstream spells them (ShiftfsOk, IDMapMountOk, uidMappings). */
const LOADER_OPTIONS = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  arrays: true,
  oneofs: true,
};

export function loadPackage(): PackageDefinition {
  const { loadSync } = require('@grpc/proto-loader') as typeof import('@grpc/proto-loader');
  const { protoPath: healthProtoPath } = require('grpc-health-check') as typeof import('grpc-health-check');
  return loadSync([PROTO_PATH, healthProtoPath], LOADER_OPTIONS);
}

/** A client constructor for tests and benches, from the same .proto the server uses. */
export function sysboxMgrClientConstructor(pkg: PackageDefinition = loadPackage()) {
  const grpcObject = loadPackageDefinition(pkg);
  return (grpcObject.protobuf as GrpcObject).sysboxMgrStateChannel as unknown as new (
    address: string,
    credentials: import('@grpc/grpc-js').ChannelCredentials,
    options?: import('@grpc/grpc-js').ChannelOptions,
  ) => import('@grpc/grpc-js').Client & Record<string, (...args: never[]) => unknown>;
}
