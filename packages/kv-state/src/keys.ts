/** Key tokens: what a KV key may hold, and the escape for everything else. */

/** KV key tokens allow [-_a-zA-Z0-9]; everything else (runc ids may hold `.` and `+`) is =XX escaped. */
export function encodeKeyToken(id: string): string {
  return id.replace(/[^-_a-zA-Z0-9]/g, (ch) => `=${ch.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

export function decodeKeyToken(token: string): string {
  return token.replace(/=([0-9a-f]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
}
