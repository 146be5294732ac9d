import assert from 'node:assert/strict';
import { patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

describe('Foundation: concurrent updates never lose a version', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());

  it('20 parallel If-Match updates of one resource: exactly one wins, the rest get 412', async () => {
    await h.api.put('/Patient/race', patient({ id: 'race' }));
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => h.api.put('/Patient/race', patient({ id: 'race', name: [{ family: `Writer${i}` }] }), { 'If-Match': 'W/"1"' })),
    );
    const statuses = results.map((r) => r.status).sort();
    assert.equal(statuses.filter((s) => s === 200).length, 1, statuses.join(','));
    assert.equal(statuses.filter((s) => s === 412).length, 19);
    const winner = results.find((r) => r.status === 200)!.body.name[0].family;
    const current = (await h.api.get('/Patient/race')).body;
    assert.equal(current.meta.versionId, '2');
    assert.equal(current.name[0].family, winner);
  });

  it('20 parallel unconditional updates each make their own version, with no gaps in history', async () => {
    await h.api.put('/Patient/race2', patient({ id: 'race2' }));
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => h.api.put('/Patient/race2', patient({ id: 'race2', name: [{ family: `W${i}` }] }))));
    assert.ok(results.every((r) => r.status === 200));
    assert.deepEqual(results.map((r) => Number(r.body.meta.versionId)).sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i + 2));
    const history = (await h.api.get('/Patient/race2/_history?_count=100')).body;
    assert.deepEqual(history.entry.map((e: { response: { etag: string } }) => e.response.etag), Array.from({ length: 21 }, (_, i) => `W/"${21 - i}"`));
  });

  it('parallel update-as-create of one new id makes version 1 once and then updates', async () => {
    const results = await Promise.all(Array.from({ length: 10 }, () => h.api.put('/Patient/fresh', patient({ id: 'fresh' }))));
    assert.equal(results.filter((r) => r.status === 201).length, 1);
    assert.equal(results.filter((r) => r.status === 200).length, 9);
    assert.equal((await h.api.get('/Patient/fresh')).body.meta.versionId, '10');
  });
});
