//! Accept-quote step 3: authorize the payment for the cart total.
//!
//! Authorizes through the host's `payments` service; declines (a permanent
//! error) amounts above `limit`. Compensation voids the authorization; the
//! compensation data carries only what voiding needs.

use serde::{Deserialize, Serialize};
use stepwise_guest::*;

#[derive(Deserialize)]
struct Input {
    amount: u64,
    currency: String,
    #[serde(default = "default_limit")]
    limit: u64,
}

fn default_limit() -> u64 {
    1_000_000
}

#[derive(Serialize)]
struct Authorization {
    authorization_id: String,
    amount: u64,
    currency: String,
    status: &'static str,
}

#[derive(Serialize, Deserialize)]
struct Void {
    authorization_id: String,
    amount: u64,
}

struct AuthorizePayment;

impl Guest for AuthorizePayment {
    fn invoke(ctx: StepContext, input: Json) -> Result<StepResponse, StepError> {
        let input: Input = parse(&input)?;
        if input.amount > input.limit {
            return Err(StepError::Permanent(format!(
                "payment declined: {} {} exceeds the limit of {}",
                input.amount, input.currency, input.limit
            )));
        }
        let authorization_id = stable_id("auth", &ctx.idempotency_key);
        let request = serde_json::json!({ "authorization_id": authorization_id, "amount": input.amount });
        let _: serde_json::Value = call_service("payments", "authorize", &request)?;
        info(&format!("authorized {} {} as {authorization_id}", input.amount, input.currency));
        let void = Void { authorization_id: authorization_id.clone(), amount: input.amount };
        let authorization =
            Authorization { authorization_id, amount: input.amount, currency: input.currency, status: "authorized" };
        Ok(respond(&authorization, &void))
    }

    fn compensate(_ctx: StepContext, data: Json) -> Result<(), StepError> {
        let void: Void = parse(&data)?;
        let request = serde_json::json!({ "authorization_id": void.authorization_id });
        let _: serde_json::Value = call_service("payments", "void", &request)?;
        info(&format!("voided authorization {} of {}", void.authorization_id, void.amount));
        Ok(())
    }
}

stepwise_guest::export!(AuthorizePayment with_types_in stepwise_guest::bindings);
