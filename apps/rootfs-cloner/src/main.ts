import { packageVersion, runDaemon } from '@sysbox-mgr-ts/service-kit';
import { rootfsClonerApp } from './app.js';

await runDaemon({ ...rootfsClonerApp, version: packageVersion(import.meta.url) });
