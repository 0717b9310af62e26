// The `{{name}}` step: a Stepwise step component in JavaScript (world `step-log`).
//
// Return `{ output, compensation }` (JSON strings; `compensation` may be
// undefined). Throw `{ tag: 'retryable', val: '...' }` for a transient failure
// (the host retries) or `{ tag: 'permanent', val: '...' }` (the saga
// compensates); anything else thrown is a trap. Record fields are camelCase.
import { log } from 'stepwise:step/log@0.1.0';

export function invoke(ctx, input) {
  const { name } = JSON.parse(input);
  if (typeof name !== 'string') {
    throw { tag: 'permanent', val: '`name` is missing' };
  }
  log('info', `greeting ${name} (attempt ${ctx.attempt})`);
  return { output: JSON.stringify({ greeting: `Hello, ${name}!` }), compensation: undefined };
}

export function compensate(ctx, data) {
  log('info', `nothing to undo for ${data}`);
}
