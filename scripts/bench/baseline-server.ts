import express from 'express';

/**
 * The benchmark's yardstick: a bare Express 5 route returning 1 KB of JSON. Every Custodian
 * figure is reported as a ratio to this, measured in the same run on the same machine.
 */
const body = { resourceType: 'Basic', id: 'baseline', text: 'x'.repeat(960) };
const app = express();
app.get('/baseline', (_req, res) => {
  res.json(body);
});
const server = app.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`listening at http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
