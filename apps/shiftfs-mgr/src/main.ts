import { packageVersion, runDaemon } from '@sysbox-mgr-ts/service-kit';
import { shiftfsMgrApp } from './app.js';

await runDaemon({ ...shiftfsMgrApp, version: packageVersion(import.meta.url) });
