// Preloaded into helmd by bench/audit-throughput.ts --profile DIR (node -r):
// SIGUSR2 starts the V8 CPU profiler, the next SIGUSR2 writes the profile to
// $HELM_CPU_PROFILE_DIR/helmd-<pid>.cpuprofile. Not `node --cpu-prof`: its
// sampling signals, arriving from the start, interrupt the BPF verifier, which
// then refuses to load helm's programs (EAGAIN).
import fs from 'node:fs';
import path from 'node:path';
import { Session } from 'node:inspector';

const dir = process.env.HELM_CPU_PROFILE_DIR;
if (dir) {
  let session: Session | undefined;
  process.on('SIGUSR2', () => {
    if (!session) {
      session = new Session();
      session.connect();
      session.post('Profiler.enable', () => session!.post('Profiler.start'));
      return;
    }
    const s = session;
    session = undefined;
    s.post('Profiler.stop', (err, res) => {
      if (!err) fs.writeFileSync(path.join(dir, `helmd-${process.pid}.cpuprofile`), JSON.stringify(res.profile));
      s.disconnect();
    });
  });
}
