// @stepwise/sdk: Stepwise steps in JavaScript, the way Medusa's Workflows SDK
// reads (`createStep`, `StepResponse`, `container.resolve`).
//
// A step file has no host imports of its own:
//
//   import { createStep, StepResponse } from '@stepwise/sdk';
//   export default createStep('reserve-inventory',
//     async (input, { container, logger }) => { ...; return new StepResponse(output, compensationData); },
//     async (compensationData, { container }) => { ... });
//
// The build (`@stepwise/sdk/build`) wraps it with `bindStep`, which turns it
// into the WIT exports `invoke` and `compensate`: JSON text in and out, the
// `step-outcome` and `step-error` variants, the host's log, services and
// config. Whatever the step throws becomes a step error, never a trap.

const SKIP = Symbol('stepwise.skip');

/** What a step returns: its output and the data its compensation receives. */
export class StepResponse {
  /**
   * @param {unknown} output the step's output (`$.steps.<id>.output`)
   * @param {unknown} [compensationData] what `compensate` receives (else the output)
   */
  constructor(output, compensationData) {
    this.output = output;
    this.compensationData = compensationData;
  }

  /** Fails the step for good (no retry; the saga compensates). Throws. */
  static permanentFailure(message = 'permanent failure') {
    throw new PermanentFailure(message);
  }

  /** The step had nothing to do: it and the steps reading its output are skipped. */
  static skip(reason = 'the step skipped itself') {
    return { [SKIP]: String(reason) };
  }
}

/** A failure retrying cannot fix: the step fails and the saga compensates. */
export class PermanentFailure extends Error {
  constructor(message) {
    super(message);
    this.name = 'PermanentFailure';
  }
}

/** A host service call that failed (retryable: the host retries the step). */
export class ServiceError extends Error {
  constructor(service, method, message) {
    super(`${service}.${method}: ${message}`);
    this.name = 'ServiceError';
  }
}

/**
 * A step: `invoke(input, context)` and optionally `compensate(data, context)`,
 * either sync or async.
 */
export function createStep(name, invoke, compensate) {
  if (typeof name !== 'string' || name === '') throw new TypeError('createStep: the first argument is the step name');
  if (typeof invoke !== 'function') throw new TypeError(`createStep('${name}'): invoke must be a function`);
  if (compensate !== undefined && typeof compensate !== 'function') {
    throw new TypeError(`createStep('${name}'): compensate must be a function when given`);
  }
  return { name, invoke, compensate };
}

/** Whether `fn` is an `async` function (it returns a promise). */
export function isAsync(fn) {
  return typeof fn === 'function' && fn.constructor && fn.constructor.name === 'AsyncFunction';
}

/**
 * The WIT exports of `step`. `host` holds the imports the world has: `log`,
 * and when granted `call` (services) and `configGet`; `runtime` names the
 * JavaScript engine (`quickjs` or `spidermonkey`).
 */
export function bindStep(step, host) {
  if (!step || typeof step.invoke !== 'function') {
    throw new TypeError('the step module must `export default createStep(...)`');
  }
  const settle = (value, onValue) => {
    if (value && typeof value.then === 'function') {
      // onValue's own failures (output that is not JSON) are step errors too.
      return value.then(onValue).then(undefined, (error) => {
        throw stepError(error);
      });
    }
    return onValue(value);
  };
  return {
    invoke(ctx, input) {
      try {
        const context = makeContext(step, ctx, host);
        return settle(step.invoke(parseJson(input, 'input'), context), outcome);
      } catch (error) {
        throw stepError(error);
      }
    },
    compensate(ctx, data) {
      if (!step.compensate) return undefined;
      try {
        const context = makeContext(step, ctx, host);
        return settle(step.compensate(parseJson(data, 'compensation data'), context), () => undefined);
      } catch (error) {
        throw stepError(error);
      }
    },
  };
}

function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new PermanentFailure(`the ${what} is not JSON: ${error.message}`);
  }
}

function toJson(value, what) {
  let text;
  try {
    text = JSON.stringify(value === undefined ? null : value);
  } catch (error) {
    // A step error thrown from inside the value (a getter, a toJSON) stays what it is.
    if (isStepError(error)) throw error;
    throw new PermanentFailure(`the ${what} cannot be JSON: ${error && error.message ? error.message : String(error)}`);
  }
  if (text === undefined) throw new PermanentFailure(`the ${what} cannot be JSON (a ${typeof value})`);
  return text;
}

/** A step function's return value as the WIT `step-outcome`. */
function outcome(value) {
  if (value && typeof value === 'object' && SKIP in value) return { tag: 'skipped', val: value[SKIP] };
  if (value instanceof StepResponse) {
    const compensation = value.compensationData === undefined ? undefined : toJson(value.compensationData, 'compensation data');
    return { tag: 'done', val: { output: toJson(value.output, 'output'), compensation } };
  }
  return { tag: 'done', val: { output: toJson(value, 'output'), compensation: undefined } };
}

/** Anything thrown as the WIT `step-error`: permanent or retryable, with its message and stack. */
function stepError(error) {
  try {
    return describeThrown(error);
  } catch {
    // A value that throws when looked at (a hostile getter, a revoked proxy).
    return { tag: 'retryable', val: 'thrown: a value that cannot be read' };
  }
}

function isStepError(error) {
  return error instanceof PermanentFailure || (error && typeof error === 'object' && (error.tag === 'retryable' || error.tag === 'permanent'));
}

function describeThrown(error) {
  if (error && typeof error === 'object' && (error.tag === 'retryable' || error.tag === 'permanent')) {
    return { tag: error.tag, val: String(error.val) };
  }
  if (error instanceof PermanentFailure) return { tag: 'permanent', val: error.message };
  let message;
  if (error instanceof Error) {
    message = `${error.name}: ${error.message}`;
    if (error.stack) message += `\n${String(error.stack).trimEnd()}`;
  } else {
    try {
      const json = typeof error === 'string' ? error : JSON.stringify(error);
      message = typeof error === 'string' ? error : `thrown: ${json === undefined ? String(error) : json}`;
    } catch {
      message = `thrown: ${String(error)}`;
    }
  }
  return { tag: 'retryable', val: message };
}

/**
 * What a step function receives besides its input. Built for every call, so
 * it holds the call's fields and nothing else: the logger, the container
 * and the config are made the first time a step reaches for them, and their
 * methods live on prototypes made once, when the step is loaded.
 */
class StepContext {
  #host;
  constructor(step, ctx, host) {
    this.workflow = ctx.workflow;
    this.executionId = ctx.executionId;
    this.stepId = ctx.stepId;
    this.stepName = step.name;
    this.attempt = ctx.attempt;
    this.idempotencyKey = ctx.idempotencyKey;
    this.#host = host;
  }

  get logger() {
    return own(this, 'logger', new Logger(this.#host));
  }

  get container() {
    return own(this, 'container', new Container(this.#host));
  }

  get config() {
    return own(this, 'config', new Config(this.#host));
  }

  /** Medusa's steps destructure `{ container, context }`. */
  get context() {
    return this;
  }
}

/** Keeps `value` as `object`'s own property `name` (the getter's first answer). */
function own(object, name, value) {
  Object.defineProperty(object, name, { value, enumerable: true });
  return value;
}

function makeContext(step, ctx, host) {
  return new StepContext(step, ctx, host);
}

class Logger {
  #host;
  constructor(host) {
    this.#host = host;
  }
  trace(...parts) {
    this.#line('trace', parts);
  }
  debug(...parts) {
    this.#line('debug', parts);
  }
  info(...parts) {
    this.#line('info', parts);
  }
  warn(...parts) {
    this.#line('warn', parts);
  }
  error(...parts) {
    this.#line('error', parts);
  }
  #line(level, parts) {
    const text = parts.map((part) => (typeof part === 'string' ? part : safeJson(part))).join(' ');
    // A lone surrogate (half an emoji from a slice) must not fail the step's logging.
    this.#host.log(level, typeof text.toWellFormed === 'function' ? text.toWellFormed() : text);
  }
}

class Config {
  #host;
  constructor(host) {
    this.#host = host;
  }
  get(key) {
    if (!this.#host.configGet) throw new Error(`config.get('${key}'): this step's world has no config (grant capabilities.config and build with a kv world)`);
    const value = this.#host.configGet(String(key));
    return value === null ? undefined : value;
  }
}

function safeJson(value) {
  try {
    return value instanceof Error ? `${value.name}: ${value.message}` : JSON.stringify(value);
  } catch {
    return String(value);
  }
}

/** `container.resolve('inventory').reserve(input)` calls the granted host service. */
class Container {
  #host;
  constructor(host) {
    this.#host = host;
  }
  resolve(service) {
    const host = this.#host;
    if (!host.call) {
      throw new Error(`container.resolve('${service}'): this step's world has no services (grant capabilities.services and build with a services world)`);
    }
    return new Proxy({}, {
      get(target, method) {
        // Not service methods: what a promise check, JSON or string conversion
        // (a log line, a template) asks an object for.
        if (typeof method !== 'string' || method === 'then' || method === 'toJSON') return undefined;
        if (method in Object.prototype) return Reflect.get(target, method);
        return (input) => {
          let output;
          try {
            output = host.call(String(service), method, toJson(input, `input of ${service}.${method}`));
          } catch (error) {
            if (error instanceof PermanentFailure) throw error;
            const message = error && typeof error === 'object' && 'payload' in error ? error.payload : error && error.message ? error.message : String(error);
            throw new ServiceError(service, method, message);
          }
          return parseJson(output, `answer of ${service}.${method}`);
        };
      },
    });
  }
}
