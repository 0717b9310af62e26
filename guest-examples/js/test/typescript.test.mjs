// The TypeScript side, in Node: the SDK's declarations (host interfaces,
// testing and build helpers) accept what they should and refuse what they
// must (test/types/check.ts, with `tsc`), and the TypeScript example step
// runs through the SDK's binding once its types are stripped (`loadStep`),
// as the build strips them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { invoke, compensate, loadStep } from '@stepwise/sdk/testing';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');

test("the SDK's types accept a well-typed step and refuse wrong uses", () => {
  const tsc = spawnSync(join(root, 'node_modules/.bin/tsc'), ['-p', join(here, 'types')], { encoding: 'utf8' });
  assert.equal(tsc.status, 0, `${tsc.stdout}${tsc.stderr}`);
});

test('gift-wrap (TypeScript, async) reserves a wrap per gift, skips without one, and releases on compensate', async () => {
  const giftWrap = await loadStep(join(root, 'steps/gift-wrap.ts'));
  const inventory = { reserve: (wraps) => ({ units: wraps.items.reduce((n, item) => n + item.quantity, 0) }), release: () => ({}) };
  const items = [{ sku: 'A', quantity: 2, gift: true }, { sku: 'B', quantity: 1 }];
  const done = await invoke(giftWrap, { items }, { services: { inventory }, idempotencyKey: 'e1/wrap' });
  assert.deepEqual(done.ok.output, { wrapped: 2 });
  assert.deepEqual(done.calls[0].input, { reservation_id: 'wrap-e1/wrap', items: [{ sku: 'WRAP-A', quantity: 2 }] });
  assert.deepEqual(await invoke(giftWrap, { items: [{ sku: 'B', quantity: 1 }] }, { services: { inventory } }), {
    skipped: 'no item is a gift',
    logs: [],
    calls: [],
  });
  const rejected = await invoke(giftWrap, { items, reject: 'wrapping paper ran out' }, { services: { inventory } });
  assert.equal(rejected.error.kind, 'retryable');
  assert.match(rejected.error.message, /wrapping paper ran out/);
  const undone = await compensate(giftWrap, done.ok.compensation, { services: { inventory } });
  assert.deepEqual(undone.calls, [{ service: 'inventory', method: 'release', input: { reservation_id: 'wrap-e1/wrap' } }]);
});
