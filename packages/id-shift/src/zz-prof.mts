import { createWalkPool } from './walk-pool.js';
import { lstatSync } from 'node:fs';
const root = process.argv[2]!; const workers = Number(process.argv[3]);
for (const off of [100000, -100000, 100000, -100000]) {
  const t0 = performance.now();
  const pool = createWalkPool({ task: 'shift', rootDev: lstatSync(root).dev, crossMounts: false, uidOffset: off, gidOffset: off, workers, onProgress: () => {} });
  const s = await pool.scan(root); const t1 = performance.now();
  await pool.apply(); const t2 = performance.now();
  await pool.close(); const t3 = performance.now();
  console.log(workers, s.scanned, 'scan', Math.round(t1-t0), 'apply', Math.round(t2-t1), 'close', Math.round(t3-t2));
}
