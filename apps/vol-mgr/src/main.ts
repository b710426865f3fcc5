import { packageVersion, runDaemon } from '@sysbox-mgr-ts/service-kit';
import { volMgrApp } from './app.js';

await runDaemon({ ...volMgrApp, version: packageVersion(import.meta.url) });
