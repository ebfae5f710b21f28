//! `churnwatch evaluate`: proves alerts and the risk score against what
//! the input says happened next.
//!
//! The history up to the cut T goes through the same engine as `replay`;
//! its state at T gives each customer's tier, firing rules and risk. The
//! input after T labels them: churned = no purchase in (T, T + horizon].
//! Customers first seen after T are not counted. Without `[risk.model]`
//! in the config, the BG/NBD parameters are fitted on the history up to T
//! (what `churnwatch fit --until T` prints) and used both by the risk score
//! and by the 1 − P(alive) baseline, so both see the same information.

mod curve;
mod report;

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::Config;
use crate::engine::bgnbd::{History, Model};
use crate::engine::customer::{Customer, Windows};
use crate::engine::event::{CustomerKey, EventKind, Ts};
use crate::engine::rule::{Check, Limits};
use crate::engine::tier::Tier;
use crate::engine::{Settings, risk};
use crate::fit::{self, FitError};
use crate::replay::{ReplayError, state_at};

pub use curve::{pr_auc, roc_auc};

/// What to evaluate and where the results go.
#[derive(Debug, Clone)]
pub struct EvaluateOptions {
    /// Native input files in order.
    pub inputs: Vec<PathBuf>,
    /// `--input TOPIC=FILE`: files read through their topic's mapping.
    pub mapped: Vec<(String, PathBuf)>,
    /// The cut T.
    pub cut: Ts,
    /// The horizon D after T that labels churn.
    pub horizon: std::time::Duration,
    /// One JSON line per customer here.
    pub scores: Option<PathBuf>,
    /// A self-contained HTML report here.
    pub report: Option<PathBuf>,
    /// Wall time bounding future skew.
    pub now: Ts,
}

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    /// Reading the input failed.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// No purchase history up to the cut to fit BG/NBD on.
    #[error("fitting BG/NBD on the history up to the cut: {source} (input: {outcomes})")]
    Fit {
        /// Why the fit failed.
        source: FitError,
        /// What the input lost, often the reason there is no history.
        outcomes: crate::replay::Outcomes,
    },
    /// An output file could not be written.
    #[error("cannot write {path}: {source}")]
    Output {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// One customer as evaluated.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The customer.
    pub customer_id: String,
    /// Tier at T.
    pub tier: Tier,
    /// Segment at T.
    pub segment: String,
    /// Risk at T.
    pub risk: u8,
    /// Days since the last purchase at T (since first seen if none).
    pub recency_days: f64,
    /// Purchases in the frequency window at T.
    pub frequency: u32,
    /// Spend in the tier window at T.
    pub monetary: f64,
    /// BG/NBD P(alive) at T under the fitted model.
    pub p_alive: f64,
    /// No purchase in (T, T + horizon].
    pub churned: bool,
    #[serde(skip)]
    firing: u8,
    #[serde(skip)]
    fixed_recency: bool,
}

/// A rule's alerts firing at T against the outcomes.
#[derive(Debug, Clone, Serialize)]
pub struct RuleQuality {
    /// Rule (and cause, for `rep_turnover`).
    pub rule: String,
    /// Customers with the rule firing at T.
    pub firing: u64,
    /// Share of them that churned.
    pub precision: Option<f64>,
    /// Share of churners it was firing for.
    pub recall: Option<f64>,
    /// Harmonic mean of the two.
    pub f1: Option<f64>,
}

/// A score's ranking quality.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreQuality {
    /// `risk`, `recency` or `bgnbd` (1 − P(alive)).
    pub score: &'static str,
    /// ROC AUC.
    pub roc_auc: Option<f64>,
    /// Precision-recall AUC (average precision).
    pub pr_auc: Option<f64>,
}

/// The `risk` rule against the fixed recency rule at the same recall.
#[derive(Debug, Clone, Serialize)]
pub struct AtFixedRecall {
    /// Recall of the fixed `purchase_recency` rule.
    pub recall: f64,
    /// Its precision.
    pub fixed_precision: Option<f64>,
    /// The highest risk threshold reaching that recall.
    pub risk_threshold: f64,
    /// Precision of `risk >= threshold`.
    pub risk_precision: f64,
    /// Its recall (at least the fixed rule's).
    pub risk_recall: f64,
}

/// The figures of one tier group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupQuality {
    /// `A`, `B`, `A+B` or `all`.
    pub group: &'static str,
    /// The segment, when the config has several (none: every segment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// Customers counted.
    pub customers: u64,
    /// Of them, churned.
    pub churners: u64,
    /// churners / customers.
    pub churn_rate: Option<f64>,
    /// Per rule.
    pub rules: Vec<RuleQuality>,
    /// Per score.
    pub scores: Vec<ScoreQuality>,
    /// Precision of the `risk` rule at the fixed recency rule's recall.
    pub risk_at_fixed_recall: Option<AtFixedRecall>,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// The cut.
    pub cut: Ts,
    /// The horizon, days.
    pub horizon_days: f64,
    /// The BG/NBD parameters used.
    pub model: Model,
    /// `config` or `fitted`.
    pub model_source: &'static str,
    /// Rejected input lines.
    pub rejected_lines: u64,
    /// Rejected and skipped lines by reason.
    pub outcomes: crate::replay::Outcomes,
    /// The latest event time in the input, if any: labels need it past T + D.
    pub input_ends: Option<Ts>,
    /// Per tier group.
    pub groups: Vec<GroupQuality>,
    #[serde(skip)]
    rows: Vec<Row>,
}

const GROUPS: [(&str, &[Tier]); 4] = [
    ("A", &[Tier::A]),
    ("B", &[Tier::B]),
    ("A+B", &[Tier::A, Tier::B]),
    ("all", &[Tier::A, Tier::B, Tier::C]),
];

/// A compared score: its name and its value for a row.
type Score = (&'static str, fn(&Row) -> f64);

/// A score's ROC and precision-recall curves.
pub(crate) type Curves = (&'static str, Vec<(f64, f64)>, Vec<(f64, f64)>);

/// The scores compared.
const SCORES: [Score; 3] = [
    ("risk", |r| f64::from(r.risk)),
    ("recency", |r| r.recency_days),
    ("bgnbd", |r| 1.0 - r.p_alive),
];

/// Runs the evaluation and writes the optional files.
pub fn evaluate(config: &Config, o: &EvaluateOptions) -> Result<Evaluation, EvaluateError> {
    let mut settings = config.engine_settings();
    let horizon_ms = o.horizon.as_millis() as i64;
    let end = Ts(o.cut.0.saturating_add(horizon_ms));
    let mut bought: HashSet<CustomerKey> = HashSet::new();
    let mut input_ends: Option<Ts> = None;
    let mut label = |e: &crate::engine::event::Event| {
        input_ends = Some(input_ends.map_or(e.ts, |t| t.max(e.ts)));
        if let EventKind::Purchase {
            customer, amount, ..
        } = &e.kind
            && *amount >= 0.0
            && e.ts <= end
        {
            bought.insert(customer.clone());
        }
    };
    let (model, model_source) = match config.risk.model {
        Some(m) => (m, "config"),
        None => {
            let (engine, outcomes) = state_at(
                config,
                &settings,
                &o.inputs,
                &o.mapped,
                Some(o.cut),
                o.now,
                |_| {},
            )?;
            let fit = fit_engine(engine.store(), o.cut)
                .map_err(|source| EvaluateError::Fit { source, outcomes })?;
            (fit.model, "fitted")
        }
    };
    settings.risk.model = model;
    let (engine, outcomes) = state_at(
        config,
        &settings,
        &o.inputs,
        &o.mapped,
        Some(o.cut),
        o.now,
        &mut label,
    )?;
    let rows = rows(&settings, engine.store(), o.cut, &bought);
    let evaluation = Evaluation {
        cut: o.cut,
        horizon_days: o.horizon.as_secs_f64() / 86_400.0,
        model,
        model_source,
        rejected_lines: outcomes.rejected_total(),
        outcomes,
        input_ends,
        groups: groups(&settings, &rows),
        rows,
    };
    if let Some(path) = &o.scores {
        write_file(path, |f| {
            for r in &evaluation.rows {
                serde_json::to_writer(&mut *f, r)?;
                f.write_all(b"\n")?;
            }
            Ok(())
        })?;
    }
    if let Some(path) = &o.report {
        let html = report::html(&evaluation);
        write_file(path, |f| f.write_all(html.as_bytes()))?;
    }
    Ok(evaluation)
}

/// Fits BG/NBD on the purchase histories the store holds at `at`.
pub fn fit_engine(store: &crate::engine::store::Store, at: Ts) -> Result<fit::Fit, FitError> {
    let mut histories: Vec<History> = Vec::new();
    store.for_each_customer(|c| histories.extend(c.history(at)));
    fit::fit(histories)
}

fn write_file(
    path: &PathBuf,
    body: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<(), EvaluateError> {
    let fail = |source| EvaluateError::Output {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(fail)?);
    body(&mut f).and_then(|()| f.flush()).map_err(fail)
}

fn rows(
    settings: &Settings,
    store: &crate::engine::store::Store,
    at: Ts,
    bought: &HashSet<CustomerKey>,
) -> Vec<Row> {
    let segments = &settings.segments.segments;
    let limits: Vec<Limits> = segments
        .iter()
        .map(|s| Limits::new(&s.rules, &settings.risk))
        .collect();
    // The fixed rule whatever the configured mode.
    let fixed: Vec<Limits> = segments
        .iter()
        .map(|s| {
            let mut rules = s.rules.clone();
            rules.adaptive_recency = None;
            Limits::new(&rules, &settings.risk)
        })
        .collect();
    let windows = Windows::new(settings);
    let mut rows = Vec::with_capacity(store.len());
    store.for_each_customer(|c: &Customer| {
        let departed = c.account_rep.get().is_some_and(|r| store.rep_departed(r));
        let signals = c.signals(at, &windows, None, 0);
        let recency_days = signals
            .recency_days
            .unwrap_or(signals.days_since_first_seen);
        let p_alive = c
            .history(at)
            .map_or(1.0, |h| settings.risk.model.p_alive(h));
        let s = usize::from(c.segment()).min(segments.len() - 1);
        let (limits, fixed) = (&limits[s], &fixed[s]);
        rows.push(Row {
            customer_id: c.id.to_string(),
            tier: c.tier(),
            segment: segments[s].name.to_string(),
            risk: risk::score(c, at, &limits.risk_context(&windows, departed)),
            recency_days,
            frequency: signals.frequency_90d,
            monetary: signals.monetary,
            p_alive,
            churned: !bought.contains(&c.id),
            firing: c.firing(),
            fixed_recency: fixed.due(Check::PurchaseRecency, c).is_some_and(|d| d < at),
        });
    });
    rows.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
    rows
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn quality(
    name: String,
    alerted: impl Fn(&Row) -> bool,
    rows: &[&Row],
    churners: u64,
) -> RuleQuality {
    let firing = rows.iter().filter(|r| alerted(r)).count() as u64;
    let hits = rows.iter().filter(|r| alerted(r) && r.churned).count() as u64;
    let (precision, recall) = (ratio(hits, firing), ratio(hits, churners));
    let f1 = precision
        .zip(recall)
        .filter(|(p, r)| p + r > 0.0)
        .map(|(p, r)| 2.0 * p * r / (p + r));
    RuleQuality {
        rule: name,
        firing,
        precision,
        recall,
        f1,
    }
}

fn check_name(check: Check) -> String {
    match check.cause() {
        Some(cause) => format!("{}/{}", check.rule().as_str(), cause.as_str()),
        None => check.rule().as_str().to_string(),
    }
}

/// The tier groups over every segment, then, with several segments, per
/// segment.
fn groups(settings: &Settings, rows: &[Row]) -> Vec<GroupQuality> {
    let segments = &settings.segments.segments;
    let mut out: Vec<GroupQuality> = GROUPS
        .iter()
        .map(|(name, tiers)| group(name, tiers, None, rows))
        .collect();
    if segments.len() > 1 {
        for s in segments {
            out.extend(
                GROUPS
                    .iter()
                    .map(|(name, tiers)| group(name, tiers, Some(&s.name), rows)),
            );
        }
    }
    out
}

fn group(name: &'static str, tiers: &[Tier], segment: Option<&str>, all: &[Row]) -> GroupQuality {
    let rows: Vec<&Row> = all
        .iter()
        .filter(|r| tiers.contains(&r.tier) && segment.is_none_or(|s| r.segment == s))
        .collect();
    let churners = rows.iter().filter(|r| r.churned).count() as u64;
    let customers = rows.len() as u64;
    let mut rules: Vec<RuleQuality> = Check::ALL
        .iter()
        .map(|&k| quality(check_name(k), |r| r.firing & k.bit() != 0, &rows, churners))
        .collect();
    let fixed = quality(
        "purchase_recency (fixed limits)".into(),
        |r| r.fixed_recency,
        &rows,
        churners,
    );
    let scored = |f: fn(&Row) -> f64| -> Vec<curve::Scored> {
        rows.iter().map(|r| (f(r), r.churned)).collect()
    };
    let scores = SCORES
        .iter()
        .map(|&(score, f)| {
            let s = scored(f);
            ScoreQuality {
                score,
                roc_auc: roc_auc(&s),
                pr_auc: pr_auc(&s),
            }
        })
        .collect();
    let risk_at_fixed_recall = fixed.recall.filter(|r| *r > 0.0).and_then(|recall| {
        let (risk_threshold, risk_precision, risk_recall) =
            curve::at_recall(&scored(SCORES[0].1), recall)?;
        Some(AtFixedRecall {
            recall,
            fixed_precision: fixed.precision,
            risk_threshold,
            risk_precision,
            risk_recall,
        })
    });
    rules.push(fixed);
    GroupQuality {
        group: name,
        segment: segment.map(str::to_string),
        customers,
        churners,
        churn_rate: ratio(churners, customers),
        rules,
        scores,
        risk_at_fixed_recall,
    }
}

impl Evaluation {
    /// The per-customer rows, by customer id.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The ROC and precision-recall curves of each score in a group.
    pub(crate) fn curves(&self, tiers: &[Tier]) -> Vec<Curves> {
        let rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| tiers.contains(&r.tier))
            .collect();
        SCORES
            .iter()
            .map(|&(name, f)| {
                let s: Vec<curve::Scored> = rows.iter().map(|r| (f(r), r.churned)).collect();
                (name, curve::roc_curve(&s), curve::pr_curve(&s))
            })
            .collect()
    }

    /// The tables as text, for the terminal.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", v * 100.0));
        let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        let mut s = String::new();
        let m = &self.model;
        let _ = writeln!(
            s,
            "cut {}, horizon {} days; BG/NBD ({}) r={:.4} alpha={:.4} a={:.4} b={:.4}",
            self.cut, self.horizon_days, self.model_source, m.r, m.alpha, m.a, m.b
        );
        let _ = writeln!(s, "input: {}", self.outcomes);
        for g in &self.groups {
            let _ = writeln!(
                s,
                "\n[{}{}] customers {}, churners {}, churn rate {}",
                g.segment
                    .as_ref()
                    .map_or(String::new(), |s| format!("{s} ")),
                g.group,
                g.customers,
                g.churners,
                pct(g.churn_rate)
            );
            let _ = writeln!(
                s,
                "  {:<34} {:>8} {:>10} {:>8} {:>8}",
                "rule", "firing", "precision", "recall", "F1"
            );
            for r in &g.rules {
                let _ = writeln!(
                    s,
                    "  {:<34} {:>8} {:>10} {:>8} {:>8}",
                    r.rule,
                    r.firing,
                    pct(r.precision),
                    pct(r.recall),
                    num(r.f1)
                );
            }
            let _ = writeln!(s, "  {:<34} {:>8} {:>10}", "score", "ROC AUC", "PR AUC");
            for q in &g.scores {
                let _ = writeln!(
                    s,
                    "  {:<34} {:>8} {:>10}",
                    q.score,
                    num(q.roc_auc),
                    num(q.pr_auc)
                );
            }
            if let Some(a) = &g.risk_at_fixed_recall {
                let _ = writeln!(
                    s,
                    "  at the fixed recency rule's recall {}: fixed precision {}, risk >= {} precision {} (recall {})",
                    pct(Some(a.recall)),
                    pct(a.fixed_precision),
                    a.risk_threshold,
                    pct(Some(a.risk_precision)),
                    pct(Some(a.risk_recall))
                );
            }
        }
        s
    }
}
