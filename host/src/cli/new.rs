//! `stepwise new <name> --lang rust|js|ts|python`: a ready-to-build step project.
//!
//! The project holds the WIT contract, the step's source with its bindings
//! set up, a `build.sh` that installs the language's toolchain from its
//! registry and builds `<name>.wasm`, and a `workflow.toml` to try it with
//! `stepwise run workflow.toml --plugins .`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A language a step project can be created in.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Language {
    /// Rust with wit-bindgen, for `wasm32-wasip2`.
    Rust,
    /// JavaScript with @stepwise/sdk (on Stepwise's QuickJS runtime).
    Js,
    /// TypeScript with @stepwise/sdk (type-checked by tsc).
    Ts,
    /// Python with componentize-py.
    Python,
}

/// Arguments of `stepwise new`.
#[derive(clap::Args)]
pub struct NewArgs {
    /// The step plugin's name (`[a-z][a-z0-9_-]*`); also the project directory.
    name: String,
    /// The language of the step.
    #[arg(long, value_enum)]
    lang: Language,
    /// Where to create the project directory (default: the current directory).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

const WIT: &str = include_str!("../../../wit/step.wit");

/// A JavaScript or TypeScript project's unit tests (`npm test`); `{{source}}`
/// is its step file.
const STEP_TEST: &str = include_str!("templates/js/step.test.mjs");

/// What builds a JavaScript or TypeScript step: the pinned toolchain and the build script.
const JS_BUILD: &[(&str, &str, bool)] = &[
    ("package.json", include_str!("templates/js/package.json"), false),
    ("build.mjs", include_str!("templates/js/build.mjs"), false),
    ("build.sh", include_str!("templates/js/build.sh"), true),
];

/// @stepwise/sdk, vendored into a JavaScript or TypeScript project (the
/// same files as guest-examples/js/sdk).
const SDK: &[(&str, &str, bool)] = &[
    ("stepwise-sdk/package.json", include_str!("../../../guest-examples/js/sdk/package.json"), false),
    ("stepwise-sdk/index.js", include_str!("../../../guest-examples/js/sdk/index.js"), false),
    ("stepwise-sdk/index.d.ts", include_str!("../../../guest-examples/js/sdk/index.d.ts"), false),
    ("stepwise-sdk/build.mjs", include_str!("../../../guest-examples/js/sdk/build.mjs"), false),
    ("stepwise-sdk/testing.js", include_str!("../../../guest-examples/js/sdk/testing.js"), false),
    ("stepwise-sdk/testing.d.ts", include_str!("../../../guest-examples/js/sdk/testing.d.ts"), false),
    ("stepwise-sdk/host.d.ts", include_str!("../../../guest-examples/js/sdk/host.d.ts"), false),
    ("stepwise-sdk/build.d.mts", include_str!("../../../guest-examples/js/sdk/build.d.mts"), false),
];
/// Stepwise's QuickJS runtime, as source (the same files as
/// guest-examples/js/runtime): the project's `build.sh` builds its modules
/// once (Rust and clang, installed by it) into `stepwise-sdk/runtime`.
const QUICKJS_RUNTIME: &[(&str, &str, bool)] = &[
    ("stepwise-sdk/runtime-src/Cargo.toml", include_str!("../../../guest-examples/js/runtime/Cargo.toml"), false),
    ("stepwise-sdk/runtime-src/Cargo.lock", include_str!("../../../guest-examples/js/runtime/Cargo.lock"), false),
    ("stepwise-sdk/runtime-src/build.sh", include_str!("../../../guest-examples/js/runtime/build.sh"), true),
    (
        "stepwise-sdk/runtime-src/engine/Cargo.toml",
        include_str!("../../../guest-examples/js/runtime/engine/Cargo.toml"),
        false,
    ),
    (
        "stepwise-sdk/runtime-src/engine/src/lib.rs",
        include_str!("../../../guest-examples/js/runtime/engine/src/lib.rs"),
        false,
    ),
    (
        "stepwise-sdk/runtime-src/engine/src/call.rs",
        include_str!("../../../guest-examples/js/runtime/engine/src/call.rs"),
        false,
    ),
    (
        "stepwise-sdk/runtime-src/engine/src/host.rs",
        include_str!("../../../guest-examples/js/runtime/engine/src/host.rs"),
        false,
    ),
    (
        "stepwise-sdk/runtime-src/engine/src/snapshot.rs",
        include_str!("../../../guest-examples/js/runtime/engine/src/snapshot.rs"),
        false,
    ),
    (
        "stepwise-sdk/runtime-src/engine/src/text.rs",
        include_str!("../../../guest-examples/js/runtime/engine/src/text.rs"),
        false,
    ),
    (
        "stepwise-sdk/runtime-src/worlds/log/Cargo.toml",
        include_str!("../../../guest-examples/js/runtime/worlds/log/Cargo.toml"),
        false,
    ),
    (
        "stepwise-sdk/runtime-src/worlds/log/src/lib.rs",
        include_str!("../../../guest-examples/js/runtime/worlds/log/src/lib.rs"),
        false,
    ),
    (
        "stepwise-sdk/runtime-src/worlds/services/Cargo.toml",
        include_str!("../../../guest-examples/js/runtime/worlds/services/Cargo.toml"),
        false,
    ),
    (
        "stepwise-sdk/runtime-src/worlds/services/src/lib.rs",
        include_str!("../../../guest-examples/js/runtime/worlds/services/src/lib.rs"),
        false,
    ),
    (
        "stepwise-sdk/runtime-src/worlds/kv/Cargo.toml",
        include_str!("../../../guest-examples/js/runtime/worlds/kv/Cargo.toml"),
        false,
    ),
    (
        "stepwise-sdk/runtime-src/worlds/kv/src/lib.rs",
        include_str!("../../../guest-examples/js/runtime/worlds/kv/src/lib.rs"),
        false,
    ),
    (
        "stepwise-sdk/runtime-src/worlds/full/Cargo.toml",
        include_str!("../../../guest-examples/js/runtime/worlds/full/Cargo.toml"),
        false,
    ),
    (
        "stepwise-sdk/runtime-src/worlds/full/src/lib.rs",
        include_str!("../../../guest-examples/js/runtime/worlds/full/src/lib.rs"),
        false,
    ),
];
/// Where the runtime's world crates find `wit/`: in the repository, and in a project.
const RUNTIME_WIT_IN_REPOSITORY: &str = "\"../../../../../wit\"";
const RUNTIME_WIT_IN_PROJECT: &str = "\"../../../../wit\"";
const WORKFLOW: &str = include_str!("templates/workflow.toml");

/// The files of a project: path inside it, content, whether it is executable.
fn files(lang: Language) -> Vec<(&'static str, &'static str, bool)> {
    match lang {
        Language::Rust => vec![
            ("Cargo.toml", include_str!("templates/rust/Cargo.toml"), false),
            ("src/lib.rs", include_str!("templates/rust/lib.rs"), false),
            ("build.sh", include_str!("templates/rust/build.sh"), true),
        ],
        Language::Js => {
            let step = [("step.js", include_str!("templates/js/step.js"), false), ("step.test.mjs", STEP_TEST, false)];
            [JS_BUILD, &step, SDK, QUICKJS_RUNTIME].concat()
        }
        Language::Ts => [
            JS_BUILD,
            &[
                ("step.ts", include_str!("templates/ts/step.ts"), false),
                ("step.test.mjs", STEP_TEST, false),
                ("tsconfig.json", include_str!("templates/ts/tsconfig.json"), false),
            ],
            SDK,
            QUICKJS_RUNTIME,
        ]
        .concat(),
        Language::Python => vec![
            ("app.py", include_str!("templates/python/app.py"), false),
            ("requirements.txt", include_str!("templates/python/requirements.txt"), false),
            ("build.sh", include_str!("templates/python/build.sh"), true),
        ],
    }
}

/// Creates the project `dir/name` for `lang`; refuses an existing directory.
pub fn create(name: &str, lang: Language, dir: &Path) -> Result<PathBuf> {
    if !crate::journal::ids::PluginName::is_valid(name) {
        bail!("`{name}` is not a valid step name (lowercase letters, digits, `-`, `_`, starting with a letter)");
    }
    let project = dir.join(name);
    if project.exists() {
        bail!("{} exists already: choose another name or directory", project.display());
    }
    // The project's build uses this very `stepwise` (JavaScript steps are
    // pre-initialised by `stepwise plugins build-js`) unless $STEPWISE says otherwise.
    let this = std::env::current_exe().map(|path| path.display().to_string()).unwrap_or_else(|_| "stepwise".into());
    let source = if matches!(lang, Language::Ts) { "step.ts" } else { "step.js" };
    let fill = |path: &str, text: &str| {
        if path.starts_with("stepwise-sdk/runtime-src/") {
            return text.replace(RUNTIME_WIT_IN_REPOSITORY, RUNTIME_WIT_IN_PROJECT);
        }
        text.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{stepwise}}", &this)
            .replace("{{source}}", source)
    };
    let mut all = files(lang);
    all.push(("wit/step.wit", WIT, false));
    all.push(("workflow.toml", WORKFLOW, false));
    for (path, text, executable) in all {
        let target = project.join(path);
        std::fs::create_dir_all(target.parent().expect("a file in the project"))?;
        std::fs::write(&target, fill(path, text)).with_context(|| format!("writing {}", target.display()))?;
        if executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(project)
}

pub fn run(args: NewArgs) -> Result<ExitCode> {
    let project = create(&args.name, args.lang, &args.dir)?;
    println!("created {}", project.display());
    println!("build it:  {}/build.sh", project.display());
    if matches!(args.lang, Language::Js | Language::Ts) {
        println!("test it:   (cd {} && npm test)   # after the build installed the packages", project.display());
    }
    println!(
        "try it:    stepwise run {0}/workflow.toml --plugins {0} --store memory --input '{{\"name\": \"Ada\"}}'",
        project.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files under `root` (relative paths), but for the directories `skipped`.
    fn files_under(root: &Path, skipped: &[&str]) -> Vec<String> {
        let mut on_disk = Vec::new();
        let mut pending = vec![root.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let relative = path.strip_prefix(root).unwrap().to_string_lossy().to_string();
                if !path.is_dir() {
                    on_disk.push(relative);
                } else if !skipped.contains(&relative.as_str()) {
                    pending.push(path);
                }
            }
        }
        on_disk.sort();
        on_disk
    }

    fn carried(files: &[(&str, &str, bool)]) -> Vec<String> {
        let mut carried: Vec<String> = files.iter().map(|(path, _, _)| path.to_string()).collect();
        carried.sort();
        carried
    }

    /// Every source file of the QuickJS runtime is in the projects
    /// `stepwise new` creates (a file added to the runtime and not here would
    /// break every new JavaScript project's build).
    #[test]
    fn projects_carry_every_file_of_the_quickjs_runtime() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/js/runtime");
        let on_disk: Vec<String> = files_under(&root, &["target"])
            .into_iter()
            .filter(|file| file != "rustfmt.toml")
            .map(|file| format!("stepwise-sdk/runtime-src/{file}"))
            .collect();
        assert_eq!(carried(QUICKJS_RUNTIME), on_disk);
    }

    /// Every file of @stepwise/sdk (but the runtime modules built into it) is
    /// in the projects: its package.json exports and its types reference them.
    #[test]
    fn projects_carry_every_file_of_the_sdk() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/js/sdk");
        let on_disk: Vec<String> =
            files_under(&root, &["runtime"]).into_iter().map(|file| format!("stepwise-sdk/{file}")).collect();
        assert_eq!(carried(SDK), on_disk);
    }
}
