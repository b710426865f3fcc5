import { defineConfig } from 'vitest/config';
import { sourceConditions } from '../../vitest.shared.js';

// One scenario: pack, install from the registry, run. The install is most of the time.
export default defineConfig(sourceConditions({ test: { testTimeout: 240_000, hookTimeout: 60_000 } }));
