// Accept-quote step 2 in JavaScript: reserve stock for every item of the cart
// through the host's `inventory` service; compensation releases it.
//
// Errors follow the contract: `throw { tag: 'permanent', val: '...' }` or
// `{ tag: 'retryable', ... }` become `step-error`; anything else thrown is a
// trap. Record fields are camelCase (`ctx.idempotencyKey`).
import { log } from 'stepwise:step/log@0.1.0';
import { call } from 'stepwise:step/services@0.1.0';

/** FNV-1a over the key: the same id for every attempt of this step. */
function stableId(prefix, key) {
  let hash = 0xcbf29ce484222325n;
  for (const byte of new TextEncoder().encode(key)) {
    hash = BigInt.asUintN(64, (hash ^ BigInt(byte)) * 0x100000001b3n);
  }
  return `${prefix}_${(hash & 0xffffffffffffn).toString(16).padStart(12, '0')}`;
}

function service(method, input) {
  try {
    return JSON.parse(call('inventory', method, JSON.stringify(input)));
  } catch (error) {
    // A service error is transient: the host retries the step.
    throw { tag: 'retryable', val: `inventory.${method}: ${error.payload ?? error}` };
  }
}

export function invoke(ctx, input) {
  const { items } = JSON.parse(input);
  if (!Array.isArray(items) || items.length === 0) {
    throw { tag: 'permanent', val: 'no items to reserve' };
  }
  const empty = items.find(item => !(item.quantity > 0));
  if (empty) {
    throw { tag: 'permanent', val: `item ${empty.sku} has quantity 0` };
  }
  const reservation = {
    reservation_id: stableId('res', ctx.idempotencyKey),
    items: items.map(({ sku, quantity }) => ({ sku, quantity })),
  };
  const reserved = service('reserve', reservation);
  log('info', `reserved ${reserved.units} units as ${reservation.reservation_id} (JavaScript)`);
  return { output: JSON.stringify(reservation), compensation: JSON.stringify(reservation) };
}

export function compensate(ctx, data) {
  const reservation = JSON.parse(data);
  service('release', { reservation_id: reservation.reservation_id });
  log('info', `released reservation ${reservation.reservation_id} (JavaScript)`);
}
