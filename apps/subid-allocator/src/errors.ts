import { SysboxError } from '@sysbox-mgr-ts/contracts';

export function isAlreadyExists(err: unknown): boolean {
  return err instanceof SysboxError && err.code === 'already-exists';
}
