// Unit tests of the `{{name}}` step in Node (`npm test`): the step module
// through the same binding its component uses (JSON in and out,
// StepResponse, errors as step errors), host services answered by plain
// functions. No Wasm, no host: well under a second. To run the built
// component itself: `stepwise invoke {{name}} --plugins . --input '{...}'`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { invoke, compensate, loadStep } from '@stepwise/sdk/testing';

const step = await loadStep(new URL('./{{source}}', import.meta.url));

test('greets by name, and its compensation undoes nothing', async () => {
  const result = await invoke(step, { name: 'Ada' }, { attempt: 2 });
  assert.deepEqual(result.ok.output, { greeting: 'Hello, Ada!' });
  assert.deepEqual(result.logs, [{ level: 'info', message: 'greeting Ada (attempt 2)' }]);
  const undone = await compensate(step, result.ok.compensation);
  assert.deepEqual(undone.ok, null);
});

test('a missing name fails for good', async () => {
  assert.deepEqual((await invoke(step, {})).error, { kind: 'permanent', message: '`name` is missing' });
});
