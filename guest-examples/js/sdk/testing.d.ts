// Types of @stepwise/sdk/testing (see testing.js): a step's invoke and
// compensate run in Node through the binding the component uses.

import type { Step } from './index.js';

/** How the test answers the host: services (plain functions), config, the context. */
export interface TestOptions {
  /** `{ inventory: { reserve: (input) => answer } }`; a throw is the service's error. */
  services?: { [service: string]: { [method: string]: (input: any) => unknown } };
  config?: { [key: string]: string | number | boolean };
  workflow?: string;
  executionId?: string;
  stepId?: string;
  attempt?: number;
  idempotencyKey?: string;
}

export interface LogLine {
  level: 'trace' | 'debug' | 'info' | 'warn' | 'error';
  message: string;
}

export interface ServiceCall {
  service: string;
  method: string;
  input: unknown;
}

/** What the call returned, as the host would see it, with what it logged and called. */
export type TestResult<Output, CompensationData> = (
  | { ok: { output: Output; compensation?: CompensationData } }
  | { skipped: string }
  | { error: { kind: 'retryable' | 'permanent'; message: string } }
) & { logs: LogLine[]; calls: ServiceCall[] };

export function invoke<Input, Output, CompensationData>(
  step: Step<Input, Output, CompensationData>,
  input: Input,
  options?: TestOptions,
): Promise<TestResult<Output, CompensationData>>;

export function compensate<Input, Output, CompensationData>(
  step: Step<Input, Output, CompensationData>,
  data: CompensationData,
  options?: TestOptions,
): Promise<({ ok: null } | { error: { kind: 'retryable' | 'permanent'; message: string } }) & { logs: LogLine[]; calls: ServiceCall[] }>;

/** The step a module exports (its default); a TypeScript file has its types stripped first. */
export function loadStep<Input = any, Output = any, CompensationData = any>(
  file: string | URL,
): Promise<Step<Input, Output, CompensationData>>;
