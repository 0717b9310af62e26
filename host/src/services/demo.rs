//! The demo host's services: an inventory and a payment provider.
//!
//! Both are idempotent by the ids their callers pass (derived from the step's
//! idempotency key), like the real systems they stand for, and count what
//! they applied so that tests can check that every side effect happened once
//! and every rollback undid it once. Every call is first written to a
//! [`Ledger`]; with the durable ledger their state survives a crash (it is
//! rebuilt from the ledger on start) and the crash test audits the calls.

use super::ledger::{Ledger, LedgerEntry, MemoryLedger};
use super::{Caller, Service, ServiceRegistry, Started};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;

/// A registry with `inventory` and `payments`, as the demo host offers them.
pub fn registry(inventory: Arc<Inventory>, payments: Arc<Payments>) -> ServiceRegistry {
    let mut registry = ServiceRegistry::new();
    registry.register("inventory", inventory).register("payments", payments);
    registry
}

/// Reserves and releases stock.
pub struct Inventory {
    state: Mutex<InventoryState>,
    ledger: Arc<dyn Ledger>,
}

impl Default for Inventory {
    fn default() -> Self {
        Self::new()
    }
}

/// What the inventory holds now and what it applied so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InventoryState {
    /// Units reserved per SKU.
    pub reserved: BTreeMap<String, u64>,
    /// Active reservations: id -> (sku, quantity) lines.
    pub reservations: HashMap<String, Vec<(String, u64)>>,
    /// Reservations applied (a repeated `reserve` with the same id is not counted).
    pub reserves_applied: u64,
    /// Releases applied (a release of an unknown or released id is not counted).
    pub releases_applied: u64,
}

#[derive(Deserialize)]
struct Line {
    sku: String,
    quantity: u64,
}

#[derive(Deserialize)]
struct Reserve {
    reservation_id: String,
    items: Vec<Line>,
}

#[derive(Deserialize)]
struct Release {
    reservation_id: String,
}

#[derive(Deserialize)]
struct Void {
    authorization_id: String,
}

fn parse<T: for<'de> Deserialize<'de>>(method: &str, input: Value) -> Result<T, String> {
    serde_json::from_value(input).map_err(|error| format!("{method}: invalid input: {error}"))
}

impl Inventory {
    /// An empty inventory (unlimited stock) recording its calls in memory.
    pub fn new() -> Self {
        Self::with_ledger(Arc::new(MemoryLedger::default())).expect("an in-memory ledger cannot fail")
    }

    /// An inventory whose state is rebuilt from, and whose calls are recorded in, `ledger`.
    pub fn with_ledger(ledger: Arc<dyn Ledger>) -> Result<Self, String> {
        let mut state = InventoryState::default();
        for entry in ledger.entries("inventory")? {
            // Calls are deterministic: a call that failed then fails again and changes nothing.
            let _ = apply_inventory(&mut state, &entry.method, entry.input);
        }
        Ok(Self { state: Mutex::new(state), ledger })
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> InventoryState {
        self.state.lock().expect("inventory lock").clone()
    }
}

/// A call that reaches the service after its step's deadline (it waited
/// for the lock, or for a blocking thread) is not applied: the step has
/// failed already, and a retry will make the call again with the same key.
fn within_deadline(caller: &Caller) -> Result<(), String> {
    if std::time::Instant::now() >= caller.deadline {
        return Err("the step's deadline passed before the call could be applied".into());
    }
    Ok(())
}

/// One call of a demo service: recorded in `ledger` and applied to `state`.
/// The lock spans submit-and-apply, so that the ledger's order is the
/// state's order; the wait for durability is outside it, shared by the calls
/// of one commit. A call that cannot be submitted (the store stopped) is not
/// applied. The answer comes only once the call is recorded; a call whose
/// commit then failed was applied here but is not in the ledger, until a
/// retry of the step (same key; every method is idempotent by its id)
/// records it, or a restart rebuilds the state from the ledger without it.
fn recorded_call<S>(
    state: &Mutex<S>,
    ledger: &dyn Ledger,
    service: &str,
    method: &str,
    input: Value,
    caller: &Caller,
    apply: fn(&mut S, &str, Value) -> Result<Value, String>,
) -> Started {
    let mut state = state.lock().expect("demo service state lock");
    if let Err(late) = within_deadline(caller) {
        return Started::answered(Err(late));
    }
    match ledger.submit(LedgerEntry::new(service, method, input.clone(), caller)) {
        Ok(recording) => Started::once_durable(apply(&mut state, method, input), recording),
        Err(error) => Started::answered(Err(error)),
    }
}

impl Service for Inventory {
    fn call(&self, method: &str, input: Value, caller: &Caller) -> Result<Value, String> {
        self.start(method, input, caller).wait()
    }

    fn may_block(&self) -> bool {
        self.ledger.may_block()
    }

    fn start(&self, method: &str, input: Value, caller: &Caller) -> Started {
        recorded_call(&self.state, self.ledger.as_ref(), "inventory", method, input, caller, apply_inventory)
    }
}

fn apply_inventory(state: &mut InventoryState, method: &str, input: Value) -> Result<Value, String> {
    {
        match method {
            "reserve" => {
                let request: Reserve = parse(method, input)?;
                if !state.reservations.contains_key(&request.reservation_id) {
                    let lines: Vec<(String, u64)> = request.items.into_iter().map(|l| (l.sku, l.quantity)).collect();
                    for (sku, quantity) in &lines {
                        *state.reserved.entry(sku.clone()).or_default() += quantity;
                    }
                    state.reservations.insert(request.reservation_id.clone(), lines);
                    state.reserves_applied += 1;
                }
                let units: u64 = state.reservations[&request.reservation_id].iter().map(|(_, q)| q).sum();
                Ok(json!({"reservation_id": request.reservation_id, "units": units}))
            }
            "release" => {
                let request: Release = parse(method, input)?;
                let released = match state.reservations.remove(&request.reservation_id) {
                    Some(lines) => {
                        for (sku, quantity) in lines {
                            let reserved = state.reserved.entry(sku).or_default();
                            *reserved = reserved.saturating_sub(quantity);
                        }
                        state.releases_applied += 1;
                        true
                    }
                    None => false,
                };
                Ok(json!({"released": released}))
            }
            other => Err(format!("inventory has no method `{other}` (reserve, release)")),
        }
    }
}

/// Authorizes and voids payments.
pub struct Payments {
    state: Mutex<PaymentsState>,
    ledger: Arc<dyn Ledger>,
}

impl Default for Payments {
    fn default() -> Self {
        Self::new()
    }
}

/// Authorizations held now and what was applied so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PaymentsState {
    /// Active authorizations: id -> amount.
    pub authorized: HashMap<String, u64>,
    /// Authorizations applied.
    pub authorizations_applied: u64,
    /// Voids applied.
    pub voids_applied: u64,
}

#[derive(Deserialize)]
struct Authorize {
    authorization_id: String,
    amount: u64,
}

impl Payments {
    /// No authorizations, calls recorded in memory.
    pub fn new() -> Self {
        Self::with_ledger(Arc::new(MemoryLedger::default())).expect("an in-memory ledger cannot fail")
    }

    /// Payments whose state is rebuilt from, and whose calls are recorded in, `ledger`.
    pub fn with_ledger(ledger: Arc<dyn Ledger>) -> Result<Self, String> {
        let mut state = PaymentsState::default();
        for entry in ledger.entries("payments")? {
            let _ = apply_payments(&mut state, &entry.method, entry.input);
        }
        Ok(Self { state: Mutex::new(state), ledger })
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> PaymentsState {
        self.state.lock().expect("payments lock").clone()
    }
}

impl Service for Payments {
    fn call(&self, method: &str, input: Value, caller: &Caller) -> Result<Value, String> {
        self.start(method, input, caller).wait()
    }

    fn may_block(&self) -> bool {
        self.ledger.may_block()
    }

    fn start(&self, method: &str, input: Value, caller: &Caller) -> Started {
        recorded_call(&self.state, self.ledger.as_ref(), "payments", method, input, caller, apply_payments)
    }
}

fn apply_payments(state: &mut PaymentsState, method: &str, input: Value) -> Result<Value, String> {
    {
        match method {
            "authorize" => {
                let request: Authorize = parse(method, input)?;
                if !state.authorized.contains_key(&request.authorization_id) {
                    state.authorized.insert(request.authorization_id.clone(), request.amount);
                    state.authorizations_applied += 1;
                }
                Ok(json!({"authorization_id": request.authorization_id, "status": "authorized"}))
            }
            "void" => {
                let request: Void = parse(method, input)?;
                let voided = state.authorized.remove(&request.authorization_id).is_some();
                if voided {
                    state.voids_applied += 1;
                }
                Ok(json!({"voided": voided}))
            }
            other => Err(format!("payments has no method `{other}` (authorize, void)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::ledger::SqliteLedger;
    use crate::store::SqliteStore;

    fn caller(key: &str) -> Caller {
        Caller {
            plugin: "reserve-inventory".into(),
            execution_id: "e1".into(),
            step_id: "reserve".into(),
            idempotency_key: key.into(),
            tenant: None,
            deadline: std::time::Instant::now() + std::time::Duration::from_secs(30),
        }
    }

    fn reserve(id: &str, quantity: u64) -> Value {
        json!({"reservation_id": id, "items": [{"sku": "sku-1", "quantity": quantity}]})
    }

    /// On the SQLite ledger a call runs in the guest's task: applied and
    /// queued at once, answered once its commit is over; a restart rebuilds
    /// the state from what was recorded, and a late call is not applied.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_on_the_sqlite_ledger_is_answered_once_durable_and_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("stepwise-demo-ledger-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.db");
        {
            let store = Arc::new(SqliteStore::open(&path).unwrap());
            let inventory = Inventory::with_ledger(Arc::new(SqliteLedger::on(store).await.unwrap())).unwrap();
            assert!(!inventory.may_block(), "no blocking thread for a call on the SQLite ledger");
            let calls: Vec<Started> =
                ["r1", "r2"].iter().map(|id| inventory.start("reserve", reserve(id, 2), &caller(id))).collect();
            for started in calls {
                assert_eq!(started.finish().await.unwrap()["units"], 2);
            }
            let mut late = caller("r3");
            late.deadline = std::time::Instant::now() - std::time::Duration::from_millis(1);
            let refused = inventory.start("reserve", reserve("r3", 5), &late).finish().await;
            assert!(refused.unwrap_err().contains("deadline"));
            assert_eq!(inventory.snapshot().reserved["sku-1"], 4);
        }
        let store = Arc::new(SqliteStore::open(&path).unwrap());
        let ledger = Arc::new(SqliteLedger::on(store).await.unwrap());
        let keys: Vec<String> = ledger.entries("inventory").unwrap().into_iter().map(|e| e.idempotency_key).collect();
        assert_eq!(keys, ["r1", "r2"]);
        let rebuilt = Inventory::with_ledger(ledger).unwrap();
        assert_eq!(rebuilt.snapshot().reserved["sku-1"], 4);
        assert_eq!(rebuilt.snapshot().reserves_applied, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
