// Starts `portcullis serve` on a free port with a fresh store; resolves when it listens.
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const root = new URL('../../', import.meta.url).pathname;
export const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const chromiumArgs = ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];
export const adminPassword = 'browser-test-password';

export function startServer() {
  const binary = process.env.PORTCULLIS_BIN ?? join(root, 'target/debug/portcullis');
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-browser-'));
  const child = spawn(binary, ['serve', '--listen', '127.0.0.1:0'], {
    env: {
      ...process.env,
      PORTCULLIS_DATA_DIR: join(dir, 'data'),
      PORTCULLIS_KEYS_DIR: join(dir, 'keys'),
      PORTCULLIS_ADMIN_PASSWORD: adminPassword,
      RUST_LOG: 'info',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let log = '';
    child.stderr.on('data', (chunk) => {
      log += chunk;
      const match = log.match(/port=(\d+)/);
      if (match) resolve({ child, base: `http://127.0.0.1:${match[1]}` });
    });
    child.on('exit', (code) => reject(new Error(`the server exited (${code}): ${log}`)));
  });
}

/// Where a screenshot goes: docs/ when PORTCULLIS_WRITE_SCREENSHOTS is set, else a temp dir.
export function screenshotPath(name) {
  return process.env.PORTCULLIS_WRITE_SCREENSHOTS ? join(root, 'docs', name) : join(tmpdir(), name);
}
