#!/usr/bin/env -S node --max-semi-space-size=1
// A 1 MB young generation keeps an idle daemon about 6 MB smaller; these daemons wait on I/O, not on GC.
import "../dist/main.js";
