// The cart total in JavaScript, the same logic as the Rust and Python
// `cart-total` steps (the benchmark compares them). Test knobs in the input:
// `fail: "retryable" | "permanent"` raises that error; `spin: true` loops
// forever (the sandbox must stop it).
import { log } from 'stepwise:step/log@0.1.0';

export function invoke(ctx, input) {
  const cart = JSON.parse(input);
  if (cart.fail === 'retryable' || cart.fail === 'permanent') {
    throw { tag: cart.fail, val: `failed as asked (${cart.fail}, JavaScript)` };
  }
  if (cart.spin) {
    for (;;) {}
  }
  let total = 0;
  let units = 0;
  for (const item of cart.items ?? []) {
    total += item.quantity * item.unit_price;
    units += item.quantity;
  }
  if (ctx.attempt > 1) {
    log('info', `attempt ${ctx.attempt}`);
  }
  return { output: JSON.stringify({ total, units, lines: (cart.items ?? []).length }), compensation: undefined };
}

export function compensate(ctx, data) {
  log('info', 'cart-total changed nothing (JavaScript)');
}
