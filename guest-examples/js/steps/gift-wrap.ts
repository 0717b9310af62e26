// Gift wrapping in TypeScript, async as a Medusa step is: reserves a wrap
// for each item marked `gift`, or skips itself when there is none (the steps
// that read its output are skipped, nothing is compensated). Async: its
// promises settle within the call (host calls are synchronous).
import { createStep, StepResponse } from '@stepwise/sdk';

interface Item {
  sku: string;
  quantity: number;
  gift?: boolean;
}

interface Wraps {
  reservation_id: string;
  items: { sku: string; quantity: number }[];
}

export default createStep(
  'gift-wrap',
  async (input: { items: Item[]; reject?: string }, { container, logger, idempotencyKey }) => {
    // Test knob: a promise rejected inside the async step.
    if (input.reject) await Promise.reject(new Error(input.reject));
    const gifts = (input.items ?? []).filter((item) => item.gift);
    if (gifts.length === 0) return StepResponse.skip('no item is a gift');
    const wraps: Wraps = {
      reservation_id: `wrap-${idempotencyKey}`,
      items: gifts.map((item) => ({ sku: `WRAP-${item.sku}`, quantity: item.quantity })),
    };
    const inventory = container.resolve<{ reserve(input: Wraps): Promise<{ units: number }> | { units: number } }>('inventory');
    const reserved = await inventory.reserve(wraps);
    logger.info(`wrapped ${reserved.units} units (TypeScript)`);
    return new StepResponse({ wrapped: reserved.units }, wraps);
  },
  async (wraps: Wraps, { container, logger }) => {
    await container.resolve('inventory').release({ reservation_id: wraps.reservation_id });
    logger.info(`unwrapped ${wraps.reservation_id} (TypeScript)`);
  },
);
