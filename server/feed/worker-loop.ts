import type { Logger } from '../log';

/**
 * Runs a background worker: `work` is called at once when nudged, again straight away while it
 * reports that it found something to do, and otherwise every `pollMs` (for work queued by other
 * server processes). One call at a time; stop() waits for the running one.
 */
export class WorkerLoop {
  private timer: NodeJS.Timeout | undefined;
  private active: Promise<void> | undefined;
  private again = false;
  private stopped = true;

  constructor(
    private readonly name: string,
    private readonly work: () => Promise<boolean>,
    private readonly pollMs: number,
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  /** Something was queued here: look now rather than at the next poll. */
  nudge(): void {
    if (this.stopped) return;
    if (this.active) this.again = true;
    else this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.active;
  }

  private schedule(delay: number): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.tick(), delay);
    this.timer.unref();
  }

  private tick(): void {
    this.again = false;
    this.active = this.work()
      .catch((err: unknown) => {
        this.logger.error(`${this.name} failed`, { error: err instanceof Error ? err.message : String(err) });
        return false;
      })
      .then((busy) => {
        this.active = undefined;
        this.schedule(busy || this.again ? 0 : this.pollMs);
      });
  }
}
