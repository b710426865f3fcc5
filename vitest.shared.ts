import type { ViteUserConfig as UserConfig } from 'vitest/config';

const conditions = ['@sysbox-mgr-ts/source', 'node', 'import', 'default'];

/** Resolves workspace packages from their TypeScript source, so tests need no prior build. */
export function sourceConditions(config: UserConfig): UserConfig {
  return {
    ...config,
    resolve: { conditions },
    ssr: { resolve: { conditions, externalConditions: conditions } },
  };
}
