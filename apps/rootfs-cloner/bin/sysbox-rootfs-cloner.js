#!/usr/bin/env -S node --max-semi-space-size=1 --no-concurrent-recompilation
// A 1 MB young generation keeps an idle daemon about 6 MB smaller; these daemons wait on I/O, not on GC.
// Optimizing on the main thread keeps the compiler's memory out of worker threads' malloc arenas,
// which glibc never returns: 1-7 MB less idle RSS (tools/rss); each compile (~1 ms) blocks once.
import '../dist/main.js';
