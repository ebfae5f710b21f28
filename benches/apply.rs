//! The hot path per event type: decode + validate + apply + rule evaluation,
//! single thread, against a warmed-up population of customers.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use churnwatch::config::Config;
use churnwatch::engine::Engine;
use churnwatch::engine::native::decode;
use churnwatch::engine::watermark::Clock;

const CUSTOMERS: usize = 100_000;
const TS: &str = "2026-03-01T10:00:00Z";

fn line(kind: &str, i: usize) -> String {
    match kind {
        "purchase" => format!(
            r#"{{"type":"purchase","ts":"{TS}","customer_id":"C{i:08}","amount":{}.5,"currency":"EUR"}}"#,
            i % 997
        ),
        "call" => format!(
            r#"{{"type":"call","ts":"{TS}","customer_id":"C{i:08}","rep_id":"R{:04}","channel":"visit"}}"#,
            i % 300
        ),
        "ticket" => format!(
            r#"{{"type":"ticket","ts":"{TS}","customer_id":"C{i:08}","ticket_id":"T{i}","status":"opened","kind":"support"}}"#
        ),
        _ => format!(
            r#"{{"type":"rep","ts":"{TS}","rep_id":"R{:04}","status":"active"}}"#,
            i % 300
        ),
    }
}

fn warmed_engine() -> Engine {
    let mut engine = Engine::new(&Config::default().engine_settings(), Clock::Event);
    let mut out = Vec::new();
    for i in 0..CUSTOMERS {
        let l = line("purchase", i);
        let ev = decode(l.as_bytes(), engine.decode_limits()).unwrap();
        engine.apply(ev, 0, &mut out).unwrap();
    }
    engine
}

fn apply_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(1));
    for kind in ["purchase", "call", "ticket", "rep"] {
        let lines: Vec<String> = (0..CUSTOMERS)
            .map(|i| line(kind, (i * 7919) % CUSTOMERS))
            .collect();
        let mut engine = warmed_engine();
        let mut out = Vec::new();
        let mut i = 0;
        group.bench_function(BenchmarkId::new("decode+apply", kind), |b| {
            b.iter(|| {
                let l = &lines[i % lines.len()];
                i += 1;
                let ev = decode(l.as_bytes(), engine.decode_limits()).unwrap();
                engine.apply(ev, 0, &mut out).unwrap();
                out.clear();
            })
        });
        let limits = engine.decode_limits();
        group.bench_function(BenchmarkId::new("decode", kind), |b| {
            b.iter(|| {
                let l = &lines[i % lines.len()];
                i += 1;
                decode(l.as_bytes(), limits).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, apply_path);
criterion_main!(benches);
