/**
 * SQLite's one write lock, shared between the threads of one process: the main thread's writer
 * connection (ordinary write transactions) and the audit worker's (see audit-worker.ts).
 *
 * SQLite serialises writers itself, but a connection that finds the database locked retries on
 * a back-off of up to 100 ms (busy_timeout), which would be the latency of every audited request
 * queued behind a write. So each side takes this lock before `BEGIN IMMEDIATE` and releases it
 * after `COMMIT` or `ROLLBACK`; waiting costs one wake-up. The lock is handed straight to the
 * other side when it is waiting, so neither side can starve the other.
 *
 * One holder per side at a time: each side's transactions are already serialised (the driver's
 * group-commit queue, the worker's loop), and acquire() throws if that is ever not so.
 */
export type LockSide = 'main' | 'worker';

const OWNER = 0;
const FREE = 0;
const SIDE = { main: 1, worker: 2 } as const;
/** Index of each side's "waiting" flag. */
const WAITING = { main: 1, worker: 2 } as const;

/** Atomics.waitAsync (ES2024; in Node since 16), typed here because the project's lib is ES2022. */
type WaitAsync = (array: Int32Array, index: number, value: number, timeout?: number) => { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

/** One side's handle on the shared writer lock (see above). */
export class WriterLock {
  private readonly state: Int32Array;
  private readonly me: number;
  private readonly other: LockSide;
  private acquiring = false;

  /** The shared memory of a new lock, to hand to both sides. */
  static buffer(): SharedArrayBuffer {
    return new SharedArrayBuffer(3 * Int32Array.BYTES_PER_ELEMENT);
  }

  constructor(
    buffer: SharedArrayBuffer,
    private readonly side: LockSide,
  ) {
    this.state = new Int32Array(buffer);
    this.me = SIDE[side];
    this.other = side === 'main' ? 'worker' : 'main';
  }

  /** Whether this side holds the lock. */
  get held(): boolean {
    return Atomics.load(this.state, OWNER) === this.me;
  }

  /** Resolves once this side holds the lock. */
  async acquire(): Promise<void> {
    if (this.acquiring || this.held) throw new Error(`the ${this.side} side already holds or awaits the writer lock`);
    this.acquiring = true;
    Atomics.store(this.state, WAITING[this.side], 1);
    // A pending Atomics.waitAsync does not keep the process alive, and the other side may be a
    // worker that does not either: a script waiting for the lock would simply exit.
    let keepAlive: NodeJS.Timeout | undefined;
    try {
      for (;;) {
        const owner = Atomics.compareExchange(this.state, OWNER, FREE, this.me);
        // FREE: taken now; me: handed over by the other side while this one waited.
        if (owner === FREE || owner === this.me) return;
        const wait = waitAsync(this.state, OWNER, owner);
        if (wait.async) {
          keepAlive ??= setInterval(() => undefined, 60000);
          await wait.value;
        }
      }
    } finally {
      clearInterval(keepAlive);
      Atomics.store(this.state, WAITING[this.side], 0);
      this.acquiring = false;
    }
  }

  /** Releases the lock: straight to the other side when it is waiting. */
  release(): void {
    if (!this.held) throw new Error(`the ${this.side} side does not hold the writer lock`);
    Atomics.store(this.state, OWNER, Atomics.load(this.state, WAITING[this.other]) ? SIDE[this.other] : FREE);
    Atomics.notify(this.state, OWNER);
  }

  /**
   * Frees the lock if `side` holds it: for the main thread when the worker died (its connection
   * went with it, and SQLite's lock with the connection).
   */
  releaseFor(side: LockSide): void {
    if (Atomics.compareExchange(this.state, OWNER, SIDE[side], FREE) === SIDE[side]) Atomics.notify(this.state, OWNER);
  }
}
