//! `churnwatch fit`: the BG/NBD parameters by maximum likelihood on the
//! purchase histories the engine holds (see [`crate::engine::bgnbd`]).
//!
//! Nelder–Mead (argmin) over the logarithms of r, α, a and b, so every
//! step stays in the positive domain. Histories are grouped by repeat
//! purchases and whole days of t_x and T, so one likelihood evaluation
//! costs the distinct histories, not the customers.

use std::collections::HashMap;

use argmin::core::{CostFunction, Error as ArgminError, Executor, State};
use argmin::solver::neldermead::NelderMead;

use crate::engine::bgnbd::{History, Model};

/// A fitted model and how well it fits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// The parameters (days).
    pub model: Model,
    /// Total log-likelihood of the histories under it.
    pub log_likelihood: f64,
    /// Customers the fit saw.
    pub customers: usize,
}

/// Why no fit came out.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// No customer with a purchase.
    #[error("no purchase history to fit on")]
    Empty,
    /// The optimiser failed.
    #[error("the optimiser failed: {0}")]
    Optimiser(String),
}

fn ln_beta(a: f64, b: f64) -> f64 {
    libm::lgamma(a) + libm::lgamma(b) - libm::lgamma(a + b)
}

/// One history's log-likelihood under `m` (Fader, Hardie & Lee 2005, eq. 6).
pub fn log_likelihood(m: &Model, h: History) -> f64 {
    let Model { r, alpha, a, b } = *m;
    let x = h.x;
    let head =
        libm::lgamma(r + x) - libm::lgamma(r) + r * alpha.ln() + ln_beta(a, b + x) - ln_beta(a, b);
    let alive = -(r + x) * (alpha + h.t).ln();
    if x > 0.0 {
        let dropped = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + h.t_x).ln();
        let hi = alive.max(dropped);
        head + hi + ((alive - hi).exp() + (dropped - hi).exp()).ln()
    } else {
        head + alive
    }
}

struct Problem {
    /// (history, customers with it).
    groups: Vec<(History, f64)>,
}

impl Problem {
    fn total(&self, m: &Model) -> f64 {
        self.groups
            .iter()
            .map(|(h, n)| n * log_likelihood(m, *h))
            .sum()
    }
}

fn model_of(p: &[f64]) -> Model {
    let e = |i: usize| p.get(i).copied().unwrap_or(0.0).exp();
    Model {
        r: e(0),
        alpha: e(1),
        a: e(2),
        b: e(3),
    }
}

impl CostFunction for Problem {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, p: &Self::Param) -> Result<f64, ArgminError> {
        let ll = self.total(&model_of(p));
        // A non-finite likelihood (parameters run off) is the worst cost.
        Ok(if ll.is_finite() { -ll } else { f64::MAX })
    }
}

/// Fits the model to `histories`.
pub fn fit(histories: impl IntoIterator<Item = History>) -> Result<Fit, FitError> {
    let mut counts: HashMap<(u64, i64, i64), f64> = HashMap::new();
    let mut customers = 0;
    for h in histories {
        customers += 1;
        let key = (h.x as u64, h.t_x.round() as i64, h.t.round() as i64);
        *counts.entry(key).or_default() += 1.0;
    }
    if customers == 0 {
        return Err(FitError::Empty);
    }
    let mut groups: Vec<(History, f64)> = counts
        .into_iter()
        .map(|((x, t_x, t), n)| {
            let h = History {
                x: x as f64,
                t_x: t_x as f64,
                t: (t as f64).max(t_x as f64),
            };
            (h, n)
        })
        .collect();
    // Summation order fixed, so the same data gives the same fit.
    groups.sort_by(|a, b| {
        (a.0.x, a.0.t_x, a.0.t)
            .partial_cmp(&(b.0.x, b.0.t_x, b.0.t))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let problem = Problem { groups };
    let start = [0.5f64.ln(), 10f64.ln(), 0.5f64.ln(), 2f64.ln()];
    let mut simplex = vec![start.to_vec()];
    for i in 0..4 {
        let mut v = start.to_vec();
        v[i] += 0.5;
        simplex.push(v);
    }
    let optimiser = |e: ArgminError| FitError::Optimiser(e.to_string());
    let solver = NelderMead::new(simplex)
        .with_sd_tolerance(1e-10)
        .map_err(optimiser)?;
    let result = Executor::new(problem, solver)
        .configure(|s| s.max_iters(5000))
        .run()
        .map_err(optimiser)?;
    let state = result.state();
    let best = state
        .get_best_param()
        .ok_or_else(|| FitError::Optimiser("no parameters".into()))?;
    Ok(Fit {
        model: model_of(best),
        log_likelihood: -state.get_best_cost(),
        customers,
    })
}

impl Fit {
    /// The `[risk.model]` fragment for a config file.
    pub fn toml(&self, what: &str) -> String {
        let m = &self.model;
        format!(
            "# BG/NBD fitted by `churnwatch fit` on {} customers {what}; log-likelihood {:.2}\n\
             [risk.model]\nr = {:.4}\nalpha = {:.4}\na = {:.4}\nb = {:.4}\n",
            self.customers, self.log_likelihood, m.r, m.alpha, m.a, m.b
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Histories drawn from a known BG/NBD model.
    fn simulate(m: &Model, n: usize, t_end: f64, seed: u64) -> Vec<History> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let gamma = |rng: &mut rand_chacha::ChaCha8Rng, shape: f64, scale: f64| {
            // Marsaglia–Tsang, with the shape < 1 boost.
            let (k, boost) = if shape < 1.0 {
                (shape + 1.0, rng.random::<f64>().powf(1.0 / shape))
            } else {
                (shape, 1.0)
            };
            let d = k - 1.0 / 3.0;
            let c = 1.0 / (9.0 * d).sqrt();
            loop {
                let z: f64 = {
                    let (u1, u2): (f64, f64) = (rng.random(), rng.random());
                    (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
                };
                let v = (1.0 + c * z).powi(3);
                if v > 0.0 && rng.random::<f64>().ln() < 0.5 * z * z + d - d * v + d * v.ln() {
                    return d * v * scale * boost;
                }
            }
        };
        (0..n)
            .map(|_| {
                let lambda = gamma(&mut rng, m.r, 1.0 / m.alpha);
                let ga = gamma(&mut rng, m.a, 1.0);
                let p = ga / (ga + gamma(&mut rng, m.b, 1.0));
                let (mut t, mut x, mut t_x) = (0.0, 0.0, 0.0);
                loop {
                    t += -(1.0 - rng.random::<f64>()).ln() / lambda;
                    if t > t_end {
                        break;
                    }
                    x += 1.0;
                    t_x = t;
                    if rng.random::<f64>() < p {
                        break;
                    }
                }
                History { x, t_x, t: t_end }
            })
            .collect()
    }

    #[test]
    fn fit_recovers_the_parameters_it_was_simulated_with() {
        let truth = Model {
            r: 0.5,
            alpha: 20.0,
            a: 0.8,
            b: 2.5,
        };
        let f = fit(simulate(&truth, 20_000, 365.0, 7)).unwrap();
        let close = |got: f64, want: f64| (got / want - 1.0).abs() < 0.25;
        let m = f.model;
        assert!(close(m.r, truth.r) && close(m.alpha, truth.alpha), "{m:?}");
        assert!(close(m.a, truth.a) && close(m.b, truth.b), "{m:?}");
        assert!(f.log_likelihood < 0.0 && f.customers == 20_000);
        assert!(fit(std::iter::empty()).is_err());
    }

    #[test]
    fn the_likelihood_is_a_probability_density_of_the_published_kind() {
        // Per-customer log-likelihoods of the CDNOW sample's fit (weeks).
        let m = Model {
            r: 0.243,
            alpha: 4.414,
            a: 0.793,
            b: 2.426,
        };
        let one_timer = log_likelihood(
            &m,
            History {
                x: 0.0,
                t_x: 0.0,
                t: 38.86,
            },
        );
        // x = 0: ln((α / (α + T))^r), the chance of no repeat in T.
        let want = m.r * (m.alpha / (m.alpha + 38.86)).ln();
        assert!((one_timer - want).abs() < 1e-12, "{one_timer} vs {want}");
        let regular = log_likelihood(
            &m,
            History {
                x: 2.0,
                t_x: 30.43,
                t: 38.86,
            },
        );
        assert!(regular.is_finite() && regular < one_timer);
    }
}
