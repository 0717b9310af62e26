//! Accept-quote step 2: reserve stock for every item of the cart.
//!
//! The reservation id derives from the idempotency key, so a retried attempt
//! reserves under the same id. Compensation releases the reservation.

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

struct ReserveInventory;

impl Guest for ReserveInventory {
    fn invoke(ctx: StepContext, input: Json) -> Result<StepResponse, StepError> {
        let input: Input = parse(&input)?;
        if let Some(item) = input.items.iter().find(|item| item.quantity == 0) {
            return Err(StepError::Permanent(format!("item {} has quantity 0", item.sku)));
        }
        let reservation_id = stable_id("res", &ctx.idempotency_key);
        let units: u32 = input.items.iter().map(|item| item.quantity).sum();
        info(&format!("reserved {units} units as {reservation_id}"));
        let reservation = Reservation { reservation_id, items: input.items };
        Ok(respond(&reservation, &reservation))
    }

    fn compensate(_ctx: StepContext, data: Json) -> Result<(), StepError> {
        let reservation: Reservation = parse(&data)?;
        let units: u32 = reservation.items.iter().map(|item| item.quantity).sum();
        info(&format!("released reservation {} ({units} units)", reservation.reservation_id));
        Ok(())
    }
}

stepwise_guest::export!(ReserveInventory with_types_in stepwise_guest::bindings);
