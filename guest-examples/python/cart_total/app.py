"""The cart total in Python, the same logic as the Rust and JavaScript
`cart-total` steps (the benchmark compares them). Test knobs in the input:
`fail: "retryable" | "permanent"` raises that error; `spin: true` loops
forever (the sandbox must stop it).
"""

import json

from componentize_py_types import Err
from wit_world import WitWorld as Step
from wit_world.imports import log
from wit_world.imports.types import StepError_Permanent, StepError_Retryable, StepResponse


class WitWorld(Step):
    def invoke(self, ctx, input: str) -> StepResponse:
        cart = json.loads(input)
        fail = cart.get("fail")
        if fail == "retryable":
            raise Err(StepError_Retryable("failed as asked (retryable, Python)"))
        if fail == "permanent":
            raise Err(StepError_Permanent("failed as asked (permanent, Python)"))
        if cart.get("spin"):
            while True:
                pass
        items = cart.get("items") or []
        total = sum(item["quantity"] * item["unit_price"] for item in items)
        units = sum(item["quantity"] for item in items)
        if ctx.attempt > 1:
            log.log(log.Level.INFO, f"attempt {ctx.attempt}")
        return StepResponse(output=json.dumps({"total": total, "units": units, "lines": len(items)}), compensation=None)

    def compensate(self, ctx, data: str) -> None:
        log.log(log.Level.INFO, "cart-total changed nothing (Python)")
