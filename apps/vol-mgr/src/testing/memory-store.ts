/** An in-memory StateStore for unit tests of domain modules (the integration tests use real KV). */
import { SysboxError } from '@sysbox-mgr-ts/contracts';
import { REMOVE, type StateStore, type Versioned } from '@sysbox-mgr-ts/kv-state';

export function memoryStore<T>(): StateStore<T> {
  const data = new Map<string, Versioned<T>>();
  let rev = 0;
  return {
    async get(key) {
      return data.get(key);
    },
    async list() {
      return [...data.values()].sort((a, b) => a.key.localeCompare(b.key));
    },
    async create(key, value) {
      if (data.has(key)) throw new SysboxError('already-exists', `${key} already exists`);
      data.set(key, { key, value, revision: ++rev });
      return rev;
    },
    async mutate(key, fn) {
      const next = await fn(data.get(key)?.value);
      if (next === undefined) return data.get(key)?.value;
      if (next === REMOVE) {
        data.delete(key);
        return undefined;
      }
      data.set(key, { key, value: next, revision: ++rev });
      return next;
    },
    async delete(key) {
      data.delete(key);
    },
  };
}
