// Runs tasks one at a time, in the order they were queued: every change to the
// policy, modes and agents goes through one queue, so two applies can never
// interleave and an expected generation is checked against what is really loaded.
export class SerialQueue {
  private tail: Promise<void> = Promise.resolve();
  private waiting = 0;

  /**
   * Queues `task`; resolves or rejects with its result. The task may `hold` the queue
   * on work that follows its result (e.g. freeing an old generation after answering):
   * the next task starts only when that settles too.
   */
  run<T>(task: (hold: (p: Promise<unknown>) => void) => T | Promise<T>): Promise<T> {
    const holds: Promise<unknown>[] = [];
    this.waiting++;
    const result = this.tail.then(() => {
      this.waiting--;
      return task((p) => holds.push(p));
    });
    const settleHolds = () => Promise.allSettled(holds).then(() => undefined);
    this.tail = result.then(settleHolds, settleHolds);
    return result;
  }

  /** Tasks queued and not yet started. */
  get pending(): number {
    return this.waiting;
  }

  /** Resolves when everything queued so far has finished. */
  idle(): Promise<void> {
    return this.tail;
  }
}
