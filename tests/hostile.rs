//! The hostile-input corpus (`tests/data/hostile.jsonl`, expected reason per
//! line in `hostile.codes`) through replay: every bad line is rejected with
//! its specific reason and dead-lettered, counts match, and the good lines
//! around them are applied normally. A 10 MB message is generated here
//! rather than stored in the repository.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/hostile.jsonl");
const CODES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/hostile.codes");

fn expected_codes() -> Vec<String> {
    std::fs::read_to_string(CODES)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn every_hostile_line_is_rejected_with_its_reason_and_good_lines_still_apply() {
    let dir = tempfile::tempdir().unwrap();
    // The corpus plus a 10 MB message and a good line after it.
    let input = dir.path().join("hostile-plus-huge.jsonl");
    let mut f = std::fs::File::create(&input).unwrap();
    f.write_all(&std::fs::read(CORPUS).unwrap()).unwrap();
    let huge = format!(
        r#"{{"type":"purchase","ts":"2026-03-01T11:00:00Z","customer_id":"c1","amount":5,"pad":"{}"}}"#,
        "x".repeat(10 * 1024 * 1024)
    );
    writeln!(f, "{huge}").unwrap();
    writeln!(f, r#"{{"type":"purchase","ts":"2026-03-01T11:01:00Z","customer_id":"after-huge","amount":-0.0}}"#).unwrap();
    drop(f);
    let mut codes = expected_codes();
    codes.push("too_large".into());
    codes.push("ok".into());
    assert!(
        codes.iter().filter(|c| *c != "ok").count() >= 40,
        "at least 40 bad messages"
    );

    let dead = dir.path().join("dead.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_churnwatch"))
        .args(["replay", "--dead-letter"])
        .arg(&dead)
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success(), "a hostile input never stops the run");
    let stderr = String::from_utf8_lossy(&out.stderr);

    let dead: Vec<serde_json::Value> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_line: BTreeMap<u64, String> = dead
        .iter()
        .map(|d| {
            (
                d["line"].as_u64().unwrap(),
                d["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (i, code) in codes.iter().enumerate() {
        let line = i as u64 + 1;
        if code == "ok" {
            assert!(
                !by_line.contains_key(&line),
                "line {line} is good but was rejected as {:?}",
                by_line.get(&line)
            );
        } else {
            assert_eq!(by_line.get(&line), Some(code), "line {line}");
            assert!(
                stderr.contains(&format!("hostile-plus-huge.jsonl:{line}: ")),
                "line {line} reported on stderr"
            );
        }
    }
    let bad = codes.iter().filter(|c| *c != "ok").count();
    let good = codes.len() - bad;
    let summary = stderr.lines().last().unwrap();
    assert!(
        summary.contains(&format!("{good} events applied, {bad} rejected")),
        "{summary}"
    );
    // Invalid UTF-8 is kept byte-exact in base64; the huge line is not copied.
    assert!(
        dead.iter()
            .filter(|d| d["reason"] == "invalid_utf8")
            .all(|d| d["raw_base64"].is_string())
    );
    assert!(
        dead.iter()
            .any(|d| d["reason"] == "too_large" && d["raw"].is_null())
    );
}
