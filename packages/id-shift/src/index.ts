export { shift, scanIds, needsShift, unfinishedIds, containerIds } from './shift.js';
export type { ShiftOptions, ShiftResult, ShiftLogger, IdScan } from './shift.js';
export type { IdRange, ShiftOnly } from './syscalls.js';
