import { defineConfig } from 'vitest/config';
import { sourceConditions } from '../vitest.shared.js';

// Scenarios share one host (mounts, /proc): run files one after another.
export default defineConfig(
  sourceConditions({ test: { testTimeout: 60_000, hookTimeout: 60_000, fileParallelism: false } }),
);
