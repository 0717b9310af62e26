// The cart total in JavaScript, the same logic as the Rust and Python
// `cart-total` steps (the benchmark compares them). Test knobs in the input:
// `fail: "retryable" | "permanent"` raises that error; `throw: "string" |
// "object" | "number"` throws such a value (each a retryable step error with
// what was thrown, never a trap); `spin: true` loops forever (the sandbox
// must stop it).
import { createStep, StepResponse } from '@stepwise/sdk';

export default createStep(
  'cart-total',
  (cart, { attempt, logger }) => {
    if (cart.fail === 'permanent') StepResponse.permanentFailure('failed as asked (permanent, JavaScript)');
    if (cart.fail === 'retryable') throw new Error('failed as asked (retryable, JavaScript)');
    if (cart.throw === 'string') throw 'a thrown string';
    if (cart.throw === 'object') throw { code: 'E42', detail: 'a thrown object' };
    if (cart.throw === 'number') throw 42;
    if (cart.spin) {
      for (;;) {}
    }
    let total = 0;
    let units = 0;
    for (const item of cart.items ?? []) {
      total += item.quantity * item.unit_price;
      units += item.quantity;
    }
    if (attempt > 1) logger.info(`attempt ${attempt}`);
    return { total, units, lines: (cart.items ?? []).length };
  },
  (_data, { logger }) => logger.info('cart-total changed nothing (JavaScript)'),
);
