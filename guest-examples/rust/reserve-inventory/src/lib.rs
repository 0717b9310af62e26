//! Accept-quote step 2: reserve stock for every item of the cart.
//!
//! Reserves through the host's `inventory` service. The reservation id
//! derives from the idempotency key, so a retried attempt reserves under the
//! same id and the inventory applies it once. Compensation releases it.

use serde::{Deserialize, Serialize};
use stepwise_guest::*;

#[derive(Deserialize, Serialize)]
struct Item {
    sku: String,
    quantity: u32,
}

#[derive(Deserialize)]
struct Input {
    items: Vec<Item>,
}

#[derive(Serialize, Deserialize)]
struct Reservation {
    reservation_id: String,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Reserved {
    units: u64,
}

struct ReserveInventory;

impl Guest for ReserveInventory {
    fn invoke(ctx: StepContext, input: Json) -> Result<StepResponse, StepError> {
        let input: Input = parse(&input)?;
        if let Some(item) = input.items.iter().find(|item| item.quantity == 0) {
            return Err(StepError::Permanent(format!("item {} has quantity 0", item.sku)));
        }
        let reservation = Reservation { reservation_id: stable_id("res", &ctx.idempotency_key), items: input.items };
        let reserved: Reserved = call_service("inventory", "reserve", &reservation)?;
        info(&format!("reserved {} units as {}", reserved.units, reservation.reservation_id));
        Ok(respond(&reservation, &reservation))
    }

    fn compensate(_ctx: StepContext, data: Json) -> Result<(), StepError> {
        let reservation: Reservation = parse(&data)?;
        let units: u32 = reservation.items.iter().map(|item| item.quantity).sum();
        let release = serde_json::json!({ "reservation_id": reservation.reservation_id });
        let _: serde_json::Value = call_service("inventory", "release", &release)?;
        info(&format!("released reservation {} ({units} units)", reservation.reservation_id));
        Ok(())
    }
}

stepwise_guest::export!(ReserveInventory with_types_in stepwise_guest::bindings);
