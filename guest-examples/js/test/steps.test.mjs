// Unit tests of the JavaScript steps, in Node (`node --test` in
// guest-examples/js): the step modules through the SDK's binding, host
// services answered by functions. No Wasm: seconds, not a build.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { invoke, compensate } from '@stepwise/sdk/testing';
import reserveInventory from '../steps/reserve-inventory.js';
import cartTotal from '../steps/cart-total.js';

const inventory = { reserve: (reservation) => ({ units: reservation.items.reduce((n, i) => n + i.quantity, 0) }), release: () => ({}) };

test('reserve-inventory reserves through the inventory service, keyed by the idempotency key', async () => {
  const result = await invoke(reserveInventory, { items: [{ sku: 'A', quantity: 2 }] }, { services: { inventory }, idempotencyKey: 'e1/reserve' });
  assert.match(result.ok.output.reservation_id, /^res_[0-9a-f]{12}$/);
  assert.deepEqual(result.ok.compensation, result.ok.output);
  assert.deepEqual(result.calls.map((c) => c.method), ['reserve']);
  assert.match(result.logs[0].message, /reserved 2 units/);
  const again = await invoke(reserveInventory, { items: [{ sku: 'A', quantity: 2 }] }, { services: { inventory }, idempotencyKey: 'e1/reserve', attempt: 2 });
  assert.equal(again.ok.output.reservation_id, result.ok.output.reservation_id, 'a retry reserves the same id');
});

test('reserve-inventory refuses an empty cart for good, and a failing service is retryable', async () => {
  assert.deepEqual((await invoke(reserveInventory, { items: [] }, { services: { inventory } })).error, { kind: 'permanent', message: 'no items to reserve' });
  const offline = { reserve: () => { throw new Error('warehouse offline'); } };
  const failed = await invoke(reserveInventory, { items: [{ sku: 'A', quantity: 1 }] }, { services: { inventory: offline } });
  assert.equal(failed.error.kind, 'retryable');
  assert.match(failed.error.message, /inventory\.reserve: warehouse offline/);
});

test('reserve-inventory compensation releases the reservation', async () => {
  const undone = await compensate(reserveInventory, { reservation_id: 'res_1', items: [] }, { services: { inventory } });
  assert.deepEqual(undone.calls, [{ service: 'inventory', method: 'release', input: { reservation_id: 'res_1' } }]);
});

test('cart-total sums, and maps its failure knobs to step errors', async () => {
  const cart = { items: [{ quantity: 2, unit_price: 2500 }, { quantity: 1, unit_price: 1200 }] };
  assert.deepEqual((await invoke(cartTotal, cart)).ok.output, { total: 6200, units: 3, lines: 2 });
  const retryable = await invoke(cartTotal, { fail: 'retryable' });
  assert.equal(retryable.error.kind, 'retryable');
  assert.match(retryable.error.message, /^Error: failed as asked/);
  assert.equal((await invoke(cartTotal, { fail: 'permanent' })).error.kind, 'permanent');
});

test('whatever a step throws is a retryable error carrying what was thrown', async () => {
  const thrown = async (kind) => (await invoke(cartTotal, { throw: kind })).error;
  assert.deepEqual(await thrown('string'), { kind: 'retryable', message: 'a thrown string' });
  assert.deepEqual(await thrown('object'), { kind: 'retryable', message: 'thrown: {"code":"E42","detail":"a thrown object"}' });
  assert.deepEqual(await thrown('number'), { kind: 'retryable', message: 'thrown: 42' });
});

test('a value that cannot even be read still becomes a step error', async () => {
  const { createStep } = await import('@stepwise/sdk');
  const hostile = createStep('hostile', () => {
    throw new Proxy({}, { get() { throw new Error('no'); }, has() { throw new Error('no'); } });
  });
  assert.deepEqual((await invoke(hostile, {})).error, { kind: 'retryable', message: 'thrown: a value that cannot be read' });
  const symbol = createStep('symbol', () => { throw Symbol('odd'); });
  assert.deepEqual((await invoke(symbol, {})).error, { kind: 'retryable', message: 'thrown: Symbol(odd)' });
});

test('a service handle logged or put in a string calls nothing', async () => {
  const { createStep } = await import('@stepwise/sdk');
  const step = createStep('peek', (_, { container, logger }) => {
    const inventory = container.resolve('inventory');
    logger.info('using', inventory);
    return { text: `${inventory}`, json: JSON.stringify(inventory), thenable: typeof inventory.then };
  });
  const result = await invoke(step, {}, { services: { inventory } });
  assert.deepEqual(result.calls, []);
  assert.deepEqual(result.ok.output, { text: '[object Object]', json: '{}', thenable: 'undefined' });
  assert.deepEqual(result.logs, [{ level: 'info', message: 'using {}' }]);
});

test('a step error thrown from inside the output keeps its kind and message', async () => {
  const { createStep } = await import('@stepwise/sdk');
  const step = createStep('getter', () => ({ get total() { throw { tag: 'permanent', val: 'the total is unknown' }; } }));
  assert.deepEqual((await invoke(step, {})).error, { kind: 'permanent', message: 'the total is unknown' });
});
