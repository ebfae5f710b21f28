//! The BG/NBD model of non-contractual buying (Fader, Hardie & Lee 2005):
//! while alive, a customer buys as a Poisson process with a gamma(r, α)
//! distributed rate; after each purchase they drop out with a beta(a, b)
//! distributed probability. Times are in days.
//!
//! Here: the per-customer quantities the risk score needs, in closed form
//! and O(1). Fitting the four parameters is `churnwatch fit` (src/fit.rs).

/// The four BG/NBD parameters (times in days).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Shape of the gamma purchase-rate heterogeneity.
    pub r: f64,
    /// Scale of the gamma purchase-rate heterogeneity, in days.
    pub alpha: f64,
    /// Beta dropout parameter a.
    pub a: f64,
    /// Beta dropout parameter b.
    pub b: f64,
}

impl Default for Model {
    /// Fitted by `churnwatch fit` on the CDNOW master log (23,570
    /// customers, 1997-01 to 1998-06), the data set the model was published
    /// on; see BENCHMARKS.md "Quality".
    fn default() -> Self {
        Self {
            r: 0.2689,
            alpha: 42.7377,
            a: 0.4821,
            b: 2.1277,
        }
    }
}

/// A customer's purchase history as the model sees it: `x` repeat
/// purchases (purchase days after the first), the last at `t_x` days after
/// the first purchase, observed for `t` days since it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct History {
    /// Repeat purchases.
    pub x: f64,
    /// Time of the last purchase since the first, days.
    pub t_x: f64,
    /// Time observed since the first purchase, days.
    pub t: f64,
}

impl Model {
    /// Whether all four parameters are positive and finite.
    pub fn is_valid(&self) -> bool {
        [self.r, self.alpha, self.a, self.b]
            .iter()
            .all(|p| p.is_finite() && *p > 0.0)
    }

    /// P(alive | x, t_x, T). A customer with no repeat purchase cannot have
    /// dropped out yet under BG/NBD (it drops out only after a purchase), so
    /// is alive with probability 1.
    pub fn p_alive(&self, h: History) -> f64 {
        if h.x <= 0.0 {
            return 1.0;
        }
        let ratio = ((self.alpha + h.t) / (self.alpha + h.t_x)).powf(self.r + h.x);
        1.0 / (1.0 + self.a / (self.b + h.x - 1.0) * ratio)
    }

    /// P(no purchase in the next `horizon` days | x, t_x, T): dead, or alive
    /// with no purchase, whose chance under the posterior rate
    /// gamma(r + x, α + T) is ((α + T) / (α + T + horizon))^(r + x).
    pub fn p_none_within(&self, h: History, horizon: f64) -> f64 {
        let quiet = ((self.alpha + h.t) / (self.alpha + h.t + horizon)).powf(self.r + h.x);
        1.0 - self.p_alive(h) * (1.0 - quiet)
    }

    /// The mean inter-purchase gap the model expects of this customer while
    /// alive, in days: 1 / E[λ | x, T] = (α + T) / (r + x).
    pub fn expected_gap(&self, h: History) -> f64 {
        (self.alpha + h.t) / (self.r + h.x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CDNOW sample's published fit, in weeks (Fader, Hardie & Lee 2005).
    const PUBLISHED: Model = Model {
        r: 0.243,
        alpha: 4.414,
        a: 0.793,
        b: 2.426,
    };

    #[test]
    fn p_alive_matches_the_published_values() {
        let p = |x, t_x| PUBLISHED.p_alive(History { x, t_x, t: 38.86 });
        assert!((p(2.0, 30.43) - 0.7266).abs() < 5e-5, "{}", p(2.0, 30.43));
        assert!((p(5.0, 10.0) - 0.0248).abs() < 5e-5, "{}", p(5.0, 10.0));
    }

    #[test]
    fn a_longer_silence_or_horizon_means_a_likelier_lapse() {
        let m = Model::default();
        let at = |t_x, t| History { x: 4.0, t_x, t };
        let mut last = 0.0;
        for t in [40.0, 60.0, 90.0, 200.0] {
            let p = m.p_none_within(at(30.0, t), 90.0);
            assert!(p > last, "silence {t}: {p} after {last}");
            last = p;
        }
        assert!(m.p_none_within(at(30.0, 60.0), 30.0) > m.p_none_within(at(30.0, 60.0), 90.0));
        assert_eq!(
            m.p_alive(History {
                x: 0.0,
                t_x: 0.0,
                t: 99.0
            }),
            1.0
        );
    }
}
