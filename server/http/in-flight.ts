import type { NextFunction, Request, Response } from 'express';

/**
 * The requests this app has begun and not yet finished, for graceful shutdown.
 *
 * A request counts from its first middleware until its response has really ended: after the
 * audit hold released it (audit/hold.ts), so after its AuditEvents are committed. A client that
 * hangs up does not end its request early: the handler and the audit commit still run, and the
 * database must stay open for them. Once draining, every response says `Connection: close`, so
 * keep-alive clients stop sending on connections the server is about to close.
 */
export class InFlight {
  private count = 0;
  private draining = false;
  private waiters: (() => void)[] = [];

  /** Requests begun and not yet ended. */
  get size(): number {
    return this.count;
  }

  /** The first middleware of the app. */
  readonly track = (_req: Request, res: Response, next: NextFunction): void => {
    this.count++;
    const end = res.end.bind(res) as (...args: unknown[]) => Response;
    let ended = false;
    res.end = ((...args: unknown[]): Response => {
      if (this.draining && !res.headersSent) res.setHeader('Connection', 'close');
      try {
        return end(...args);
      } finally {
        if (!ended) {
          ended = true;
          this.count--;
          if (this.count === 0) for (const wake of this.waiters.splice(0)) wake();
        }
      }
    }) as Response['end'];
    next();
  };

  /** Starts draining; resolves when no request is in flight. */
  drain(): Promise<void> {
    this.draining = true;
    if (this.count === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}
