//! The web view as a browser shows it: headless Chromium loads a page of a
//! test server, runs its script and dumps the DOM.

use crate::server::Server;
use std::path::Path;
use std::process::Command;

/// The DOM of the web view page `path` (e.g. `/#/executions/ID?token=T`)
/// once its script ran.
pub fn dump_dom(server: &Server, path: &str) -> String {
    let profile = server.dir.join(format!("chromium-profile-{}", path.len()));
    let output = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        .arg(server.url(path))
        .output()
        .expect("running chromium");
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// The Chromium binary: Debian's, else the first on `PATH`.
pub fn chromium() -> &'static str {
    if Path::new("/usr/bin/chromium").exists() {
        "/usr/bin/chromium"
    } else {
        "chromium"
    }
}
