;; The raw step contract, with no language runtime: a core module that
;; follows the component model's canonical ABI by hand for world
;; `stepwise:step/step-log@0.1.0`. `invoke` returns its input as its output
;; (no compensation data); `compensate` succeeds. scripts/build-guests.sh
;; embeds the WIT and wraps it into a component (wasm-tools, from jco).
(module
  (memory (export "memory") 1)
  ;; Bump allocator: the host copies strings in through `cabi_realloc`.
  (global $next (mut i32) (i32.const 1024))

  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
    (local $ptr i32)
    ;; Align the next free byte.
    (local.set $ptr
      (i32.and
        (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
        (i32.xor (i32.sub (local.get $align) (i32.const 1)) (i32.const -1))))
    (global.set $next (i32.add (local.get $ptr) (local.get $size)))
    ;; Grow the memory when the allocation does not fit.
    (block $fits
      (br_if $fits (i32.le_u (global.get $next) (i32.mul (memory.size) (i32.const 65536))))
      (drop (memory.grow (i32.add (i32.shr_u (i32.sub (global.get $next) (i32.mul (memory.size) (i32.const 65536))) (i32.const 16)) (i32.const 1)))))
    (local.get $ptr))

  ;; invoke(ctx: step-context, input: json) -> result<step-response, step-error>
  ;; Flattened parameters: workflow, execution-id, step-id (ptr, len each),
  ;; attempt, idempotency-key (ptr, len), input (ptr, len). The result is
  ;; returned in memory (offset 0: 0 = ok; 4/8: output ptr/len; 12: 0 = no
  ;; compensation data).
  (func (export "invoke")
    (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (param $input i32) (param $input_len i32) (result i32)
    (i32.store8 (i32.const 0) (i32.const 0))
    (i32.store (i32.const 4) (local.get $input))
    (i32.store (i32.const 8) (local.get $input_len))
    (i32.store8 (i32.const 12) (i32.const 0))
    (i32.const 0))

  ;; compensate(ctx: step-context, data: json) -> result<_, step-error>: ok.
  (func (export "compensate")
    (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (i32.store8 (i32.const 32) (i32.const 0))
    (i32.const 32))
)
