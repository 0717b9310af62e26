"""The `{{name}}` step: a Stepwise step component in Python (world `step-log`).

Return a `StepResponse(output=..., compensation=...)` (JSON strings;
`compensation` may be None). Raise `Err(StepError_Retryable(...))` for a
transient failure (the host retries) or `Err(StepError_Permanent(...))` (the
saga compensates); any other exception is a trap.
"""

import json

from componentize_py_types import Err
from wit_world import WitWorld as Step
from wit_world.imports import log
from wit_world.imports.types import StepError_Permanent, StepResponse


class WitWorld(Step):
    def invoke(self, ctx, input: str) -> StepResponse:
        name = json.loads(input).get("name")
        if not isinstance(name, str):
            raise Err(StepError_Permanent("`name` is missing"))
        log.log(log.Level.INFO, f"greeting {name} (attempt {ctx.attempt})")
        return StepResponse(output=json.dumps({"greeting": f"Hello, {name}!"}), compensation=None)

    def compensate(self, ctx, data: str) -> None:
        log.log(log.Level.INFO, f"nothing to undo for {data}")
