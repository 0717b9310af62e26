//! schemathesis (from PyPI, pinned; `scripts/schemathesis.sh` installs it)
//! against a real server's OpenAPI document: a few hundred generated
//! requests per pass, valid and invalid; no 5xx, valid data accepted,
//! invalid data refused, every answer as the document says.

use stepwise_test_support::repo_root;
use stepwise_test_support::server::{Server, TOKEN};

#[test]
fn the_server_answers_as_its_openapi_document_says() {
    let server = Server::start("schemathesis", &[]);
    let output = std::process::Command::new(repo_root().join("scripts/schemathesis.sh"))
        .args([&server.base, TOKEN, "120"])
        .output()
        .expect("running scripts/schemathesis.sh");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(report.matches(" passed").count() >= 3, "three passes ran: {report}");
    let generated: u64 =
        report.lines().filter_map(|line| line.trim().split(" generated").next()?.trim().parse::<u64>().ok()).sum();
    eprintln!("schemathesis: {generated} generated cases in three passes");
    assert!(generated >= 2000, "a bounded but real run: {generated} cases");
}
