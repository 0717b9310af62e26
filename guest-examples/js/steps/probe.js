// A test probe of the QuickJS runtime (tests/languages.rs): each `probe` in
// the input exercises one thing a step can meet inside a call.
import { createStep, StepResponse } from '@stepwise/sdk';
import * as kv from 'stepwise:step/kv@0.1.0';

export default createStep('js-probe', async (input, { config, logger }) => {
  switch (input.probe) {
    // Fresh randomness and the current time in every call (a snapshot must
    // not freeze either).
    case 'random':
      return { random: [Math.random(), Math.random()] };
    case 'now':
      return { now: Date.now() };
    // A promise nothing can settle inside a call.
    case 'never':
      await new Promise(() => {});
      return {};
    case 'fetch':
      await fetch('https://example.com/');
      return {};
    // The raw host interfaces, imported as modules.
    case 'kv':
      kv.set(input.key, input.value);
      return { value: kv.get(input.key) ?? null };
    case 'config':
      return { value: config.get(input.key) ?? null };
    case 'log':
      logger.warn('a warning', { from: 'the probe' });
      return {};
    // What the sandbox must stop: runaway recursion and allocation.
    case 'recurse': {
      const down = (n) => down(n + 1) + 1;
      return { depth: down(0) };
    }
    case 'allocate': {
      const chunks = [];
      for (;;) chunks.push(new Array(1 << 16).fill(chunks.length));
    }
    default:
      return StepResponse.permanentFailure(`unknown probe ${input.probe}`);
  }
});
