import type { Logger } from '../log';

/** The audit chain's head as the log records it (see store/audit-chain.ts). */
export interface LoggedHead {
  readonly seq: number;
  readonly hash: string;
  readonly links: number;
}

/**
 * Writes the audit chain's head to the structured log: at start, every `intervalMs` when it has
 * moved, and at shutdown. The head in the database makes a cut end of the chain visible, but
 * someone who can write the whole database can rewrite events, links and head together; a head
 * that has left the database (the log shipped to another system, an operator's notes) cannot be
 * rewritten with them, and `$verify?anchor=LINK:HASH` checks the chain still holds it.
 *
 * The line: `{"level":"info","message":"audit chain head","link":…,"hash":"…","links":…}` — at
 * `info`, so `LOG_LEVEL=error` or `silent` leaves it out.
 */
export class ChainHeadLog {
  private timer: NodeJS.Timeout | undefined;
  private last: string | undefined;
  private running: Promise<LoggedHead | undefined> | undefined;

  constructor(
    private readonly read: () => Promise<LoggedHead | undefined>,
    private readonly logger: Logger,
    /** How often to look; 0: only at start and shutdown. */
    private readonly intervalMs: number,
  ) {}

  start(): void {
    void this.publish();
    if (this.intervalMs > 0 && !this.timer) this.timer = setInterval(() => void this.publish(), this.intervalMs).unref();
  }

  /** Stops the timer and logs the head one last time (call before the store closes). */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
    await this.publish(true);
  }

  /** Logs the head if it moved since the last line (or `always`); resolves with it. Never throws. */
  publish(always = false): Promise<LoggedHead | undefined> {
    const run = (async () => {
      try {
        const head = await this.read();
        if (!head) {
          this.logger.error('audit chain head is missing: the audit trail cannot be written until it is restored');
          return undefined;
        }
        const key = `${head.seq}:${head.hash}`;
        if (always || key !== this.last) this.logger.info('audit chain head', { link: head.seq, hash: head.hash, links: head.links });
        this.last = key;
        return head;
      } catch (err) {
        this.logger.error('audit chain head could not be read', { error: String(err) });
        return undefined;
      }
    })();
    this.running = run;
    return run;
  }
}
