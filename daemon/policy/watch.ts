// Watches helmd's policy sources and says when they changed, once things settle.
//
// Node's fs.watch (inotify on Linux) is used on the *directories*: on a policy
// directory, and on the directory holding each policy file. Watching a file itself
// loses it when an editor saves by writing a new file and renaming it over the old
// one; the directory sees that rename, in-place writes, new files and deletions
// alike. This is about forty lines, so no watcher library (chokidar and friends
// add polling fallbacks and dependencies a root daemon does not need).
import fs from 'node:fs';
import path from 'node:path';

const POLICY_EXTENSIONS = ['.yaml', '.yml', '.json'];

export class PolicyWatcher {
  private readonly watchers: fs.FSWatcher[] = [];
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly paths: string[],
    private readonly onChange: () => void,
    private readonly onError: (e: Error, dir: string) => void,
    private readonly debounceMs = 250,
  ) {}

  start(): void {
    // directory → which names in it matter (undefined: every policy file)
    const dirs = new Map<string, Set<string> | undefined>();
    for (const p of this.paths) {
      const abs = path.resolve(p);
      let isDir = false;
      try {
        isDir = fs.statSync(abs).isDirectory();
      } catch {
        /* a missing file: watch its directory for it to appear */
      }
      if (isDir) dirs.set(abs, undefined);
      else {
        const dir = path.dirname(abs);
        if (dirs.has(dir) && dirs.get(dir) === undefined) continue;
        const names = dirs.get(dir) ?? new Set<string>();
        names.add(path.basename(abs));
        dirs.set(dir, names);
      }
    }
    for (const [dir, names] of dirs) {
      try {
        const w = fs.watch(dir, { persistent: false }, (_event, name) => {
          const n = name?.toString();
          // No name (the kernel's queue overflowed): assume it mattered.
          if (n !== undefined && (names ? !names.has(n) : !POLICY_EXTENSIONS.some((ext) => n.endsWith(ext)))) return;
          this.changed();
        });
        w.on('error', (e) => this.onError(e, dir));
        this.watchers.push(w);
      } catch (e) {
        this.onError(e as Error, dir);
      }
    }
  }

  private changed(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.onChange();
    }, this.debounceMs);
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    for (const w of this.watchers) w.close();
    this.watchers.length = 0;
  }
}
