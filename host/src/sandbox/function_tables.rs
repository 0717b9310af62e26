//! Function tables in fresh instances: every `call_indirect` reaches the
//! function its table element names, in every instance of a pooled slot.
//!
//! Stepwise runs on a wasmtime whose funcref initialisation is patched
//! (`vendor/wasmtime`, see `vendor/README.md`): the code pointers of a
//! function's `VMFuncRef` are resolved once per module instead of once per
//! element of every instance. These tests build the two shapes that take
//! that path (a table filled by another module's element segment at
//! instantiation, as dynamically linked language runtimes are; a module's own
//! table initialised lazily on first use) and check each call's result
//! across many instances, touching the elements in different orders.

use super::{engine_config, Limits};
use wasm_encoder::{
    CodeSection, ConstExpr, ElementSection, Elements, EntityType, ExportKind, ExportSection, Function, FunctionSection,
    GlobalType, ImportSection, Instruction, Module, RefType, TableSection, TableType, TypeSection, ValType,
};
use wasmtime::{Engine, Instance, Linker, Store, Table, TypedFunc};

/// Functions in each module's table.
const FUNCTIONS: u32 = 96;
/// Where the library's segment starts in the shared table.
const BASE: u32 = 5;

/// What function `index` of a module salted `salt` returns.
fn expected(salt: i32, index: u32) -> i32 {
    salt * 1000 + index as i32 * 7 + 3
}

/// Type 0: `() -> i32`; type 1: `(i32) -> i32`.
fn types() -> TypeSection {
    let mut types = TypeSection::new();
    types.ty().function([], [ValType::I32]);
    types.ty().function([ValType::I32], [ValType::I32]);
    types
}

/// Adds `FUNCTIONS` constant functions (indices `first..`) and `pick(i)`,
/// which calls table element `i + offset` indirectly.
fn constant_functions_and_pick(salt: i32, offset: u32, functions: &mut FunctionSection, code: &mut CodeSection) {
    for index in 0..FUNCTIONS {
        functions.function(0);
        let mut body = Function::new([]);
        body.instruction(&Instruction::I32Const(expected(salt, index)));
        body.instruction(&Instruction::End);
        code.function(&body);
    }
    functions.function(1);
    let mut pick = Function::new([]);
    pick.instruction(&Instruction::LocalGet(0));
    pick.instruction(&Instruction::I32Const(offset as i32));
    pick.instruction(&Instruction::I32Add);
    pick.instruction(&Instruction::CallIndirect { type_index: 0, table_index: 0 });
    pick.instruction(&Instruction::End);
    code.function(&pick);
}

/// A funcref table type of `minimum` elements.
fn funcref_table(minimum: u32) -> TableType {
    TableType { element_type: RefType::FUNCREF, minimum: minimum as u64, maximum: None, table64: false, shared: false }
}

/// A module of the constant functions and `pick`, exported, with `imports`
/// and `tables` (either may be empty) and one active segment putting every
/// constant function into table 0 at `offset`.
fn module(salt: i32, imports: ImportSection, tables: TableSection, offset: (u32, ConstExpr)) -> Vec<u8> {
    let mut module = Module::new();
    module.section(&types());
    if !imports.is_empty() {
        module.section(&imports);
    }
    let (mut functions, mut code) = (FunctionSection::new(), CodeSection::new());
    constant_functions_and_pick(salt, offset.0, &mut functions, &mut code);
    module.section(&functions);
    if !tables.is_empty() {
        module.section(&tables);
    }
    let mut exports = ExportSection::new();
    exports.export("pick", ExportKind::Func, FUNCTIONS);
    module.section(&exports);
    let mut elements = ElementSection::new();
    let indices: Vec<u32> = (0..FUNCTIONS).collect();
    elements.active(Some(0), &offset.1, Elements::Functions(indices.into()));
    module.section(&elements);
    module.section(&code);
    module.finish()
}

/// A module with its own table and a constant-offset segment (initialised
/// lazily), exporting `pick`.
fn own_table_module(salt: i32) -> Vec<u8> {
    let mut tables = TableSection::new();
    tables.table(funcref_table(FUNCTIONS));
    module(salt, ImportSection::new(), tables, (0, ConstExpr::i32_const(0)))
}

/// A library that fills an imported table at an imported base with its
/// functions (as dynamically linked modules do), exporting `pick`.
fn library_module(salt: i32) -> Vec<u8> {
    let mut imports = ImportSection::new();
    imports.import("env", "table", EntityType::Table(funcref_table(BASE + FUNCTIONS)));
    let base = GlobalType { val_type: ValType::I32, mutable: false, shared: false };
    imports.import("env", "table_base", EntityType::Global(base));
    module(salt, imports, TableSection::new(), (BASE, ConstExpr::global_get(0)))
}

fn store(engine: &Engine) -> Store<()> {
    let mut store = Store::new(engine, ());
    store.set_fuel(u64::MAX / 2).expect("fuel is enabled");
    store.set_epoch_deadline(u64::MAX / 2);
    store
}

/// Calls `pick` for every element, in an order that differs per round, and
/// checks each result.
fn check_every_element(store: &mut Store<()>, pick: &TypedFunc<i32, i32>, salt: i32, round: u32) {
    for step in 0..FUNCTIONS {
        // A stride coprime to FUNCTIONS visits every element once.
        let index = (step * 37 + round * 11) % FUNCTIONS;
        let got = pick.call(&mut *store, index as i32).expect("an indirect call");
        assert_eq!(got, expected(salt, index), "element {index} of module {salt}, round {round}");
    }
}

#[test]
fn a_module_s_own_table_calls_the_right_function_in_every_fresh_instance() {
    let engine = Engine::new(&engine_config(&Limits::default(), 16)).expect("the sandbox's engine");
    let modules: Vec<wasmtime::Module> =
        (1..=3).map(|salt| wasmtime::Module::new(&engine, own_table_module(salt)).expect("a valid module")).collect();
    for round in 0..40u32 {
        let salt = (round % 3) as i32 + 1;
        let mut store = store(&engine);
        let instance = Instance::new(&mut store, &modules[salt as usize - 1], &[]).expect("instantiation");
        let pick = instance.get_typed_func::<i32, i32>(&mut store, "pick").expect("pick");
        // Touch a single element first: the rest are initialised later, lazily.
        assert_eq!(pick.call(&mut store, 17).expect("a call"), expected(salt, 17));
        check_every_element(&mut store, &pick, salt, round);
    }
}

#[test]
fn a_table_filled_by_another_module_calls_the_right_function_in_every_fresh_instance() {
    let engine = Engine::new(&engine_config(&Limits::default(), 16)).expect("the sandbox's engine");
    let libraries: Vec<wasmtime::Module> =
        (1..=2).map(|salt| wasmtime::Module::new(&engine, library_module(salt)).expect("a valid module")).collect();
    for round in 0..40u32 {
        let mut store = store(&engine);
        let table_type = wasmtime::TableType::new(wasmtime::RefType::FUNCREF, BASE + FUNCTIONS, None);
        let table = Table::new(&mut store, table_type, wasmtime::Ref::Func(None)).expect("a table");
        let base = wasmtime::Global::new(
            &mut store,
            wasmtime::GlobalType::new(wasmtime::ValType::I32, wasmtime::Mutability::Const),
            wasmtime::Val::I32(BASE as i32),
        )
        .expect("a global");
        let mut linker = Linker::new(&engine);
        linker.define(&store, "env", "table", table).expect("define the table");
        linker.define(&store, "env", "table_base", base).expect("define the base");
        // Two libraries in one store fill the same table in turn: the second
        // one's elements replace the first one's.
        for salt in [1, 2] {
            let instance = linker.instantiate(&mut store, &libraries[salt as usize - 1]).expect("instantiation");
            let pick = instance.get_typed_func::<i32, i32>(&mut store, "pick").expect("pick");
            check_every_element(&mut store, &pick, salt, round);
        }
    }
}
