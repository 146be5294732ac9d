import assert from 'node:assert/strict';
import { patient } from '../support/fixtures';
import { startHarness, type Harness } from '../support/harness';

describe('Foundation: conditional create, update and delete', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());

  const ident = (value: string) => ({ identifier: [{ system: 'urn:test:mrn', value }] });
  const total = async (q: string) => (await h.api.get(`/Patient?${q}&_summary=count`)).body.total as number;

  it('If-None-Exist: creates when nothing matches, returns the match (200) when one does, 412 when several do', async () => {
    const first = await h.api.post('/Patient', patient(ident('c-1')), { 'If-None-Exist': 'identifier=urn:test:mrn|c-1' });
    assert.equal(first.status, 201);
    const again = await h.api.post('/Patient', patient(ident('c-1')), { 'If-None-Exist': 'identifier=urn:test:mrn|c-1' });
    assert.equal(again.status, 200);
    assert.equal(again.body.id, first.body.id);
    assert.equal(await total('identifier=urn:test:mrn|c-1'), 1);
    await h.api.post('/Patient', patient(ident('c-2')));
    await h.api.post('/Patient', patient(ident('c-2')));
    const many = await h.api.post('/Patient', patient(ident('c-2')), { 'If-None-Exist': 'identifier=urn:test:mrn|c-2' });
    assert.equal(many.status, 412);
    assert.equal(await total('identifier=urn:test:mrn|c-2'), 2);
  });

  it('If-None-Exist with an unknown parameter is a 400 (it must not silently match everything)', async () => {
    const res = await h.api.post('/Patient', patient(), { 'If-None-Exist': 'colour=blue' });
    assert.equal(res.status, 400);
    assert.match(res.body.issue[0].diagnostics, /colour/);
    assert.equal((await h.api.post('/Patient', patient(), { 'If-None-Exist': '' })).status, 400);
  });

  it('an empty criterion is a 400, not ignored: it must not widen the match to what the other criteria alone find', async () => {
    const only = (await h.api.post('/Patient', patient({ ...ident('empty-1'), name: [{ family: 'Emptyton' }] }))).body.id as string;
    const put = await h.api.put('/Patient?identifier=&family=Emptyton', patient({ ...ident('overwritten'), name: [{ family: 'Emptyton' }] }));
    assert.equal(put.status, 400, put.text);
    assert.match(put.body.issue[0].diagnostics, /identifier/);
    assert.equal((await h.api.delete('/Patient?identifier=&family=Emptyton')).status, 400);
    const create = await h.api.post('/Patient', patient(ident('new-1')), { 'If-None-Exist': 'identifier=&family=Emptyton' });
    assert.equal(create.status, 400);
    const still = await h.api.get(`/Patient/${only}`);
    assert.equal(still.status, 200, 'neither changed nor deleted');
    assert.equal(still.body.identifier[0].value, 'empty-1');
  });

  it('concurrent identical conditional creates make exactly one resource', async () => {
    const results = await Promise.all(
      Array.from({ length: 8 }, () => h.api.post('/Patient', patient(ident('race-1')), { 'If-None-Exist': 'identifier=urn:test:mrn|race-1' })),
    );
    assert.equal(results.filter((r) => r.status === 201).length, 1);
    assert.equal(results.filter((r) => r.status === 200).length, 7);
    assert.equal(await total('identifier=urn:test:mrn|race-1'), 1);
  });

  it('conditional update: creates on no match, updates the one match, 412 on several', async () => {
    const created = await h.api.put('/Patient?identifier=urn:test:mrn|u-1', patient({ ...ident('u-1'), gender: 'male' }));
    assert.equal(created.status, 201);
    const updated = await h.api.put('/Patient?identifier=urn:test:mrn|u-1', patient({ ...ident('u-1'), gender: 'female' }));
    assert.equal(updated.status, 200);
    assert.equal(updated.body.id, created.body.id);
    assert.equal(updated.body.meta.versionId, '2');
    const wrongId = await h.api.put('/Patient?identifier=urn:test:mrn|u-1', patient({ ...ident('u-1'), id: 'someone-else' }));
    assert.equal(wrongId.status, 400);
    const many = await h.api.put('/Patient?identifier=urn:test:mrn|c-2', patient(ident('c-2')));
    assert.equal(many.status, 412);
    assert.equal((await h.api.put('/Patient', patient())).status, 400);
  });

  it('conditional delete: deletes the one match, does nothing on no match, 412 on several', async () => {
    const id = (await h.api.post('/Patient', patient(ident('d-1')))).body.id;
    const res = await h.api.delete('/Patient?identifier=urn:test:mrn|d-1');
    assert.equal(res.status, 204);
    assert.equal((await h.api.get(`/Patient/${id}`)).status, 410);
    const none = await h.api.delete('/Patient?identifier=urn:test:mrn|d-1');
    assert.equal(none.status, 200);
    assert.equal(none.body.resourceType, 'OperationOutcome');
    assert.equal((await h.api.delete('/Patient?identifier=urn:test:mrn|c-2')).status, 412);
    assert.equal(await total('identifier=urn:test:mrn|c-2'), 2);
  });
});
