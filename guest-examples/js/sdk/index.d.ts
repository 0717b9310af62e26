// Types of @stepwise/sdk (see index.js).
/// <reference path="./host.d.ts" />

/** What the host tells a step about the call. */
export interface StepContext {
  /** The workflow's name. */
  workflow: string;
  /** The execution's id. */
  executionId: string;
  /** The step's id in the workflow (`reserve`, `check[2]` in a fan-out). */
  stepId: string;
  /** The name given to `createStep`. */
  stepName: string;
  /** The attempt, from 1 (invoke and compensate count separately). */
  attempt: number;
  /** The same for every attempt of this step of this execution: pass it to external systems. */
  idempotencyKey: string;
  /** Lines into the execution's timeline. */
  logger: Logger;
  /** The host services granted in the manifest (`capabilities.services`). */
  container: Container;
  /** Settings and secrets from the manifest (`capabilities.config`; a `kv` world). */
  config: { get(key: string): string | undefined };
  /** The context itself, for steps that destructure `{ container, context }` as in Medusa. */
  context: StepContext;
}

export interface Logger {
  trace(...parts: unknown[]): void;
  debug(...parts: unknown[]): void;
  info(...parts: unknown[]): void;
  warn(...parts: unknown[]): void;
  error(...parts: unknown[]): void;
}

/** A host service: every method takes one JSON value and returns one (errors are retryable). */
export type Service = { [method: string]: (input?: unknown) => any };

export interface Container {
  /** The host service `name`; its methods call the host. */
  resolve<S = Service>(name: string): S;
}

/** A marker returned by `StepResponse.skip()`. */
export interface SkipResponse {
  readonly __stepwiseSkip: never;
}

export class StepResponse<Output = unknown, CompensationData = Output> {
  constructor(output: Output, compensationData?: CompensationData);
  output: Output;
  compensationData?: CompensationData;
  /** Fails the step for good (no retry; the saga compensates). Throws. */
  static permanentFailure(message?: string): never;
  /** The step had nothing to do: it and the steps reading its output are skipped. */
  static skip(reason?: string): SkipResponse;
}

export class PermanentFailure extends Error {}
export class ServiceError extends Error {}

type Returned<Output> = StepResponse<Output, any> | SkipResponse | Output;

export interface Step<Input, Output, CompensationData> {
  name: string;
  invoke(input: Input, context: StepContext): Returned<Output> | Promise<Returned<Output>>;
  compensate?(data: CompensationData, context: StepContext): void | Promise<void>;
}

/** A step: sync or async `invoke` and optional `compensate`; export it as the module's default. */
export function createStep<Input = any, Output = any, CompensationData = any>(
  name: string,
  invoke: (input: Input, context: StepContext) => Returned<Output> | Promise<Returned<Output>>,
  compensate?: (data: CompensationData, context: StepContext) => void | Promise<void>,
): Step<Input, Output, CompensationData>;

export function isAsync(fn: unknown): boolean;
