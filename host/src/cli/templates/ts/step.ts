// The `{{name}}` step in TypeScript, written with @stepwise/sdk (Medusa's
// createStep, for Stepwise). `./build.sh` type-checks it (tsc) and builds it.
// Return a value (the output), `new StepResponse(output, compensationData)`
// or `StepResponse.skip(reason)`; throw anything for a retryable error,
// `StepResponse.permanentFailure(message)` for a permanent one. Host services
// granted in {{name}}.toml: `container.resolve('name')`.
import { createStep, StepResponse } from '@stepwise/sdk';

interface Input {
  name?: string;
}

export default createStep(
  '{{name}}',
  async ({ name }: Input, { logger, attempt }) => {
    if (typeof name !== 'string') StepResponse.permanentFailure('`name` is missing');
    logger.info(`greeting ${name} (attempt ${attempt})`);
    return new StepResponse({ greeting: `Hello, ${name}!` }, { name });
  },
  async (data: { name: string }, { logger }) => logger.info(`nothing to undo for ${data.name}`),
);
