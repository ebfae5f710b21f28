//! Whole-engine benchmarks that criterion's per-call model does not fit:
//! replay throughput against a parse-only loop and a minimal engine,
//! resident memory per customer, and watermark advances at scale, on both
//! population shapes (`generate --shape`). Numbers go to BENCHMARKS.md.
//!
//! `cargo bench --bench replay -- --quick` (CI): 20k customers per shape;
//! fails only if a shape's engine/minimal-engine ratio falls below its
//! regression floor (ratios are stable across machines where absolute times
//! are not).
//! `cargo bench --bench replay -- --file F`: the same three rounds over a
//! JSON-lines file of your own (every line must be a valid event).
//! `cargo bench --bench replay -- --segments`: two segments configured and
//! named by every event against one, and memory per customer with both.
//! `cargo bench --bench replay -- --full`: both shapes at 20k and at 1M
//! customers / 10M events, memory at 1M and 10M customers, timers at 10M.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use churnwatch::config::Config;
use churnwatch::engine::Engine;
use churnwatch::engine::event::{DAY_MS, Ts};
use churnwatch::engine::native::decode;
use churnwatch::engine::watermark::Clock;
use churnwatch::generate::{Population, PopulationOptions, Shape, write};
use churnwatch::replay::{ReplayOptions, replay};

/// The quick run fails below this ratio of engine to minimal engine, per
/// shape: about half the median measured on the CI machine (BENCHMARKS.md),
/// so under it the engine got about twice slower, a regression, not noise.
fn quick_floor(shape: Shape) -> f64 {
    match shape {
        Shape::Established => 0.25,
        Shape::Young => 0.2,
    }
}

/// The parse-only baseline: the same lines into a plain struct.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Plain<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    ts: &'a str,
    customer_id: Option<&'a str>,
    amount: Option<f64>,
    rep_id: Option<&'a str>,
    status: Option<&'a str>,
}

/// Reads the file line by line, deserialises each line into [`Plain`] and
/// hands it to `each`; counts the lines that parsed.
fn scan(path: &Path, mut each: impl FnMut(Plain<'_>)) -> (u64, Duration) {
    let started = Instant::now();
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path).expect("input"));
    let mut line = String::new();
    let mut n = 0u64;
    while reader.read_line(&mut line).expect("read") > 0 {
        if let Ok(plain) = serde_json::from_str::<Plain<'_>>(line.trim_end()) {
            n += 1;
            each(plain);
        }
        line.clear();
    }
    (n, started.elapsed())
}

fn parse_only(path: &Path) -> (u64, Duration) {
    scan(path, |plain| {
        std::hint::black_box(plain);
    })
}

/// The minimal engine: the parse-only loop plus one hash-map bump per
/// customer (events and spend), what any streaming RFM must at least do.
fn minimal_engine(path: &Path) -> (u64, Duration) {
    let mut customers: HashMap<String, (u32, f64)> = HashMap::new();
    let scanned = scan(path, |plain| {
        if let Some(id) = plain.customer_id {
            let amount = plain.amount.unwrap_or(0.0);
            match customers.get_mut(id) {
                Some(c) => *c = (c.0 + 1, c.1 + amount),
                None => {
                    customers.insert(id.to_string(), (1, amount));
                }
            }
        }
    });
    std::hint::black_box(&customers);
    scanned
}

fn engine_replay(path: &Path) -> (u64, Duration, usize) {
    let options = ReplayOptions {
        inputs: vec![path.to_path_buf()],
        mapped: Vec::new(),
        until: None,
        dead_letter: None,
        now: Ts(i64::MAX / 2),
    };
    let summary = replay(
        &Config::default(),
        &options,
        &mut std::io::sink(),
        &mut std::io::sink(),
    )
    .expect("replay");
    (summary.applied, summary.elapsed, summary.customers)
}

/// An `[[inputs]]` mapping that reads the native format through the
/// mapping decoder: every field by pointer, the type mapped, rep events
/// filtered (a customer topic's mapping cannot carry them).
const IDENTITY_MAPPING: &str = r#"
[[inputs]]
topic = "native"
event = { path = "/type", map = { purchase = "purchase", call = "call", ticket = "ticket" } }
when = { path = "/type", in = ["purchase", "call", "ticket"] }
[inputs.fields]
customer_id = "/customer_id"
amount = "/amount"
currency = "/currency"
ts = "/ts"
event_id = "/event_id"
rep_id = "/rep_id"
channel = "/channel"
direction = "/direction"
ticket_id = "/ticket_id"
status = "/status"
kind = "/kind"
"#;

/// Records per second of a replay of `path` under `config`, native or
/// through the identity mapping.
fn records_per_second(path: &Path, config: &Config, mapped: bool) -> f64 {
    let file = vec![path.to_path_buf()];
    let options = ReplayOptions {
        inputs: if mapped { Vec::new() } else { file },
        mapped: if mapped {
            vec![("native".to_string(), path.to_path_buf())]
        } else {
            Vec::new()
        },
        until: None,
        dead_letter: None,
        now: Ts(i64::MAX / 2),
    };
    let s = replay(config, &options, &mut std::io::sink(), &mut std::io::sink()).expect("replay");
    let records = s.applied + s.outcomes.rejected_total() + s.outcomes.skipped_total();
    records as f64 / s.elapsed.as_secs_f64()
}

/// Mapped against native decoding, three rounds each, on the generator's
/// established book.
fn mapped_vs_native(customers: usize, events: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let options = PopulationOptions {
        customers,
        seed: 7,
        start: Ts(1_767_225_600_000),
        shape: Shape::Established,
    };
    write(Population::new(options), 400, events, &path).expect("generate");
    let _ = parse_only(&path);
    let identity = Config::parse(IDENTITY_MAPPING).expect("mapping");
    let (mut native, mut mapped) = (Vec::new(), Vec::new());
    for round in 1..=3 {
        let n = records_per_second(&path, &Config::default(), false);
        let m = records_per_second(&path, &identity, true);
        println!(
            "mapped {customers} customers round {round}: native {n:.0} records/s, mapped {m:.0}, ratio {:.2}",
            m / n
        );
        native.push(n);
        mapped.push(m);
    }
    let (n, m) = (median(native), median(mapped));
    println!(
        "mapped {customers} customers, medians: native {n:.0} records/s, mapped {m:.0}, ratio {:.2}",
        m / n
    );
}

/// Two segments, each ranked on its own with its own limits (wholesale's
/// longer, the same rules on: more rules on would add timers, which is
/// not what segments cost).
const TWO_SEGMENTS: &str = r#"
[segments]
default = "retail"
[segments.wholesale]
tiers = "own"
[segments.wholesale.rules.purchase_recency]
A = "60d"
B = "90d"
[segments.retail]
tiers = "own"
"#;

/// Every customer event of the generator's file names a segment: half the
/// customers (by the last digit of their id) wholesale, half retail.
fn tag_segments(from: &Path, to: &Path) {
    let text = std::fs::read_to_string(from).expect("events");
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.lines() {
        let id = line
            .split("\"customer_id\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next());
        match id {
            Some(id) => {
                let segment = if id.bytes().last().is_some_and(|b| b % 2 == 0) {
                    "wholesale"
                } else {
                    "retail"
                };
                out.push_str(&format!("{{\"segment\":\"{segment}\",{}", &line[1..]));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    std::fs::write(to, out).expect("tagged events");
}

/// Replay throughput with two segments configured and named by every
/// customer event, against no segments over the same file (its `segment`
/// fields parsed and counted as unknown) and over the file untagged: the
/// first ratio is what configuring segments costs, the second what the
/// extra field adds on top.
fn segments_vs_one(customers: usize, events: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (plain, tagged) = (
        dir.path().join("plain.jsonl"),
        dir.path().join("tagged.jsonl"),
    );
    let options = PopulationOptions {
        customers,
        seed: 7,
        start: Ts(1_767_225_600_000),
        shape: Shape::Established,
    };
    write(Population::new(options), 400, events, &plain).expect("generate");
    tag_segments(&plain, &tagged);
    let _ = parse_only(&plain);
    let two = Config::parse(TWO_SEGMENTS).expect("segments");
    let (mut untagged, mut one, mut both) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=3 {
        let u = records_per_second(&plain, &Config::default(), false);
        let o = records_per_second(&tagged, &Config::default(), false);
        let t = records_per_second(&tagged, &two, false);
        println!(
            "segments {customers} customers round {round}: untagged {u:.0} records/s, tagged with no segments {o:.0}, two segments {t:.0}; two/none {:.2}, two/untagged {:.2}",
            t / o,
            t / u
        );
        untagged.push(u);
        one.push(o);
        both.push(t);
    }
    let (u, o, t) = (median(untagged), median(one), median(both));
    println!(
        "segments {customers} customers, medians: untagged {u:.0} records/s, tagged with no segments {o:.0}, two segments {t:.0}; two/none {:.2}, two/untagged {:.2}",
        t / o,
        t / u
    );
}

/// This process's peak resident memory (what `/usr/bin/time -f %M` reports).
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Replay's medians over three rounds, measured side by side with both
/// baselines on the same file.
struct Throughput {
    /// Engine events/s.
    engine: f64,
    /// Engine / parse-only.
    vs_parse: f64,
    /// Engine / minimal engine.
    vs_minimal: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn throughput(shape: Shape, customers: usize, events: u64) -> Throughput {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let options = PopulationOptions {
        customers,
        seed: 7,
        start: Ts(1_767_225_600_000),
        shape,
    };
    // The young book is measured over its first 20 days, as it was reported.
    let days = match shape {
        Shape::Established => 400,
        Shape::Young => 20,
    };
    let written = write(Population::new(options), days, events, &path).expect("generate");
    measure(&format!("{shape:?} {customers} customers"), &path, written)
}

/// Three rounds of the engine and both baselines over the file at `path`,
/// `written` events long.
fn measure(what: &str, path: &Path, written: u64) -> Throughput {
    // Warm the page cache so every run reads from memory.
    let _ = parse_only(path);
    let (mut engines, mut vs_parse, mut vs_minimal) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=3 {
        let (n, parse) = parse_only(path);
        let (m, minimal) = minimal_engine(path);
        let (applied, engine, tracked) = engine_replay(path);
        assert_eq!((n, m), (written, written));
        assert_eq!(applied, written);
        let p = n as f64 / parse.as_secs_f64();
        let m = m as f64 / minimal.as_secs_f64();
        let e = applied as f64 / engine.as_secs_f64();
        println!(
            "replay {what} round {round}: {written} events, {tracked} customers: engine {e:.0} events/s, minimal engine {m:.0}, parse-only {p:.0}; ratio to minimal {:.2}, to parse-only {:.2}",
            e / m,
            e / p
        );
        engines.push(e);
        vs_parse.push(e / p);
        vs_minimal.push(e / m);
    }
    let t = Throughput {
        engine: median(engines),
        vs_parse: median(vs_parse),
        vs_minimal: median(vs_minimal),
    };
    println!(
        "replay {what}, medians: engine {:.0} events/s, ratio to minimal {:.2}, to parse-only {:.2}",
        t.engine, t.vs_minimal, t.vs_parse
    );
    t
}

/// Bytes per customer as `churnwatch replay` holds them, taken as the CLI
/// measurement is: `churnwatch generate --customers N --days 30 --seed 7`,
/// then replay's peak RSS over that file less its peak over the file's
/// first 200 lines (the process baseline), over the customers the replay
/// holds. Each replay runs in a fresh process (this bench again, with
/// `--memory-child FILE`), calling the library's replay as the CLI does;
/// in this one, memory freed by earlier measurements would be reused and
/// hide the growth. With `segments`, every event is tagged with one of
/// two segments ranked on their own.
fn memory(n: usize, segments: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (plain, tagged, base) = (
        dir.path().join("m1.jsonl"),
        dir.path().join("m1-segments.jsonl"),
        dir.path().join("m0.jsonl"),
    );
    let options = PopulationOptions {
        customers: n,
        seed: 7,
        start: Ts(1_767_225_600_000),
        shape: Shape::Established,
    };
    write(Population::new(options), 30, u64::MAX, &plain).expect("generate");
    let full = if segments {
        tag_segments(&plain, &tagged);
        &tagged
    } else {
        &plain
    };
    let head: Vec<String> = BufReader::new(File::open(full).expect("events"))
        .lines()
        .take(200)
        .collect::<Result<_, _>>()
        .expect("events");
    std::fs::write(&base, head.join("\n") + "\n").expect("baseline file");
    let peak = |file: &Path| -> Option<(u64, u64)> {
        let exe = std::env::current_exe().ok()?;
        let mut command = std::process::Command::new(exe);
        command.arg("--memory-child").arg(file);
        if segments {
            command.arg("--segments");
        }
        let out = command.output().ok().filter(|o| o.status.success())?;
        let text = String::from_utf8(out.stdout).ok()?;
        let mut words = text.split_whitespace().map(|w| w.parse::<u64>().ok());
        Some((words.next()??, words.next()??))
    };
    match (peak(&base), peak(full)) {
        (Some((baseline, _)), Some((top, customers))) if customers > 0 => println!(
            "memory: {customers} customers ({n} generated, 30 days{}), peak RSS {} MiB over a {} MiB baseline, {:.0} bytes per customer",
            if segments { ", two segments" } else { "" },
            (top - baseline) >> 20,
            baseline >> 20,
            (top - baseline) as f64 / customers as f64
        ),
        _ => eprintln!("memory measurement for {n} customers failed"),
    }
}

/// Replays `file` as `churnwatch replay` does (output discarded) and
/// prints this process's peak RSS in bytes and the customers held.
fn memory_child(file: &Path, segments: bool) {
    let config = if segments {
        Config::parse(TWO_SEGMENTS).expect("segments")
    } else {
        Config::default()
    };
    let options = ReplayOptions {
        inputs: vec![file.to_path_buf()],
        mapped: Vec::new(),
        until: None,
        dead_letter: None,
        now: Ts(chrono::Utc::now().timestamp_millis()),
    };
    let summary = replay(
        &config,
        &options,
        &mut std::io::sink(),
        &mut std::io::sink(),
    )
    .expect("replay");
    println!("{} {}", peak_rss_bytes(), summary.customers);
}

/// Group-wide tiers at `n` customers over `partitions` input partitions
/// (spend log-uniform from 10 to 100k): the time of one summary pass over
/// every partition (what an instance holding all of them spends per
/// recompute), the bytes each partition's summary takes on the tiers
/// topic, and the merge.
fn tier_summaries(n: usize, partitions: u16) {
    use churnwatch::engine::tier_summary::merge;
    let mut engine = Engine::new(&Config::default().engine_settings(), Clock::Event);
    let limits = engine.decode_limits();
    let mut out = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let amount = (10f64.ln() + (seed >> 11) as f64 / (1u64 << 53) as f64 * 9f64.ln()).exp();
        let p = format!(
            r#"{{"type":"purchase","ts":"2026-03-01T10:00:00Z","customer_id":"C{i:08}","amount":{amount:.2}}}"#
        );
        let ev = decode(p.as_bytes(), limits).expect("valid");
        engine
            .apply(ev, (i % usize::from(partitions)) as u16, &mut out)
            .expect("applied");
    }
    engine.advance_to(Ts(1_772_366_400_000 + 2 * 3_600_000), &mut out);
    let all: Vec<u16> = (0..partitions).collect();
    let first = merge(
        &engine
            .tier_summaries(&all, &Default::default())
            .into_values()
            .collect::<Vec<_>>(),
        5.0,
        15.0,
    );
    let started = Instant::now();
    let summaries = engine.tier_summaries(&all, &first.wanted);
    let pass = started.elapsed();
    let bytes: Vec<usize> = summaries
        .values()
        .map(|s| serde_json::to_vec(s).expect("encoded").len())
        .collect();
    let started = Instant::now();
    let merged = merge(summaries.values(), 5.0, 15.0);
    let merging = started.elapsed();
    assert!(merged.complete(), "the second round is exact");
    println!(
        "tier summaries: {n} customers on {partitions} partitions: one pass {:.1} ms, {} bytes per partition's summary (max {}), merge {:.1} ms",
        pass.as_secs_f64() * 1e3,
        bytes.iter().sum::<usize>() / bytes.len(),
        bytes.iter().max().copied().unwrap_or(0),
        merging.as_secs_f64() * 1e3
    );
}

/// Time to advance the watermark by one minute with `n` customers, nothing
/// due, then with 1% due.
fn timers(n: usize) {
    let mut config = Config::default();
    let d30 = Some(Duration::from_secs(30 * 86_400));
    config
        .rules
        .purchase_recency
        .set_fixed(churnwatch::config::TierLimits {
            a: d30,
            b: d30,
            c: d30,
        });
    let mut engine = Engine::new(&config.engine_settings(), Clock::Wall);
    let limits = engine.decode_limits();
    let mut out = Vec::new();
    let t0 = Ts(1_767_225_600_000 + 40 * DAY_MS);
    let base = Ts(t0.0 - 30 * DAY_MS);
    // 1% of customers bought 30 days minus 30 s before t0: due inside the minute.
    for i in 0..n {
        let at = if i % 100 == 0 {
            Ts(base.0 + 30_000)
        } else {
            Ts(t0.0 - DAY_MS)
        };
        let p = format!(r#"{{"type":"purchase","ts":"{at}","customer_id":"C{i:08}","amount":1}}"#);
        engine
            .apply(decode(p.as_bytes(), limits).expect("valid"), 0, &mut out)
            .expect("applied");
    }
    let start = Ts(t0.0 - 5 * 3_600_000);
    engine.advance_to(start, &mut out);
    out.clear();
    let mut idle = Vec::new();
    let mut t = start;
    for _ in 0..200 {
        let next = Ts(t.0 + 60_000);
        let started = Instant::now();
        engine.advance_to(next, &mut out);
        idle.push(started.elapsed());
        t = next;
    }
    assert!(out.is_empty(), "nothing was due");
    idle.sort();
    engine.advance_to(t0, &mut out);
    let started = Instant::now();
    engine.advance_to(Ts(t0.0 + 60_000), &mut out);
    let due = started.elapsed();
    println!(
        "timers: {n} customers, {} pending; advance with nothing due: median {:?}; advance 1 minute with 1% due: {:?} ({} alerts)",
        engine.pending_timers(),
        idle[idle.len() / 2],
        due,
        out.len()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --all-targets` runs bench binaries without `--bench`; the
    // test command runs the quick variant through `cargo bench` instead.
    if !args.iter().any(|a| a == "--bench" || a == "--memory-child") {
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let full = args.iter().any(|a| a == "--full");
    if let Some(file) = args
        .iter()
        .position(|a| a == "--memory-child")
        .and_then(|i| args.get(i + 1))
    {
        memory_child(Path::new(file), args.iter().any(|a| a == "--segments"));
        return;
    }
    if let Some(path) = args
        .iter()
        .position(|a| a == "--file")
        .and_then(|i| args.get(i + 1))
    {
        let path = Path::new(path);
        let (lines, _) = parse_only(path);
        measure(&path.display().to_string(), path, lines);
        return;
    }
    if quick {
        let mut failed = false;
        for shape in [Shape::Established, Shape::Young] {
            let t = throughput(shape, 20_000, 300_000);
            let floor = quick_floor(shape);
            println!(
                "quick {shape:?}: median ratio to the minimal engine {:.2} (floor {floor})",
                t.vs_minimal
            );
            if t.vs_minimal < floor {
                eprintln!(
                    "replay bench: {shape:?} ratio {:.2} is below the regression floor {floor}",
                    t.vs_minimal
                );
                failed = true;
            }
        }
        if failed {
            std::process::exit(1);
        }
        return;
    }
    if args.iter().any(|a| a == "--mapped") {
        mapped_vs_native(100_000, 1_000_000);
        return;
    }
    if args.iter().any(|a| a == "--memory") {
        memory(1_000_000, false);
        memory(1_000_000, true);
        return;
    }
    if args.iter().any(|a| a == "--tier-summaries") {
        tier_summaries(1_000_000, 12);
        tier_summaries(1_000_000, 64);
        return;
    }
    if args.iter().any(|a| a == "--segments") {
        segments_vs_one(100_000, 1_000_000);
        memory(1_000_000, false);
        memory(1_000_000, true);
        return;
    }
    if full {
        for shape in [Shape::Established, Shape::Young] {
            throughput(shape, 20_000, 300_000);
            throughput(shape, 1_000_000, 10_000_000);
        }
        mapped_vs_native(1_000_000, 10_000_000);
        segments_vs_one(1_000_000, 10_000_000);
        memory(1_000_000, false);
        memory(1_000_000, true);
        timers(10_000_000);
    } else {
        for shape in [Shape::Established, Shape::Young] {
            throughput(shape, 100_000, 1_000_000);
        }
        mapped_vs_native(100_000, 1_000_000);
        segments_vs_one(100_000, 1_000_000);
        memory(1_000_000, false);
        memory(1_000_000, true);
        timers(1_000_000);
    }
}
