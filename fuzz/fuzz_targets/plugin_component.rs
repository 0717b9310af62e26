//! Fuzzes the plugin loader (`stepwise::fuzz_targets::plugin_component`)
//! with valid components of random worlds (wit-smith writes a WIT package,
//! wit-component builds a component of one of its worlds around a dummy
//! module), and with the raw bytes themselves.
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    match u.arbitrary::<bool>() {
        Ok(true) => {
            if let Ok(component) = component_of_a_random_world(&mut u) {
                stepwise::fuzz_targets::plugin_component(&component);
            }
        }
        _ => stepwise::fuzz_targets::plugin_component(data),
    }
});

fn component_of_a_random_world(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let config: wit_smith::Config = u.arbitrary()?;
    let package = wit_smith::smith(&config, u)?;
    let Ok(wit_component::DecodedWasm::WitPackage(resolve, package)) = wit_component::decode(&package) else {
        return Err(arbitrary::Error::IncorrectFormat);
    };
    let worlds: Vec<_> = resolve.packages[package].worlds.values().copied().collect();
    if worlds.is_empty() {
        return Err(arbitrary::Error::IncorrectFormat);
    }
    let world = worlds[u.choose_index(worlds.len())?];
    let mut module = wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
    wit_component::embed_component_metadata(&mut module, &resolve, world, wit_component::StringEncoding::UTF8, false)
        .map_err(|_| arbitrary::Error::IncorrectFormat)?;
    wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|_| arbitrary::Error::IncorrectFormat)
}
