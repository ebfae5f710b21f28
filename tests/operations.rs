//! What an operator sees: `run`'s stderr when it is a file, as under
//! journald or a log shipper (no terminal escape codes in text, one JSON
//! object per line in `json`), and `--version`.

use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Runs `churnwatch run` with `config` against a port nothing listens on,
/// stderr to a file, until what it wrote satisfies `enough` or it exited
/// (then with its status).
fn run_log(config: &str, enough: impl Fn(&str) -> bool) -> (String, Option<ExitStatus>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("churnwatch.toml");
    let state = dir.path().join("state");
    std::fs::write(
        &cfg,
        format!(
            "{config}\n[state]\ndir = \"{}\"\n[http]\nbind = \"127.0.0.1:0\"\nops_bind = \"127.0.0.1:0\"\n",
            state.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_churnwatch"))
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--brokers", "127.0.0.1:9"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let exited = child.try_wait().unwrap();
        if enough(&text) || exited.is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (std::fs::read_to_string(&log).unwrap(), exited);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn text_logs_to_a_file_carry_no_escape_codes() {
    let (text, _) = run_log("", |t| t.contains("WARN"));
    assert!(!text.contains('\x1b'), "escape codes in:\n{text}");
    assert!(
        text.contains("WARN"),
        "levels are written as words:\n{text}"
    );
}

#[test]
fn json_logs_are_one_object_per_line_with_the_expected_keys() {
    let (text, _) = run_log("[log]\nformat = \"json\"\nlevel = \"debug\"", |t| {
        t.contains("\"target\":\"churnwatch")
    });
    let mut ours = false;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "target", "message", "fields"] {
            assert!(v.get(key).is_some(), "no `{key}` in {line}");
        }
        assert!(v["fields"].is_object(), "{line}");
        assert!(
            chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).is_ok(),
            "{line}"
        );
        ours |= v["target"].as_str().unwrap().starts_with("churnwatch");
        assert!(!v["target"].as_str().unwrap().is_empty());
    }
    assert!(
        ours,
        "churnwatch's own events are there too (debug):\n{text}"
    );
}

/// Without a reachable broker `run` says so once, keeps trying for a
/// while, then exits with one error naming the brokers and what to check
/// (librdkafka's own line per connection attempt stays out of the log).
#[test]
fn no_broker_is_said_in_two_lines_naming_the_brokers() {
    let (text, status) = run_log("", |_| false);
    let status = status.unwrap_or_else(|| panic!("still running; it logged:\n{text}"));
    assert!(!status.success(), "{status}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "it logged:\n{text}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("127.0.0.1:9"),
        "{text}"
    );
    assert!(
        lines[1].contains("no broker of 127.0.0.1:9 answered")
            && lines[1].contains("security settings"),
        "{text}"
    );
}

#[test]
fn version_names_the_release_and_the_commit() {
    let out = Command::new(env!("CARGO_BIN_EXE_churnwatch"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let expected = format!("churnwatch {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&expected), "{text}");
    let commit = text
        .trim()
        .trim_start_matches(&expected)
        .trim_end_matches(')');
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{text}"
    );
}
