/**
 * Whether Docker will remove a container when it stops (`docker run --rm`), asked of the Docker
 * Engine API on its unix socket, as upstream's manager does: such a container's rootfs is
 * deleted anyway, so its volumes are not synced back and its upper dir not reverted. Best
 * effort: no Docker, an unknown container or any error answers false (the safe default: sync).
 */
import { request } from 'node:http';

export const DOCKER_SOCKET = '/var/run/docker.sock';

export function dockerAutoRemove(id: string, socketPath = DOCKER_SOCKET, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(
      { socketPath, path: `/containers/${encodeURIComponent(id)}/json`, method: 'GET', timeout: timeoutMs },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          // A container's inspect document is a few KiB; anything huge is not Docker's answer.
          if (body.length < 4 * 1024 * 1024) body += chunk;
        });
        res.on('end', () => {
          if (res.statusCode !== 200) return resolve(false);
          try {
            resolve(
              (JSON.parse(body) as { HostConfig?: { AutoRemove?: unknown } }).HostConfig?.AutoRemove === true,
            );
          } catch {
            resolve(false);
          }
        });
        res.on('error', () => resolve(false));
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}
