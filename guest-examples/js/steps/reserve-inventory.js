// Accept-quote step 2 in JavaScript, written as a Medusa developer would:
// reserve stock for every item of the cart through the host's `inventory`
// service; compensation releases it.
import { createStep, StepResponse } from '@stepwise/sdk';

/** FNV-1a over the key: the same id for every attempt of this step. */
function stableId(prefix, key) {
  let hash = 0xcbf29ce484222325n;
  // The key's UTF-8 bytes (QuickJS has no TextEncoder).
  const bytes = unescape(encodeURIComponent(key));
  for (let i = 0; i < bytes.length; i++) {
    hash = BigInt.asUintN(64, (hash ^ BigInt(bytes.charCodeAt(i))) * 0x100000001b3n);
  }
  return `${prefix}_${(hash & 0xffffffffffffn).toString(16).padStart(12, '0')}`;
}

export default createStep(
  'reserve-inventory',
  ({ items }, { container, logger, idempotencyKey }) => {
    if (!Array.isArray(items) || items.length === 0) StepResponse.permanentFailure('no items to reserve');
    const empty = items.find((item) => !(item.quantity > 0));
    if (empty) StepResponse.permanentFailure(`item ${empty.sku} has quantity 0`);
    const reservation = {
      reservation_id: stableId('res', idempotencyKey),
      items: items.map(({ sku, quantity }) => ({ sku, quantity })),
    };
    // A service error is transient: thrown on, the host retries the step.
    const reserved = container.resolve('inventory').reserve(reservation);
    logger.info(`reserved ${reserved.units} units as ${reservation.reservation_id} (JavaScript)`);
    return new StepResponse(reservation, reservation);
  },
  (reservation, { container, logger }) => {
    container.resolve('inventory').release({ reservation_id: reservation.reservation_id });
    logger.info(`released reservation ${reservation.reservation_id} (JavaScript)`);
  },
);
