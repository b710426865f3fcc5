import { packageVersion, runDaemon } from '@sysbox-mgr-ts/service-kit';
import { subidAllocatorApp } from './app.js';

await runDaemon({ ...subidAllocatorApp, version: packageVersion(import.meta.url) });
