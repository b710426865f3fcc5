export { shift, scanIds, needsShift } from './shift.js';
export type { ShiftOptions, ShiftResult, ShiftLogger, IdScan } from './shift.js';
