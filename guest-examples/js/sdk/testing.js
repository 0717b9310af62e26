// Runs a step in Node, through the same binding the component uses (JSON in
// and out, StepResponse, errors as step errors), with host services answered
// by plain functions: unit tests with `node --test`, no Wasm, no host.
//
//   import { invoke, compensate, loadStep } from '@stepwise/sdk/testing';
//   const step = await loadStep(new URL('./step.ts', import.meta.url)); // or import a .js step
//   const result = await invoke(step, { items }, { services: { inventory: { reserve: (r) => ({ units: 2 }) } } });
//   // { ok: { output, compensation } } | { skipped: reason } | { error: { kind, message } }, plus logs and calls
import { bindStep } from './index.js';
import { rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/**
 * The step a module exports (its default), for the helpers below. A
 * TypeScript file has its types stripped first, as the build does (rolldown,
 * a dependency of every step project); its imports resolve from where it is.
 */
export async function loadStep(file) {
  const path = file instanceof URL || String(file).startsWith('file:') ? fileURLToPath(file) : String(file);
  if (!path.endsWith('.ts')) return (await import(pathToFileURL(path).href)).default;
  const { rolldown } = await import('rolldown');
  const bundle = await rolldown({ input: path, external: (id) => !id.startsWith('.') && !id.startsWith('/'), logLevel: 'silent' });
  const { output } = await bundle.generate({ format: 'esm' });
  const stripped = join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now()}.mjs`);
  await writeFile(stripped, output[0].code);
  try {
    return (await import(pathToFileURL(stripped).href)).default;
  } finally {
    await rm(stripped, { force: true });
  }
}

function host({ services = {}, config = {} } = {}, logs, calls) {
  return {
    runtime: 'node',
    log: (level, message) => logs.push({ level, message }),
    call: (service, method, input) => {
      calls.push({ service, method, input: JSON.parse(input) });
      const handler = services[service]?.[method];
      if (typeof handler !== 'function') throw { payload: `no service method \`${service}.${method}\` in the test` };
      try {
        return JSON.stringify(handler(JSON.parse(input)) ?? null);
      } catch (error) {
        throw { payload: error instanceof Error ? error.message : String(error) };
      }
    },
    configGet: (key) => (key in config ? String(config[key]) : null),
  };
}

function context(options = {}) {
  const stepId = options.stepId ?? 'step';
  const executionId = options.executionId ?? 'test-execution';
  return {
    workflow: options.workflow ?? 'test',
    executionId,
    stepId,
    attempt: options.attempt ?? 1,
    idempotencyKey: options.idempotencyKey ?? `${executionId}/${stepId}`,
  };
}

async function settle(run) {
  try {
    return await run();
  } catch (error) {
    if (error && typeof error === 'object' && 'tag' in error) return { error: { kind: error.tag, message: error.val } };
    throw error;
  }
}

/** Calls the step's invoke as the host would. */
export async function invoke(step, input, options = {}) {
  const logs = [];
  const calls = [];
  const bound = bindStep(step, host(options, logs, calls));
  const result = await settle(async () => {
    const outcome = await bound.invoke(context(options), JSON.stringify(input));
    if (outcome.tag === 'skipped') return { skipped: outcome.val };
    const { output, compensation } = outcome.val;
    return { ok: { output: JSON.parse(output), compensation: compensation === undefined ? undefined : JSON.parse(compensation) } };
  });
  return { ...result, logs, calls };
}

/** Calls the step's compensate as the host would. */
export async function compensate(step, data, options = {}) {
  const logs = [];
  const calls = [];
  const bound = bindStep(step, host(options, logs, calls));
  const result = await settle(async () => {
    await bound.compensate(context(options), JSON.stringify(data));
    return { ok: null };
  });
  return { ...result, logs, calls };
}
