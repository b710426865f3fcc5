/**
 * Loads the sysbox-mgr wire contract (proto/sysboxMgr.proto) with the field names kept exactly as
 * written, plus grpc.health.v1 so server reflection describes both.
 */
import { fileURLToPath } from 'node:url';
import { loadPackageDefinition, type GrpcObject, type ServiceDefinition } from '@grpc/grpc-js';
import { loadSync, type PackageDefinition } from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';

export const PROTO_PATH = fileURLToPath(new URL('../proto/sysboxMgr.proto', import.meta.url));
export const SERVICE_NAME = 'protobuf.sysboxMgrStateChannel';

/** keepCase: field names stay as upstream spells them (ShiftfsOk, IDMapMountOk, uidMappings). */
const LOADER_OPTIONS = { keepCase: true, longs: Number, enums: String, defaults: true, arrays: true, oneofs: true };

export function loadPackage(): PackageDefinition {
  return loadSync([PROTO_PATH, healthProtoPath], LOADER_OPTIONS);
}

export function sysboxMgrService(pkg: PackageDefinition = loadPackage()): ServiceDefinition {
  const grpcObject = loadPackageDefinition(pkg);
  const ctor = (grpcObject.protobuf as GrpcObject).sysboxMgrStateChannel as unknown as { service: ServiceDefinition };
  return ctor.service;
}

/** A client constructor for tests and benches, from the same .proto the server uses. */
export function sysboxMgrClientConstructor(pkg: PackageDefinition = loadPackage()) {
  const grpcObject = loadPackageDefinition(pkg);
  return (grpcObject.protobuf as GrpcObject).sysboxMgrStateChannel as unknown as new (
    address: string,
    credentials: import('@grpc/grpc-js').ChannelCredentials,
    options?: import('@grpc/grpc-js').ChannelOptions,
  ) => import('@grpc/grpc-js').Client & Record<string, Function>;
}
