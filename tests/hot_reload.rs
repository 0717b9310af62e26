//! Hot reload: plugins swapped in a running host while executions are in
//! flight, broken files reported without disturbing anything, the compiled
//! code cache across restarts, and workflow files reloaded the same way.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stepwise::engine::{Engine, StartOptions};
use stepwise::journal::ExecutionStatus;
use stepwise::plugin::{CodeCache, PluginDirectory, PluginRegistry};
use stepwise::sandbox::{Limits, Sandbox};
use stepwise::store::MemoryStore;
use stepwise::workflow::{Workflow, WorkflowDirectory};
use stepwise_test_support::*;

fn scratch(label: &str) -> PathBuf {
    let dir = scratch_dir(&format!("reload-{label}"));
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    dir
}

fn variant(name: &str) -> Vec<u8> {
    plugins_dir();
    std::fs::read(repo_root().join("build/variants").join(format!("{name}.wasm"))).unwrap()
}

/// Replaces a file the way a deployment should: write beside it, then rename.
fn replace(path: &Path, bytes: &[u8]) {
    let temporary = path.with_extension("partial");
    std::fs::write(&temporary, bytes).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// Installs `versioned` at a version: its manifest, then its component.
fn install_versioned(plugins: &Path, build: &str, version: &str) {
    replace(&plugins.join("versioned.toml"), format!("version = \"{version}\"\n").as_bytes());
    replace(&plugins.join("versioned.wasm"), &variant(build));
}

fn registry(dir: &Path) -> Arc<PluginRegistry> {
    let sandbox = Sandbox::new(Limits::default()).unwrap();
    let directory = PluginDirectory::scan(&dir.join("plugins")).unwrap();
    Arc::new(PluginRegistry::with_cache(sandbox, directory, Some(CodeCache::new(&dir.join("cache")))))
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < Duration::from_secs(10), "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const GATED: &str = r#"
name = "gated"
[[steps]]
id = "first"
plugin = "versioned"
input = { n = "$.input.n" }
[[steps]]
id = "gate"
plugin = "echo"
async = true
after = ["first"]
[[steps]]
id = "last"
plugin = "versioned"
input = { after_gate = "$.steps.gate.output" }
"#;

const SINGLE: &str = "name = \"single\"\n[[steps]]\nid = \"only\"\nplugin = \"versioned\"\n";

fn version_of(execution: &Value, step_id: &str) -> String {
    step(execution, step_id)["output"]["version"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_executions_finish_on_the_version_they_started_with() {
    let dir = scratch("swap");
    let plugins = dir.join("plugins");
    std::fs::copy(plugins_dir().join("echo.wasm"), plugins.join("echo.wasm")).unwrap();
    install_versioned(&plugins, "versioned-v1", "1.0.0");
    let registry = registry(&dir);
    let _watch = registry.watch().unwrap();
    let engine = Engine::new(registry.clone(), Arc::new(MemoryStore::new()));
    let gated = Arc::new(Workflow::from_toml("gated.toml", GATED, registry.as_ref()).unwrap());
    let single = Arc::new(Workflow::from_toml("single.toml", SINGLE, registry.as_ref()).unwrap());

    // 100 executions in flight on v1, each waiting at its gate.
    let mut in_flight = Vec::new();
    for n in 0..100 {
        let execution = engine.run(gated.clone(), json!({"n": n}), StartOptions::default()).await.unwrap();
        assert_eq!(execution.status, ExecutionStatus::Waiting);
        in_flight.push(execution.to_json());
    }
    let v1_hash = in_flight[0]["plugins"]["versioned"].as_str().unwrap().to_string();

    // Swap in v2 and time it: file written -> first execution on v2.
    let written = Instant::now();
    install_versioned(&plugins, "versioned-v2", "2.0.0");
    loop {
        let execution = engine.run(single.clone(), json!({}), StartOptions::default()).await.unwrap().to_json();
        if version_of(&execution, "only") == "v2" {
            break;
        }
        assert!(written.elapsed() < Duration::from_secs(10), "v2 never went live");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let swap = written.elapsed();
    eprintln!("hot swap: file written -> first execution on v2 in {} ms", swap.as_millis());

    // The in-flight executions finish on v1, compensation-free and all.
    for execution in &in_flight {
        let id = stepwise::journal::ExecutionId::new(execution["execution_id"].as_str().unwrap());
        let done = complete(&engine, &id, "gate", json!({"opened": true})).await;
        assert_eq!(done["status"], "succeeded", "{done:#}");
        assert_eq!(version_of(&done, "first"), "v1");
        assert_eq!(version_of(&done, "last"), "v1", "finished on the version it started with");
        assert_eq!(done["plugins"]["versioned"], json!(v1_hash));
    }
    // New executions use v2 from start to end.
    let fresh = engine.run(gated.clone(), json!({"n": 1000}), StartOptions::default()).await.unwrap();
    let fresh = complete(&engine, &fresh.execution_id, "gate", json!({})).await;
    assert_eq!((version_of(&fresh, "first"), version_of(&fresh, "last")), ("v2".into(), "v2".into()));
    assert_ne!(fresh["plugins"]["versioned"], json!(v1_hash));

    // A corrupt file changes nothing and is reported.
    let pending = engine.run(gated.clone(), json!({"n": 2000}), StartOptions::default()).await.unwrap();
    replace(&plugins.join("versioned.wasm"), b"\0asm garbage");
    let status = |registry: &PluginRegistry| registry.statuses().into_iter().find(|s| s.name == "versioned").unwrap();
    eventually("the corrupt file is reported", || status(&registry).error.is_some()).await;
    let reported = status(&registry);
    assert!(reported.error.as_deref().unwrap().contains("not a valid WebAssembly component"), "{reported:?}");
    assert_eq!(reported.current.as_ref().unwrap().1.as_deref(), Some("2.0.0"), "v2 keeps serving");
    let still = engine.run(single.clone(), json!({}), StartOptions::default()).await.unwrap().to_json();
    assert_eq!(version_of(&still, "only"), "v2");

    // Restoring a good file serves it again.
    install_versioned(&plugins, "versioned-v1", "1.0.1");
    eventually("the restored file is served", || {
        let status = status(&registry);
        status.error.is_none() && status.current.is_some_and(|c| c.1.as_deref() == Some("1.0.1"))
    })
    .await;
    let restored = engine.run(single.clone(), json!({}), StartOptions::default()).await.unwrap().to_json();
    assert_eq!(version_of(&restored, "only"), "v1");

    // Deleting the plugin stops new executions; the one in flight finishes on its version.
    std::fs::remove_file(plugins.join("versioned.wasm")).unwrap();
    eventually("the deleted plugin is gone", || {
        !stepwise::workflow::PluginCatalog::contains_plugin(registry.as_ref(), "versioned")
    })
    .await;
    let refused = engine.run(single.clone(), json!({}), StartOptions::default()).await;
    assert!(refused.unwrap_err().to_string().contains("unknown plugin `versioned`"));
    let finished = complete(&engine, &pending.execution_id, "gate", json!({})).await;
    assert_eq!(finished["status"], "succeeded");
    assert_eq!(version_of(&finished, "last"), "v2");
    assert!(registry.stats().swaps.load(Ordering::Relaxed) >= 2);
}

#[tokio::test]
async fn a_restart_uses_the_compiled_code_cache_and_the_archive() {
    let dir = scratch("cache");
    let plugins = dir.join("plugins");
    install_versioned(&plugins, "versioned-v1", "1.0.0");

    let cold = registry(&dir);
    let started = Instant::now();
    let v1 = cold.get("versioned").await.unwrap();
    let cold_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(cold.stats().compiled.load(Ordering::Relaxed), 1);
    assert_eq!(cold.stats().cache_hits.load(Ordering::Relaxed), 0);

    // A new process (new engine, same cache directory) deserializes instead of compiling.
    let warm = registry(&dir);
    let started = Instant::now();
    warm.get("versioned").await.unwrap();
    let cached_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(warm.stats().compiled.load(Ordering::Relaxed), 0, "nothing was recompiled");
    assert_eq!(warm.stats().cache_hits.load(Ordering::Relaxed), 1);
    eprintln!("versioned: cold compile {cold_ms:.1} ms, cached load {cached_ms:.2} ms");

    // After the file changed, the old version still loads by its hash from the archive.
    install_versioned(&plugins, "versioned-v2", "2.0.0");
    let restarted = registry(&dir);
    let pinned = restarted.get_pinned("versioned", &v1.hash).await.unwrap();
    assert_eq!(pinned.version(), Some("1.0.0"));
    assert_eq!(restarted.get("versioned").await.unwrap().version(), Some("2.0.0"));
}

/// A restart does not read or hash a plugin file unchanged since it was
/// loaded (its identity on disk is remembered in the cache); any write to it
/// (in place, keeping its length) or to its manifest is a new version.
#[tokio::test]
async fn a_remembered_plugin_file_is_never_served_stale() {
    let dir = scratch("fingerprint");
    let plugins = dir.join("plugins");
    install_versioned(&plugins, "versioned-v1", "1.0.0");
    // Only a file whose last change is two seconds old is remembered.
    std::thread::sleep(Duration::from_millis(2100));
    let v1 = registry(&dir).get("versioned").await.unwrap().hash.clone();
    let records = std::fs::read_dir(dir.join("cache/fingerprints")).map(|entries| entries.count()).unwrap_or(0);
    assert_eq!(records, 1, "the settled file's hash is remembered");
    let again = registry(&dir);
    assert_eq!(again.get("versioned").await.unwrap().hash, v1);
    assert_eq!(again.stats().compiled.load(Ordering::Relaxed), 0);

    // Rewritten in place (same inode, other bytes): the new version, never v1's code.
    let v2_bytes = variant("versioned-v2");
    std::fs::write(plugins.join("versioned.wasm"), &v2_bytes).unwrap();
    let loaded = registry(&dir).get("versioned").await.unwrap();
    assert_eq!(loaded.hash, stepwise::plugin::content_hash(&v2_bytes, Some("version = \"1.0.0\"\n")));
    assert_ne!(loaded.hash, v1);
    // Only the manifest changed: another version too.
    std::fs::write(plugins.join("versioned.toml"), "version = \"1.0.1\"\n").unwrap();
    let relabelled = registry(&dir).get("versioned").await.unwrap();
    assert_eq!(relabelled.version(), Some("1.0.1"));
    assert_ne!(relabelled.hash, loaded.hash);
}

#[test]
fn a_restarted_cli_does_not_recompile() {
    let dir = scratch("cli-cache");
    let cache = dir.join("cache");
    let run = || {
        std::process::Command::new(stepwise_bin())
            .args(["run", "guest-examples/workflows/flaky.toml", "--store", "memory", "--plugins"])
            .arg(plugins_dir())
            .env("STEPWISE_CACHE", &cache)
            .env("STEPWISE_LOG", "info")
            .current_dir(repo_root())
            .output()
            .unwrap()
    };
    let first = String::from_utf8_lossy(&run().stderr).to_string();
    assert!(first.contains("compiled in"), "{first}");
    let second = String::from_utf8_lossy(&run().stderr).to_string();
    assert!(second.contains("loaded from the compiled-code cache"), "{second}");
    assert!(!second.contains("compiled in"), "{second}");
}

#[test]
fn a_workflow_pinning_another_plugin_version_is_refused_at_start() {
    let dir = scratch("pin");
    install_versioned(&dir.join("plugins"), "versioned-v1", "1.4.2");
    let workflow = |pin: &str| format!("name = \"pinned\"\n[[steps]]\nid = \"only\"\nplugin = \"versioned@{pin}\"\n");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let registry = registry(&dir);
        let engine = Engine::new(registry.clone(), Arc::new(MemoryStore::new()));
        for pin in ["1", "1.4", "1.4.2"] {
            let flow = Arc::new(Workflow::from_toml("pinned.toml", &workflow(pin), registry.as_ref()).unwrap());
            let execution = engine.run(flow, json!({}), StartOptions::default()).await.unwrap();
            assert_eq!(execution.status, ExecutionStatus::Succeeded, "pin {pin}");
        }
        let flow = Arc::new(Workflow::from_toml("pinned.toml", &workflow("1.5"), registry.as_ref()).unwrap());
        let error = engine.run(flow, json!({}), StartOptions::default()).await.unwrap_err().to_string();
        assert_eq!(error, "step `only` pins plugin `versioned@1.5`, but the plugin is at version 1.4.2");
    });
    let error = Workflow::from_toml(
        "bad.toml",
        &workflow("1.x y"),
        &std::collections::BTreeSet::from(["versioned".to_string()]),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("is not a version"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_files_are_hot_reloaded_and_a_broken_one_keeps_the_good_version() {
    let dir = scratch("workflows");
    let flows = dir.join("workflows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::copy(plugins_dir().join("echo.wasm"), dir.join("plugins/echo.wasm")).unwrap();
    let registry = registry(&dir);
    let directory = Arc::new(WorkflowDirectory::load(&flows, registry.clone()).unwrap());
    let _watch = directory.watch().unwrap();
    assert!(directory.get("greet").is_none());

    let good = |greeting: &str| {
        format!("name = \"greet\"\n[[steps]]\nid = \"say\"\nplugin = \"echo\"\ninput = {{ text = \"{greeting}\" }}\n")
    };
    replace(&flows.join("greet.toml"), good("hello").as_bytes());
    eventually("the new workflow is loaded", || directory.get("greet").is_some()).await;

    replace(&flows.join("greet.toml"), b"name = \"greet\"\n[[steps]]\nid = \"say\"\nplugin = \"no-such-plugin\"\n");
    let path = flows.join("greet.toml");
    eventually("the broken file is reported", || directory.files().get(&path).is_some_and(|s| s.error.is_some())).await;
    let error = directory.files()[&path].error.clone().unwrap();
    assert!(error.contains("unknown plugin `no-such-plugin`"), "{error}");
    let kept = directory.get("greet").unwrap();
    assert_eq!(kept.definition().steps[0].input, json!({"text": "hello"}), "the good version keeps serving");

    replace(&flows.join("greet.toml"), good("bonjour").as_bytes());
    eventually("the fixed file replaces it", || {
        directory.get("greet").is_some_and(|w| w.definition().steps[0].input == json!({"text": "bonjour"}))
    })
    .await;
    assert!(directory.files()[&path].error.is_none());

    std::fs::remove_file(&path).unwrap();
    eventually("the deleted workflow is gone", || directory.get("greet").is_none()).await;
}
