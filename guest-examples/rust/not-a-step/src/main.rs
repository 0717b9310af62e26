//! Test component: a WASI command (`wasi:cli/run`) that is not a step; the
//! host must refuse it at load, naming the missing exports.

fn main() {
    println!("I am not a step");
}
