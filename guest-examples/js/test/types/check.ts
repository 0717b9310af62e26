// Type-checked by test/types.test.mjs (`tsc -p test/types`): what the SDK's
// declarations accept, and (`@ts-expect-error`) what they must refuse. An
// expected error that does not happen fails the check too.
import { createStep, StepResponse } from '@stepwise/sdk';
import { invoke, compensate, loadStep } from '@stepwise/sdk/testing';
import { buildStep, worldFor } from '@stepwise/sdk/build';
import { log } from 'stepwise:step/log@0.1.0';
import { call } from 'stepwise:step/services@0.1.0';
import * as config from 'stepwise:step/config@0.1.0';
import * as kv from 'stepwise:step/kv@0.1.0';

const step = createStep(
  'typed',
  async (input: { sku: string }, { container, logger, idempotencyKey }) => {
    logger.info('reserving', input.sku);
    const inventory = container.resolve<{ reserve(input: { sku: string; key: string }): { units: number } }>('inventory');
    const { units } = inventory.reserve({ sku: input.sku, key: idempotencyKey });
    return new StepResponse({ units }, { sku: input.sku });
  },
  async (data: { sku: string }, { logger }) => {
    logger.info('releasing', data.sku);
  },
);

// The raw host interfaces, as the WIT has them (JSON as strings).
log('info', 'hello');
// @ts-expect-error: no such level
log('loud', 'hello');
const answer: string = call('inventory', 'reserve', JSON.stringify({ sku: 'A' }));
// @ts-expect-error: the input is JSON text, not an object
call('inventory', 'reserve', { sku: 'A' });
const limit: string | undefined = config.get('max_total');
kv.set('seen', answer);
// @ts-expect-error: values are strings
kv.set('seen', 1);
const existed: boolean = kv.delete('seen');
const stored: string | undefined = kv.get('seen');

// The testing helpers: results are told apart by their keys.
async function tests() {
  const result = await invoke(step, { sku: 'A' }, { services: { inventory: { reserve: () => ({ units: 1 }) } } });
  if ('ok' in result) {
    const units: number = result.ok.output.units;
    const sku: string | undefined = result.ok.compensation?.sku;
    void [units, sku];
  } else if ('error' in result) {
    const kind: 'retryable' | 'permanent' = result.error.kind;
    void kind;
  }
  // @ts-expect-error: the input has the step's type
  await invoke(step, { sku: 1 });
  const undone = await compensate(step, { sku: 'A' }, { attempt: 2 });
  const loaded = await loadStep<{ sku: string }, { units: number }, { sku: string }>(new URL('./step.ts', import.meta.url));
  void loaded.name;
  void undone.logs.map((line) => line.level);
}

// The build API.
async function build() {
  const built = await buildStep({ source: 'step.ts', output: 'step.wasm', wit: 'wit', runtime: 'quickjs' });
  const world: 'skippable-step-log' | 'skippable-step-services' | 'skippable-step-kv' | 'skippable-step' = built.world;
  // @ts-expect-error: no such runtime
  await buildStep({ source: 'step.ts', output: 'step.wasm', wit: 'wit', runtime: 'v8' });
  void [world, worldFor('[capabilities]\nkv = true\nconfig = true\n')];
}

void [limit, existed, stored, tests, build];
