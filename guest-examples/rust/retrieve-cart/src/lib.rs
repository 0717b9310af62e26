//! Accept-quote step 1: load the cart behind a quote.
//!
//! Read-only, so it returns no compensation data: on rollback `compensate`
//! receives the step's output and only logs that there is nothing to undo.

use serde::{Deserialize, Serialize};
use stepwise_guest::*;

#[derive(Deserialize)]
struct Input {
    cart_id: String,
    /// Items as the commerce system holds them; a fixed sample cart when absent.
    #[serde(default)]
    items: Option<Vec<Item>>,
    #[serde(default = "default_currency")]
    currency: String,
}

fn default_currency() -> String {
    "EUR".to_string()
}

#[derive(Deserialize, Serialize, Clone)]
struct Item {
    sku: String,
    quantity: u32,
    unit_price: u64,
}

#[derive(Serialize, Deserialize)]
struct Cart {
    id: String,
    currency: String,
    items: Vec<Item>,
    total: u64,
}

struct RetrieveCart;

impl Guest for RetrieveCart {
    fn invoke(_ctx: StepContext, input: Json) -> Result<StepResponse, StepError> {
        let input: Input = parse(&input)?;
        if input.cart_id.is_empty() {
            return Err(StepError::Permanent("cart_id must not be empty".into()));
        }
        let items = input.items.unwrap_or_else(sample_items);
        if items.is_empty() {
            return Err(StepError::Permanent(format!("cart {} is empty", input.cart_id)));
        }
        let total = items.iter().map(|item| u64::from(item.quantity) * item.unit_price).sum();
        info(&format!("retrieved cart {} with {} items, total {total}", input.cart_id, items.len()));
        let cart = Cart { id: input.cart_id, currency: input.currency, items, total };
        Ok(respond_output(&cart))
    }

    fn compensate(_ctx: StepContext, data: Json) -> Result<(), StepError> {
        let cart: Cart = parse(&data)?;
        info(&format!("nothing to undo for cart {} (read-only step)", cart.id));
        Ok(())
    }
}

fn sample_items() -> Vec<Item> {
    vec![
        Item { sku: "SHIRT-M".into(), quantity: 2, unit_price: 2500 },
        Item { sku: "MUG".into(), quantity: 1, unit_price: 1200 },
        Item { sku: "STICKER".into(), quantity: 5, unit_price: 150 },
    ]
}

stepwise_guest::export!(RetrieveCart with_types_in stepwise_guest::bindings);
