import { packageVersion } from '@sysbox-mgr-ts/service-kit';
import { runFleet } from './app.js';

process.exitCode = await runFleet(
  process.argv.slice(2),
  process.env,
  { stdout: (t) => process.stdout.write(t), stderr: (t) => process.stderr.write(t) },
  packageVersion(import.meta.url),
);
