//! The benchmark's step logic: the total of a ~1 KB cart, as the
//! `cart-total` guests compute it, and the same logic compiled natively.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Deserialize)]
struct Item {
    quantity: u64,
    unit_price: u64,
}

#[derive(Deserialize)]
struct Cart {
    #[serde(default)]
    items: Vec<Item>,
}

#[derive(Serialize)]
struct Total {
    total: u64,
    units: u64,
    lines: usize,
}

/// A cart of about 1 KB of JSON.
pub fn sample_cart() -> Value {
    let items: Vec<Value> = (0..9)
        .map(|i| {
            json!({
                "sku": format!("SKU-{i:04}-BLUE-M"),
                "name": format!("Organic cotton shirt, model {i}"),
                "quantity": 1 + i % 3,
                "unit_price": 1250 + 100 * i,
            })
        })
        .collect();
    json!({"cart_id": "cart_01HQ7Z", "currency": "EUR", "customer": "cus_42", "items": items})
}

/// The cart total computed natively: parse, sum, serialize, as the guests do.
pub fn native_cart_total(input: &str) -> Result<String, String> {
    let cart: Cart = serde_json::from_str(input).map_err(|e| e.to_string())?;
    let total = cart.items.iter().map(|item| item.quantity * item.unit_price).sum();
    let units = cart.items.iter().map(|item| item.quantity).sum();
    serde_json::to_string(&Total { total, units, lines: cart.items.len() }).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_cart_is_about_a_kilobyte_and_sums() {
        let cart = sample_cart().to_string();
        assert!((900..1300).contains(&cart.len()), "{} bytes", cart.len());
        let total: Value = serde_json::from_str(&native_cart_total(&cart).unwrap()).unwrap();
        assert_eq!(total["lines"], 9);
        assert_eq!(total["units"], 18);
    }
}
