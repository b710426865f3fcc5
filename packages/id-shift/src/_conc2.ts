import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '@sysbox-mgr-ts/exec';
import { shift } from './index.js';
import { buildTree } from './tree-fixture.js';
const base = mkdtempSync(join('/var/tmp', 'conc2-'));
const N = 8;
const lower = join(base, 'lower');
buildTree(lower, { top: 10, sub: 20, perDir: 49, owners: [0], outside: '/etc/hostname', seed: 1 });
let round = 0;
async function overlays(): Promise<string[]> {
  round++;
  const out: string[] = [];
  for (let i = 0; i < N; i++) {
    const d = join(base, `r${round}-${i}`);
    for (const s of ['up', 'work', 'merged']) mkdirSync(join(d, s), { recursive: true });
    await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${d}/up,workdir=${d}/work,metacopy=on,index=on,redirect_dir=on`, join(d, 'merged')], { timeout: 10000 });
    out.push(join(d, 'merged'));
  }
  return out;
}
const workers = Number(process.env.W ?? 0) || undefined;
for (let k = 0; k < 2; k++) {
  let ms = await overlays();
  let t0 = performance.now();
  let times = await Promise.all(ms.map(async (m) => { const t = performance.now(); await shift(m, 165536, 165536, { workers }); return performance.now() - t; }));
  console.log(`id-shift x8 on metacopy overlays: total ${(performance.now() - t0).toFixed(0)} ms; each ${times.map((x) => x.toFixed(0)).join(' ')}`);
  for (const m of ms) await run('umount', [m], { timeout: 10000 });
  ms = await overlays();
  t0 = performance.now();
  times = await Promise.all(ms.map(async (m) => { const t = performance.now(); await run('chown', ['-R', '-h', '165536:165536', m], { timeout: 120000 }); return performance.now() - t; }));
  console.log(`chown -R x8 on metacopy overlays: total ${(performance.now() - t0).toFixed(0)} ms; each ${times.map((x) => x.toFixed(0)).join(' ')}`);
  for (const m of ms) await run('umount', [m], { timeout: 10000 });
}
rmSync(base, { recursive: true, force: true });
