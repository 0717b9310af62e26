"""Accept-quote step 3 in Python: authorize the cart total with the host's
`payments` service; compensation voids the authorization.

Errors follow the contract: raise `Err(StepError_Permanent(...))` or
`Err(StepError_Retryable(...))`; any other exception is a trap.
"""

import hashlib
import json

from componentize_py_types import Err
from wit_world import WitWorld as Step
from wit_world.imports import log, services
from wit_world.imports.types import StepError_Permanent, StepError_Retryable, StepResponse


def stable_id(prefix: str, key: str) -> str:
    """The same id for every attempt of this step (its idempotency key)."""
    return f"{prefix}_{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def payments(method: str, request: dict) -> dict:
    try:
        return json.loads(services.call("payments", method, json.dumps(request)))
    except Err as error:
        # A service error is transient: the host retries the step.
        raise Err(StepError_Retryable(f"payments.{method}: {error.value}"))


class WitWorld(Step):
    def invoke(self, ctx, input: str) -> StepResponse:
        request = json.loads(input)
        amount = request.get("amount")
        if not isinstance(amount, int) or amount <= 0:
            raise Err(StepError_Permanent(f"amount must be a positive integer, not {amount!r}"))
        authorization = {
            "authorization_id": stable_id("auth", ctx.idempotency_key),
            "amount": amount,
            "currency": request.get("currency", "EUR"),
        }
        payments("authorize", authorization)
        log.log(log.Level.INFO, f"authorized {amount} as {authorization['authorization_id']} (Python)")
        return StepResponse(output=json.dumps(authorization), compensation=json.dumps(authorization))

    def compensate(self, ctx, data: str) -> None:
        authorization = json.loads(data)
        payments("void", {"authorization_id": authorization["authorization_id"]})
        log.log(log.Level.INFO, f"voided {authorization['authorization_id']} (Python)")
