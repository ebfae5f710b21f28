//! The churn-risk score: 0–100 (100 = most likely lost), a sum of points
//! per factor, each factor's points its weight times a share in [0, 1],
//! so every point has a reason a retention manager can read.
//!
//! Factors, in default weight order:
//! - `lapse` (90): the chance, under the BG/NBD model (`[risk.model]`),
//!   that the customer buys nothing in the next `risk.horizon`. It weighs
//!   the silence against the customer's own rhythm: 40 quiet days are
//!   nothing for a quarterly buyer and alarming for a weekly one.
//! - `contact` (4): days since the last rep contact against the tier's
//!   `contact_gap` limit: nothing up to half the limit, full at 1.5×.
//! - `rep` (3): the account rep departed (full), or rep handoffs in the
//!   handoff window against `rep_turnover.handoff_threshold`.
//! - `complaints` (3): open complaints, full at two.
//!
//! A factor with no data behind it (never called, no rep, no tickets)
//! scores 0 for everyone it lacks, so a feed of purchases only is ranked
//! by `lapse` alone. The defaults are the ones `churnwatch evaluate`
//! supports (BENCHMARKS.md, "Quality"): on purchase histories a frequency
//! or spend trend factor added nothing BG/NBD does not already weigh, so
//! there is none; on the planted-churn population heavier contact, rep or
//! complaint weights lowered the ranking (they mostly break ties of
//! `lapse`), while the rules for those signals alert on them directly. Computed from the customer's fixed-size state in O(1),
//! at any time: a silent customer's risk rises without events.

use super::bgnbd::{History, Model};
use super::customer::{Customer, Windows};
use super::event::Ts;
use super::rule::{Check, Limits};

/// Points per factor; they sum to at most 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    /// `lapse`.
    pub lapse: u8,
    /// `contact`.
    pub contact: u8,
    /// `rep`.
    pub rep: u8,
    /// `complaints`.
    pub complaints: u8,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            lapse: 90,
            contact: 4,
            rep: 3,
            complaints: 3,
        }
    }
}

/// The score's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RiskSettings {
    /// `lapse` looks this many days ahead.
    pub horizon_days: f64,
    /// Points per factor.
    pub weights: Weights,
    /// BG/NBD parameters.
    pub model: Model,
}

impl Default for RiskSettings {
    fn default() -> Self {
        Self {
            horizon_days: 90.0,
            weights: Weights::default(),
            model: Model::default(),
        }
    }
}

/// A factor of the score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    /// Purchase silence against the customer's rhythm.
    Lapse,
    /// Rep contact gap against the tier's service level.
    Contact,
    /// Departed account rep or frequent handoffs.
    Rep,
    /// Open complaints.
    Complaints,
}

impl Factor {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Factor::Lapse => "lapse",
            Factor::Contact => "contact",
            Factor::Rep => "rep",
            Factor::Complaints => "complaints",
        }
    }
}

/// What the rule and account rep state say about a customer, beyond its
/// record: the few facts the engine looks up elsewhere.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Rule limits (the tier's contact service level, handoff threshold)
    /// and the score's settings.
    pub limits: &'a Limits,
    /// Window geometry (handoffs).
    pub windows: &'a Windows,
    /// Whether the account rep departed.
    pub rep_departed: bool,
}

/// The numbers behind one factor, for its sentence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Detail {
    /// `lapse`.
    Lapse {
        /// Days since the last purchase, or since first seen if none.
        silent_days: f64,
        /// Whether the customer ever bought.
        bought: bool,
        /// Purchase days so far.
        purchase_days: u32,
        /// The customer's mean gap between purchase days, if it has two.
        usual_gap: Option<f64>,
        /// P(no purchase in the horizon).
        p_none: f64,
        /// The horizon, days.
        horizon_days: f64,
    },
    /// `contact`.
    Contact {
        /// Days since the last rep contact.
        days: f64,
        /// The tier's contact limit, days.
        limit_days: f64,
    },
    /// `rep`.
    Rep {
        /// The account rep departed.
        departed: bool,
        /// Handoffs in the window.
        handoffs: u32,
        /// The handoff threshold.
        threshold: u32,
    },
    /// `complaints`.
    Complaints {
        /// Open complaints.
        open: u32,
    },
}

/// One factor's contribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reason {
    /// Which factor.
    pub factor: Factor,
    /// Its points (they sum to the score).
    pub points: u8,
    /// Its share in [0, 1] of the factor's weight.
    pub share: f64,
    /// The numbers.
    pub detail: Detail,
}

impl Reason {
    /// One sentence with the numbers, e.g. "no purchase for 41 days, 3.2x
    /// this customer's usual gap of 13 days; 73% chance of none in the next
    /// 90 days".
    pub fn sentence(&self) -> String {
        let d = |v: f64| super::alert::days(v);
        match self.detail {
            Detail::Lapse {
                silent_days,
                bought,
                purchase_days,
                usual_gap,
                p_none,
                horizon_days,
            } => {
                let chance = format!(
                    "{:.0}% chance of no purchase in the next {} days",
                    p_none * 100.0,
                    d(horizon_days)
                );
                match usual_gap {
                    _ if !bought => {
                        format!(
                            "no purchase in {} days since first seen; {chance}",
                            d(silent_days)
                        )
                    }
                    Some(gap) if gap > 0.0 => format!(
                        "no purchase for {} days, {:.1}x this customer's usual gap of {} days; {chance}",
                        d(silent_days),
                        silent_days / gap,
                        d(gap)
                    ),
                    _ => format!(
                        "no purchase for {} days after {} purchase day{}; {chance}",
                        d(silent_days),
                        purchase_days,
                        if purchase_days == 1 { "" } else { "s" }
                    ),
                }
            }
            Detail::Contact { days, limit_days } => format!(
                "no rep contact for {} days (tier service level {} days)",
                d(days),
                d(limit_days)
            ),
            Detail::Rep { departed: true, .. } => "the account rep departed".to_string(),
            Detail::Rep {
                handoffs,
                threshold,
                ..
            } => format!("{handoffs} rep handoffs in the handoff window (alert at {threshold})"),
            Detail::Complaints { open } => {
                format!("{open} open complaint{}", if open == 1 { "" } else { "s" })
            }
        }
    }
}

/// Published as `{"factor", "points", "reason"}`.
impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = ser.serialize_map(Some(3))?;
        m.serialize_entry("factor", self.factor.as_str())?;
        m.serialize_entry("points", &self.points)?;
        m.serialize_entry("reason", &self.sentence())?;
        m.end()
    }
}

/// The score and the factors that made it, largest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Risk {
    /// 0–100.
    pub score: u8,
    /// Factors with points, largest first; their points sum to `score`.
    pub reasons: Vec<Reason>,
}

/// The four factors' details and shares; `None` for a factor with no data.
fn factors(c: &Customer, at: Ts, cx: &Context<'_>) -> [Option<(f64, Detail)>; 4] {
    let s = &cx.limits.risk;
    let history = c.history(at).unwrap_or(History {
        x: 0.0,
        t_x: 0.0,
        t: at.days_since(c.first_seen.get()),
    });
    let p_none = s.model.p_none_within(history, s.horizon_days);
    let lapse = Detail::Lapse {
        silent_days: c
            .last_purchase
            .get()
            .map_or(history.t, |l| at.days_since(l)),
        bought: c.last_purchase.get().is_some(),
        purchase_days: u32::from(c.purchase_days),
        usual_gap: (history.x >= 1.0).then(|| history.t_x / history.x),
        p_none,
        horizon_days: s.horizon_days,
    };
    let contact = c
        .last_contact
        .get()
        .zip(cx.limits.limit_days(Check::ContactGap, c.tier()));
    let contact = contact.map(|(last, limit_days)| {
        let days = at.days_since(last);
        let share = (days / limit_days - 0.5).clamp(0.0, 1.0);
        (share, Detail::Contact { days, limit_days })
    });
    let handoffs = c.handoffs.sum_at(cx.windows.handoffs.index(at.0)) as u32;
    let threshold = cx.limits.handoff_threshold.max(1);
    let rep = (cx.rep_departed || handoffs > 0).then(|| {
        let share = if cx.rep_departed {
            1.0
        } else {
            (f64::from(handoffs) / f64::from(threshold)).min(1.0)
        };
        let departed = cx.rep_departed;
        (
            share,
            Detail::Rep {
                departed,
                handoffs,
                threshold,
            },
        )
    });
    let open = u32::from(c.open_complaints);
    let complaints = (open > 0).then(|| {
        let share = (f64::from(open) / 2.0).min(1.0);
        (share, Detail::Complaints { open })
    });
    [Some((p_none, lapse)), contact, rep, complaints]
}

fn weight(w: &Weights, i: usize) -> u8 {
    [w.lapse, w.contact, w.rep, w.complaints][i]
}

const FACTORS: [Factor; 4] = [
    Factor::Lapse,
    Factor::Contact,
    Factor::Rep,
    Factor::Complaints,
];

fn points(share: f64, weight: u8) -> u8 {
    (share.clamp(0.0, 1.0) * f64::from(weight)).round() as u8
}

/// The score alone (no reasons, no allocation): what rules and metrics need.
pub fn score(c: &Customer, at: Ts, cx: &Context<'_>) -> u8 {
    let w = &cx.limits.risk.weights;
    factors(c, at, cx)
        .iter()
        .enumerate()
        .filter_map(|(i, f)| f.map(|(share, _)| points(share, weight(w, i))))
        .sum::<u8>()
        .min(100)
}

/// The score with its reasons.
pub fn explain(c: &Customer, at: Ts, cx: &Context<'_>) -> Risk {
    let w = &cx.limits.risk.weights;
    let mut reasons: Vec<Reason> = factors(c, at, cx)
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            let (share, detail) = (*f)?;
            let points = points(share, weight(w, i));
            (points > 0).then_some(Reason {
                factor: FACTORS[i],
                points,
                share,
                detail,
            })
        })
        .collect();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.points));
    Risk {
        score: reasons.iter().map(|r| r.points).sum::<u8>().min(100),
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::event::DAY_MS;
    use crate::engine::tests::shipped_settings;

    fn buyer(days: &[i64]) -> Customer {
        let s = shipped_settings();
        let w = Windows::new(&s);
        let mut c = Customer::new("c".into(), Ts(days[0] * DAY_MS), 0);
        for d in days {
            c.purchase(Ts(d * DAY_MS), 100.0, &w);
        }
        c
    }

    fn with<R>(departed: bool, f: impl FnOnce(&Context<'_>) -> R) -> R {
        let s = shipped_settings();
        let limits = Limits::new(&s.rules, &s.risk);
        let windows = Windows::new(&s);
        f(&Context {
            limits: &limits,
            windows: &windows,
            rep_departed: departed,
        })
    }

    #[test]
    fn risk_rises_with_silence_and_falls_with_a_purchase() {
        let c = buyer(&[0, 10, 20, 30, 40]);
        let at = |d: i64| Ts(d * DAY_MS);
        let scores: Vec<u8> = [41, 60, 90, 150, 300]
            .iter()
            .map(|&d| with(false, |cx| score(&c, at(d), cx)))
            .collect();
        assert!(scores.windows(2).all(|w| w[0] <= w[1]), "{scores:?}");
        assert!(scores[0] < scores[4], "{scores:?}");
        let mut again = c.clone();
        again.purchase(at(149), 50.0, &Windows::new(&shipped_settings()));
        assert!(with(false, |cx| score(&again, at(150), cx)) < scores[3]);
    }

    #[test]
    fn the_same_silence_weighs_more_for_a_faster_buyer() {
        // 35 quiet days: five gaps of a weekly buyer, about one of a monthly.
        let weekly: Vec<i64> = (0..13).map(|i| i * 7).collect();
        let weekly = buyer(&weekly);
        let monthly = buyer(&[0, 30, 60, 90]);
        let (w, m) = with(false, |cx| {
            (
                score(&weekly, Ts(119 * DAY_MS), cx),
                score(&monthly, Ts(125 * DAY_MS), cx),
            )
        });
        assert!(w > m, "weekly {w}, monthly {m}");
    }

    #[test]
    fn every_factor_raises_the_score_and_reasons_sum_to_it() {
        let s = shipped_settings();
        let w = Windows::new(&s);
        let at = Ts(60 * DAY_MS);
        let base = buyer(&[0, 10, 20, 30]);
        let plain = with(false, |cx| explain(&base, at, cx));
        let mut worse = base.clone();
        worse.call(Ts(5 * DAY_MS), Some(super::super::rep::RepIdx(1)), &w);
        worse.open_complaints = 1;
        let more = with(false, |cx| explain(&worse, at, cx));
        let departed = with(true, |cx| explain(&worse, at, cx));
        assert!(plain.score < more.score && more.score < departed.score);
        for r in [&plain, &more, &departed] {
            assert_eq!(r.reasons.iter().map(|x| x.points).sum::<u8>(), r.score);
            assert!(r.reasons.windows(2).all(|p| p[0].points >= p[1].points));
            assert_eq!(with(true, |cx| score(&worse, at, cx)), departed.score);
        }
        assert_eq!(departed.reasons[0].factor, Factor::Lapse);
        let text = departed.reasons[0].sentence();
        assert!(text.contains("usual gap of 10 days"), "{text}");
    }

    #[test]
    fn a_factor_without_data_gives_no_points() {
        let c = buyer(&[0, 30]);
        let r = with(false, |cx| explain(&c, Ts(40 * DAY_MS), cx));
        assert!(r.reasons.iter().all(|x| x.factor == Factor::Lapse), "{r:?}");
    }
}
