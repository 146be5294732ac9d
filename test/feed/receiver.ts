import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Received {
  readonly method: string;
  readonly path: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

/**
 * A notification endpoint on loopback: records every request and answers with `status` (a test
 * may change it, e.g. to 500 to make deliveries fail).
 */
export class Receiver {
  readonly received: Received[] = [];
  status = 200;
  /** Paths that answer 500 whatever `status` says. */
  readonly failing = new Set<string>();
  private server!: http.Server;
  port = 0;

  static async start(port = 0): Promise<Receiver> {
    const r = new Receiver();
    r.server = http.createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => (body += c));
      req.on('end', () => {
        r.received.push({ method: req.method!, path: req.url!, headers: req.headers, body });
        res.statusCode = r.failing.has(req.url!) ? 500 : r.status;
        res.end();
      });
    });
    await new Promise<void>((resolve) => r.server.listen(port, '127.0.0.1', resolve));
    r.port = (r.server.address() as AddressInfo).port;
    return r;
  }

  get base(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** `Consent/{id}/_history/{v}` of every notification received for a Subscription path. */
  versions(path?: string): string[] {
    return this.received.filter((r) => !path || r.path === path).map((r) => String(r.headers['x-custodian-resource']));
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
