import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { shift } from './index.js';
import { buildTree } from './tree-fixture.js';
const base = mkdtempSync(join(process.env.CONC_DIR ?? '/var/tmp', 'conc-'));
const N = 8;
const roots = Array.from({ length: N }, (_, i) => { const r = join(base, `t${i}`); buildTree(r, { top: 10, sub: 20, perDir: 49, owners: [0, 1000], outside: '/etc/hostname', seed: i }); return r; });
let lag = 0; let last = performance.now();
const timer = setInterval(() => { const now = performance.now(); lag = Math.max(lag, now - last - 5); last = now; }, 5);
for (const off of [100000, -100000, 100000, -100000]) {
  lag = 0;
  const t0 = performance.now();
  const times = await Promise.all(roots.map(async (r) => { const t = performance.now(); await shift(r, off, off, { acls: true }); return performance.now() - t; }));
  console.log(`8 concurrent shifts: total ${(performance.now() - t0).toFixed(0)} ms; each: ${times.map((x) => x.toFixed(0)).join(' ')}; worst loop lag ${lag.toFixed(0)} ms`);
}
clearInterval(timer);
rmSync(base, { recursive: true, force: true });
