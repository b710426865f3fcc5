/** Writes packages/contracts/schemas/*.json from the zod schemas; `--check` fails when they are stale. */
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jsonSchemas } from '@sysbox-mgr-ts/contracts';

const dir = fileURLToPath(new URL('../../packages/contracts/schemas/', import.meta.url));
const check = process.argv.includes('--check');
const wanted = Object.fromEntries(
  Object.entries(jsonSchemas()).map(([name, doc]) => [name, `${JSON.stringify(doc, null, 2)}\n`]),
);

await mkdir(dir, { recursive: true });
const present = (await readdir(dir)).filter((f) => f.endsWith('.json'));
const stale: string[] = [];
for (const [name, text] of Object.entries(wanted)) {
  const current = await readFile(join(dir, name), 'utf8').catch(() => undefined);
  if (current !== text) {
    stale.push(name);
    if (!check) await writeFile(join(dir, name), text);
  }
}
for (const name of present.filter((f) => !(f in wanted))) {
  stale.push(name);
  if (!check) await rm(join(dir, name));
}
if (check && stale.length > 0) {
  process.stderr.write(
    `stale JSON Schemas (run npm run gen-schemas -w @sysbox-mgr-ts/contracts): ${stale.join(', ')}\n`,
  );
  process.exit(1);
}
process.stdout.write(
  `${check ? 'checked' : 'wrote'} ${Object.keys(wanted).length} schemas, ${stale.length} changed\n`,
);
