//! A synthetic customer population, deterministic for a seed: spend that
//! follows a Pareto curve (so tiers mean something), purchase and contact
//! rhythms, customers who slip away, reps who leave and reps who keep
//! changing, tickets. One generator serves `generate`, `demo` and the
//! benchmarks.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::config::KafkaConfig;
use crate::engine::event::{DAY_MS, EventType, Ts};
use crate::kafka::client::{Role, client_config};

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct PopulationOptions {
    /// Number of customers.
    pub customers: usize,
    /// Seed: the same seed gives the same events.
    pub seed: u64,
    /// Time of day 0, 00:00.
    pub start: Ts,
    /// Which kind of population.
    pub shape: Shape,
}

/// The kind of population: the benchmarks run both, since where the
/// engine spends its time depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Shape {
    /// Settled customers: a purchase every 3 to 30 days, a rep contact
    /// every 4 to 20, a rep per 40 customers (about 45% purchases, 53%
    /// calls).
    #[default]
    Established,
    /// A young, purchase-heavy book: a purchase every 1.2 to 4 days, a rep
    /// contact every 8 to 16, a rep per 150 customers, fewer tickets (about
    /// 83% purchases, 16% calls, 0.5% tickets; over 20 days every customer
    /// is still climbing the ranks, so tiers keep moving).
    Young,
}

impl Shape {
    fn purchase_every(self) -> std::ops::Range<f64> {
        match self {
            Shape::Established => 3.0..30.0,
            Shape::Young => 1.2..4.0,
        }
    }

    fn call_every(self) -> std::ops::Range<f64> {
        match self {
            Shape::Established => 4.0..20.0,
            Shape::Young => 8.0..16.0,
        }
    }

    fn customers_per_rep(self) -> usize {
        match self {
            Shape::Established => 40,
            Shape::Young => 150,
        }
    }

    /// Chance that a customer opens a ticket on a day.
    fn ticket_chance(self) -> f64 {
        match self {
            Shape::Established => 0.004,
            Shape::Young => 0.0013,
        }
    }
}

#[derive(Debug, Clone)]
struct Profile {
    spend: f64,
    purchase_every: f64,
    call_every: f64,
    rep: u32,
    /// Day from which the customer stops buying (slipping away).
    stops_buying: Option<u32>,
    /// Planted fading: from this day the purchase rate falls linearly to
    /// nothing at `stops_buying`.
    fades_from: Option<u32>,
    /// How the customer churns, if it does.
    churn: Option<ChurnKind>,
    /// Day from which nobody calls the customer.
    stops_calls: Option<u32>,
    /// Probability that a call comes from another rep than the account rep.
    rep_churn: f64,
    /// Day on which a customer orphaned by a departed rep gets a new one.
    reassigned_on: Option<u32>,
    next_ticket: u32,
}

/// Planted churn: a share of the customers churn on a day in
/// `[from_day, to_day)`, in a way [`Population::truth`] reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Planted {
    /// Share of the customers (0..1).
    pub share: f64,
    /// Earliest churn day.
    pub from_day: u32,
    /// Churn days are before this.
    pub to_day: u32,
    /// Seed of the planting stream.
    pub seed: u64,
}

/// How a customer churns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChurnKind {
    /// Stops buying from one day to the next.
    Stop,
    /// Buys less and less, then not at all.
    Fade,
    /// Rep contact ends weeks before the purchases do.
    RepFirst,
}

/// One churning customer, as `generate --truth` writes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Truth {
    /// The customer.
    pub customer_id: String,
    /// How.
    pub churn: ChurnKind,
    /// The first day (from day 0) without purchases for good.
    pub day: u32,
    /// That day's start.
    pub at: Ts,
}

/// One generated event: its time, type, routing key and JSON line.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// Event time.
    pub ts: Ts,
    /// Event type.
    pub kind: EventType,
    /// Routing key (customer id, or rep id for roster events).
    pub key: String,
    /// The JSON line.
    pub line: String,
}

/// The deterministic synthetic population, advanced one day at a time.
pub struct Population {
    rng: ChaCha8Rng,
    start: Ts,
    day: u32,
    customers: Vec<Profile>,
    shape: Shape,
    reps: Vec<bool>,
    /// Tickets to resolve: (day, customer, ticket number).
    open_tickets: Vec<(u32, u32, u32)>,
}

impl Population {
    /// A population drawn from `options`.
    pub fn new(options: PopulationOptions) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
        let shape = options.shape;
        let reps = (options.customers / shape.customers_per_rep()).max(3);
        let customers = (0..options.customers)
            .map(|_| {
                let u: f64 = rng.random_range(0.0001..1.0);
                let spend = (50.0 * u.powf(-1.0 / 1.16)).min(1e6);
                Profile {
                    spend,
                    purchase_every: rng.random_range(shape.purchase_every()),
                    call_every: rng.random_range(shape.call_every()),
                    rep: rng.random_range(0..reps as u32),
                    stops_buying: rng.random_bool(0.08).then(|| rng.random_range(20..200)),
                    fades_from: None,
                    churn: None,
                    stops_calls: rng.random_bool(0.05).then(|| rng.random_range(20..200)),
                    rep_churn: if rng.random_bool(0.03) { 0.5 } else { 0.01 },
                    reassigned_on: None,
                    next_ticket: 0,
                }
            })
            .map(|mut p: Profile| {
                p.churn = p.stops_buying.map(|_| ChurnKind::Stop);
                p
            })
            .collect();
        Self {
            rng,
            start: options.start,
            day: 0,
            customers,
            shape,
            reps: vec![false; reps],
            open_tickets: Vec::new(),
        }
    }

    /// Plants churn with a known answer in a share of the customers not
    /// already churning, drawn from a stream of its own (the rest of the
    /// population stays as the seed makes it): a third stop buying at once,
    /// a third fade (their purchase rate falls to nothing over 30 to 90
    /// days), a third lose rep contact 14 to 42 days before they stop.
    pub fn plant(mut self, planted: Planted) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(planted.seed ^ 0x5eed_c4a1_7ed0_0001);
        let (from, to) = (planted.from_day, planted.to_day.max(planted.from_day + 1));
        for p in self.customers.iter_mut().filter(|p| p.churn.is_none()) {
            if !rng.random_bool(planted.share.clamp(0.0, 1.0)) {
                continue;
            }
            let day = rng.random_range(from..to);
            let kind =
                [ChurnKind::Stop, ChurnKind::Fade, ChurnKind::RepFirst][rng.random_range(0..3)];
            p.stops_buying = Some(day);
            p.churn = Some(kind);
            match kind {
                ChurnKind::Stop => {}
                ChurnKind::Fade => {
                    p.fades_from = Some(day.saturating_sub(rng.random_range(30..90)))
                }
                ChurnKind::RepFirst => {
                    p.stops_calls = Some(day.saturating_sub(rng.random_range(14..42)))
                }
            }
        }
        self
    }

    /// Who churns, how and from which day (the last day it may buy is the
    /// day before), by customer id.
    pub fn truth(&self) -> impl Iterator<Item = Truth> + '_ {
        self.customers.iter().enumerate().filter_map(|(i, p)| {
            let (kind, day) = p.churn.zip(p.stops_buying)?;
            Some(Truth {
                customer_id: customer_id(i),
                churn: kind,
                day,
                at: Ts(self.start.0 + i64::from(day) * DAY_MS),
            })
        })
    }

    /// The next day to generate.
    pub fn day(&self) -> u32 {
        self.day
    }

    /// Appends the next day's events to `out`, in time order.
    pub fn next_day(&mut self, out: &mut Vec<Generated>) {
        let first = out.len();
        let day = self.day;
        let day_start = self.start.0 + day as i64 * DAY_MS;
        let reps = self.reps.len() as u32;
        if self.rng.random_bool(0.03) {
            let r = self.rng.random_range(0..reps);
            if !self.reps[r as usize] {
                self.reps[r as usize] = true;
                let ts = Ts(day_start + self.rng.random_range(0..DAY_MS));
                out.push(Generated {
                    ts,
                    kind: EventType::Rep,
                    key: rep_id(r),
                    line: format!(
                        r#"{{"type":"rep","ts":"{ts}","rep_id":"{}","status":"departed"}}"#,
                        rep_id(r)
                    ),
                });
            }
        }
        for i in 0..self.customers.len() {
            let id = customer_id(i);
            let p = &mut self.customers[i];
            if self.reps[p.rep as usize] {
                match p.reassigned_on {
                    None => p.reassigned_on = Some(day + self.rng.random_range(2..25)),
                    Some(d) if d <= day => {
                        p.rep = self.rng.random_range(0..reps);
                        p.reassigned_on = None;
                    }
                    Some(_) => {}
                }
            }
            let buying = p.stops_buying.is_none_or(|d| day < d);
            let rate = match (p.fades_from, p.stops_buying) {
                (Some(f), Some(s)) if day >= f && s > f => {
                    1.0 - f64::from(day - f) / f64::from(s - f)
                }
                _ => 1.0,
            };
            if buying
                && self
                    .rng
                    .random_bool((rate / p.purchase_every).clamp(0.0, 1.0))
            {
                let ts = Ts(day_start + self.rng.random_range(0..DAY_MS));
                let refund = self.rng.random_bool(0.01);
                let amount = p.spend / 12.0
                    * self.rng.random_range(0.5..1.5)
                    * if refund { -0.5 } else { 1.0 };
                out.push(Generated {
                    ts,
                    kind: EventType::Purchase,
                    key: id.clone(),
                    line: format!(
                        r#"{{"type":"purchase","ts":"{ts}","customer_id":"{id}","amount":{amount:.2},"currency":"EUR"}}"#
                    ),
                });
            }
            let called = p.stops_calls.is_none_or(|d| day < d) && !self.reps[p.rep as usize];
            if called && self.rng.random_bool((1.0 / p.call_every).min(1.0)) {
                let ts = Ts(day_start + self.rng.random_range(0..DAY_MS));
                let rep = if self.rng.random_bool(p.rep_churn) {
                    self.rng.random_range(0..reps)
                } else {
                    p.rep
                };
                let channel = ["visit", "phone", "email", "chat"][self.rng.random_range(0..4)];
                out.push(Generated {
                    ts,
                    kind: EventType::Call,
                    key: id.clone(),
                    line: format!(
                        r#"{{"type":"call","ts":"{ts}","customer_id":"{id}","rep_id":"{}","channel":"{channel}"}}"#,
                        rep_id(rep)
                    ),
                });
            }
            if self.rng.random_bool(self.shape.ticket_chance()) {
                let ts = Ts(day_start + self.rng.random_range(0..DAY_MS));
                p.next_ticket += 1;
                let kind = if self.rng.random_bool(0.3) {
                    "complaint"
                } else {
                    "support"
                };
                out.push(Generated {
                    ts,
                    kind: EventType::Ticket,
                    key: id.clone(),
                    line: format!(
                        r#"{{"type":"ticket","ts":"{ts}","customer_id":"{id}","ticket_id":"{id}-T{}","status":"opened","kind":"{kind}"}}"#,
                        p.next_ticket
                    ),
                });
                self.open_tickets.push((
                    day + self.rng.random_range(1..15),
                    i as u32,
                    p.next_ticket,
                ));
            }
        }
        let mut still_open = Vec::with_capacity(self.open_tickets.len());
        for (due, c, t) in std::mem::take(&mut self.open_tickets) {
            if due == day {
                let ts = Ts(day_start + self.rng.random_range(0..DAY_MS));
                let id = customer_id(c as usize);
                out.push(Generated {
                    ts,
                    kind: EventType::Ticket,
                    key: id.clone(),
                    line: format!(
                        r#"{{"type":"ticket","ts":"{ts}","customer_id":"{id}","ticket_id":"{id}-T{t}","status":"resolved"}}"#
                    ),
                });
            } else {
                still_open.push((due, c, t));
            }
        }
        self.open_tickets = still_open;
        out[first..].sort_by_key(|g| g.ts);
        self.day += 1;
    }
}

/// Writes the population's truth (see [`Population::truth`]) as JSON lines.
pub fn write_truth(population: &Population, path: &Path) -> io::Result<u64> {
    let mut out = BufWriter::new(File::create(path)?);
    let mut written = 0;
    for t in population.truth() {
        serde_json::to_writer(&mut out, &t)?;
        out.write_all(b"\n")?;
        written += 1;
    }
    out.flush()?;
    Ok(written)
}

/// Writes `days` days (at most `limit` events) as JSON lines; `-` is stdout.
pub fn write(population: Population, days: u32, limit: u64, path: &Path) -> io::Result<u64> {
    let out: Box<dyn Write> = if path.as_os_str() == "-" {
        Box::new(io::stdout().lock())
    } else {
        Box::new(File::create(path)?)
    };
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let mut written = 0u64;
    for g in events(population, days, limit) {
        out.write_all(g.line.as_bytes())?;
        out.write_all(b"\n")?;
        written += 1;
    }
    out.flush()?;
    Ok(written)
}

/// The first `days` days of the population, at most `limit` events, in
/// time order.
pub fn events(
    mut population: Population,
    days: u32,
    limit: u64,
) -> impl Iterator<Item = Generated> {
    let mut day = std::collections::VecDeque::new();
    let mut batch = Vec::new();
    std::iter::from_fn(move || {
        while day.is_empty() && population.day() < days {
            batch.clear();
            population.next_day(&mut batch);
            day.extend(batch.drain(..));
        }
        day.pop_front()
    })
    .take(usize::try_from(limit).unwrap_or(usize::MAX))
}

/// Produces `days` days to Kafka: purchases, calls and tickets to the input
/// topic of that name (else the first input topic), roster events to the
/// roster topic; keyed by customer id (rep id for roster events).
pub async fn produce(
    config: &KafkaConfig,
    brokers: &str,
    population: Population,
    days: u32,
    limit: u64,
) -> Result<u64, KafkaError> {
    let producer: FutureProducer = client_config(config, brokers, Role::Loader).create()?;
    let mut publisher = Publisher::new(producer);
    let mut written = 0u64;
    for g in events(population, days, limit) {
        publisher
            .send(
                topic_for(config, g.kind),
                g.key.as_bytes(),
                g.line.as_bytes(),
            )
            .await?;
        written += 1;
    }
    publisher.flush().await?;
    Ok(written)
}

/// Pipelined producing: records are queued without waiting for each
/// delivery; a full queue waits for the oldest.
pub struct Publisher {
    producer: FutureProducer,
    pending: VecDeque<DeliveryFuture>,
}

impl Publisher {
    /// A publisher over `producer`.
    pub fn new(producer: FutureProducer) -> Self {
        Self {
            producer,
            pending: VecDeque::new(),
        }
    }

    /// Queues one record, waiting for the oldest delivery when many are in flight.
    pub async fn send(
        &mut self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
    ) -> Result<(), KafkaError> {
        loop {
            let record = FutureRecord::to(topic).key(key).payload(payload);
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    self.pending.push_back(delivery);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    match self.pending.pop_front() {
                        Some(d) => confirm(d).await?,
                        None => tokio::task::yield_now().await,
                    }
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Waits for every queued delivery.
    pub async fn flush(&mut self) -> Result<(), KafkaError> {
        while let Some(d) = self.pending.pop_front() {
            confirm(d).await?;
        }
        Ok(())
    }
}

async fn confirm(delivery: DeliveryFuture) -> Result<(), KafkaError> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e),
        Err(_) => Err(KafkaError::Canceled),
    }
}

/// The topic a generated event goes to.
pub fn topic_for(config: &KafkaConfig, kind: EventType) -> &str {
    let inputs = &config.input_topics;
    let wanted = match kind {
        EventType::Purchase => "purchases",
        EventType::Call => "calls",
        EventType::Ticket => "tickets",
        EventType::Rep => return &config.roster_topic,
    };
    inputs.iter().find(|t| *t == wanted).unwrap_or(&inputs[0])
}

fn customer_id(i: usize) -> String {
    format!("C{i:07}")
}

fn rep_id(r: u32) -> String {
    format!("R{r:04}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::event::DecodeLimits;
    use crate::engine::native::decode;

    fn days(seed: u64, n: u32) -> Vec<Generated> {
        shaped(Shape::Established, seed, n)
    }

    fn shaped(shape: Shape, seed: u64, n: u32) -> Vec<Generated> {
        let mut p = Population::new(PopulationOptions {
            customers: 300,
            seed,
            start: Ts(1_767_225_600_000),
            shape,
        });
        let mut out = Vec::new();
        for _ in 0..n {
            p.next_day(&mut out);
        }
        out
    }

    #[test]
    fn same_seed_same_events_in_time_order_and_all_valid() {
        let a = days(7, 30);
        assert_eq!(a, days(7, 30));
        assert_ne!(a, days(8, 30));
        assert!(a.windows(2).all(|w| w[0].ts <= w[1].ts));
        let limits = DecodeLimits {
            max_amount: 1e9,
            max_event_bytes: 65536,
        };
        for g in &a {
            let e = decode(g.line.as_bytes(), limits).unwrap();
            assert_eq!(e.ts, g.ts);
            assert_eq!(e.event_type(), g.kind);
        }
        for kind in [EventType::Purchase, EventType::Call, EventType::Ticket] {
            assert!(a.iter().any(|g| g.kind == kind), "{kind:?} generated");
        }
    }

    fn share(events: &[Generated], kind: EventType) -> f64 {
        events.iter().filter(|g| g.kind == kind).count() as f64 / events.len() as f64
    }

    #[test]
    fn the_young_shape_is_purchase_heavy_and_the_established_one_is_not() {
        let young = shaped(Shape::Young, 7, 20);
        let established = shaped(Shape::Established, 7, 20);
        let p = share(&young, EventType::Purchase);
        assert!((0.75..0.9).contains(&p), "young: {p:.2} purchases");
        let c = share(&young, EventType::Call);
        assert!((0.1..0.25).contains(&c), "young: {c:.2} calls");
        let p = share(&established, EventType::Purchase);
        assert!((0.35..0.55).contains(&p), "established: {p:.2} purchases");
        assert!(young.len() > 2 * established.len(), "young buys more often");
    }
}
