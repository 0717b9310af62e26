// Types of the host interfaces (WIT `stepwise:step@0.1.0`) a step may import
// directly instead of going through the SDK's context: each is there only
// when its world has it (see the manifest's `[capabilities]`); an import
// outside the step's world fails the build, naming the grant it needs.
// JSON travels as strings, as in the WIT.

declare module 'stepwise:step/log@0.1.0' {
  export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';
  /** Records a line in the current step's log (always granted). */
  export function log(level: Level, message: string): void;
}

declare module 'stepwise:step/services@0.1.0' {
  /**
   * Calls `method` of the host service `service` with a JSON input; returns
   * its JSON answer. A service's error is thrown (an object whose `payload`
   * is the message). Only services named in `capabilities.services`.
   */
  export function call(service: string, method: string, input: string): string;
}

declare module 'stepwise:step/config@0.1.0' {
  /** A setting or secret from the manifest's `[config]` (`capabilities.config`). */
  export function get(key: string): string | undefined;
}

declare module 'stepwise:step/kv@0.1.0' {
  /** The value stored under `key` in the plugin's private store (`capabilities.kv`). */
  export function get(key: string): string | undefined;
  /** Stores `value` under `key`; throws when the plugin's quota is exceeded. */
  export function set(key: string, value: string): void;
  /** Removes `key`; returns whether it existed. */
  function delete_(key: string): boolean;
  export { delete_ as delete };
}
