import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startServer } from '../support/server-process';

/**
 * The server starts Node's thread pool, where SQLite's statements run, with 2 threads unless
 * UV_THREADPOOL_SIZE says otherwise (server/main.ts says why). Counted from the threads the
 * process has, which only Linux's /proc shows.
 */
describe('End to end: the thread pool the server starts', () => {
  it('has 2 threads by default, and as many as UV_THREADPOOL_SIZE asks for when it is set', async function () {
    if (!fs.existsSync('/proc/self/task')) this.skip();
    const threads = async (size: string | undefined): Promise<number> => {
      const env: Record<string, string> = {};
      const saved = process.env.UV_THREADPOOL_SIZE;
      // startServer passes the test process's environment on: the variable is taken out of it for the default.
      delete process.env.UV_THREADPOOL_SIZE;
      if (size !== undefined) env.UV_THREADPOOL_SIZE = size;
      try {
        const server = await startServer(env);
        try {
          // The pool started before the server listened (opening SQLite runs on it).
          assert.equal((await fetch(`${server.baseUrl}/metadata`)).status, 200);
          return fs.readdirSync(`/proc/${server.child.pid}/task`).length;
        } finally {
          await server.stop();
        }
      } finally {
        if (saved !== undefined) process.env.UV_THREADPOOL_SIZE = saved;
      }
    };
    const byDefault = await threads(undefined);
    assert.equal(await threads('4'), byDefault + 2, 'libuv\'s own default would be 4');
    assert.equal(await threads('3'), byDefault + 1);
  });
});
