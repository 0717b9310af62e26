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
      // Half an emoji (a lone surrogate), as a careless slice leaves it.
      logger.info(`cut: ${'\u{1F600}'.slice(0, 1)}`);
      console.log('from console', { n: 1 });
      return {};
    // What the sandbox must stop: runaway recursion and allocation.
    case 'recurse': {
      const down = (n) => down(n + 1) + 1;
      return { depth: down(0) };
    }
    case 'recurse-caught': {
      let depth = 0;
      const down = (n) => {
        depth = n;
        return down(n + 1) + 1;
      };
      try {
        down(0);
      } catch (error) {
        return { caught: `${error.name}: ${error.message}`, depth };
      }
      return {};
    }
    case 'allocate': {
      const chunks = [];
      for (;;) chunks.push(new Array(1 << 16).fill(chunks.length));
    }
    default:
      return StepResponse.permanentFailure(`unknown probe ${input.probe}`);
  }
});
