// auditWriter: appends JSON lines to the audit file. A batch is written with one
// write(2) to an O_APPEND fd, so lines are never interleaved; a write error is
// reported loudly and never stops enforcement (the kernel keeps deciding).
import fs from 'node:fs';
import path from 'node:path';

export interface AuditWriter {
  readonly path: string;
  append(records: object[]): void;
  close(): void;
}

export function openAuditWriter(file: string, onError: (e: Error) => void): AuditWriter {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o750 });
  const fd = fs.openSync(file, 'a', 0o640);
  let failing = false;
  return {
    path: file,
    append(records) {
      if (records.length === 0) return;
      const bytes = Buffer.from(records.map((r) => JSON.stringify(r)).join('\n') + '\n');
      try {
        for (let off = 0; off < bytes.length; ) off += fs.writeSync(fd, bytes, off);
        failing = false;
      } catch (e) {
        if (!failing) onError(e as Error);
        failing = true;
      }
    },
    close() {
      fs.closeSync(fd);
    },
  };
}
