// Where this installation's files live (build/, proto/, policies/), found by
// walking up from the running script: the same answer from dist/daemon/** and
// from the single-file bundles in dist/bundle/.
import fs from 'node:fs';
import path from 'node:path';

let cached: string | undefined;

export function installRoot(): string {
  if (cached) return cached;
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'proto', 'helm', 'v1', 'helm.proto'))) return (cached = dir);
    if (path.dirname(dir) === dir) throw new Error(`cannot find helm's installation root above ${__dirname}`);
  }
}
