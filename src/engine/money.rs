//! Currencies: every amount the engine ranks is in one base currency, so
//! purchases in others are converted at the configured rate, and a
//! purchase that cannot be converted is refused, never summed as if it
//! were the same money.

use std::fmt;

/// An ISO 4217 code: three ASCII letters, kept upper-case, in 3 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Three ASCII letters, any case; anything else is no currency code.
    pub fn parse(s: &str) -> Option<Currency> {
        let b: [u8; 3] = s.as_bytes().try_into().ok()?;
        b.iter()
            .all(u8::is_ascii_alphabetic)
            .then(|| Currency(b.map(|c| c.to_ascii_uppercase())))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        // Only ASCII letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[money]`, validated: the base currency and the rate of every other one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Money {
    /// What monetary, thresholds and alerts are in. None (no `[money]`
    /// section): the first currency a purchase names is taken as the base
    /// for the life of the engine, and a purchase naming another is refused.
    pub base: Option<Currency>,
    /// Base units per unit of each currency (the base's own is 1).
    pub rates: Vec<(Currency, f64)>,
}

/// Why a purchase's currency cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unconvertible {
    /// The purchase's currency.
    pub currency: Currency,
    /// The base it was to be converted into, and whether it came from config.
    pub base: Currency,
    /// Whether `base` is `money.base_currency` (else the first one seen).
    pub configured: bool,
}

/// Converts purchases into the base currency, pinning the base on first
/// sight when none is configured.
#[derive(Debug, Clone, Default)]
pub struct Converter {
    money: Money,
    pinned: Option<Currency>,
}

impl Converter {
    /// A converter for `money`.
    pub fn new(money: Money) -> Self {
        Self {
            money,
            pinned: None,
        }
    }

    /// `amount` in `currency` (None: the base) as base units.
    pub fn to_base(
        &mut self,
        amount: f64,
        currency: Option<Currency>,
    ) -> Result<f64, Unconvertible> {
        let Some(currency) = currency else {
            return Ok(amount);
        };
        match self.money.base {
            Some(base) if base == currency => Ok(amount),
            Some(base) => self
                .money
                .rates
                .iter()
                .find(|(c, _)| *c == currency)
                .map(|(_, rate)| amount * rate)
                .ok_or(Unconvertible {
                    currency,
                    base,
                    configured: true,
                }),
            None => match self.pinned {
                None => {
                    self.pinned = Some(currency);
                    Ok(amount)
                }
                Some(base) if base == currency => Ok(amount),
                Some(base) => Err(Unconvertible {
                    currency,
                    base,
                    configured: false,
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Currency {
        Currency::parse(s).unwrap()
    }

    #[test]
    fn codes_are_three_letters_any_case() {
        assert_eq!(c("usd"), c("USD"));
        assert_eq!(c("eur").to_string(), "EUR");
        for bad in ["", "EU", "EURO", "E1R", "€UR", "not-a-currency"] {
            assert_eq!(Currency::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn configured_rates_convert_and_a_missing_rate_refuses() {
        let mut m = Converter::new(Money {
            base: Some(c("EUR")),
            rates: vec![(c("USD"), 0.92)],
        });
        assert_eq!(m.to_base(1000.0, None), Ok(1000.0));
        assert_eq!(m.to_base(1000.0, Some(c("EUR"))), Ok(1000.0));
        assert!((m.to_base(1000.0, Some(c("USD"))).unwrap() - 920.0).abs() < 1e-9);
        assert_eq!(
            m.to_base(1000.0, Some(c("JPY"))),
            Err(Unconvertible {
                currency: c("JPY"),
                base: c("EUR"),
                configured: true
            })
        );
    }

    #[test]
    fn without_money_a_second_currency_is_refused_not_summed() {
        let mut m = Converter::new(Money::default());
        assert_eq!(m.to_base(5.0, None), Ok(5.0));
        assert_eq!(m.to_base(1000.0, Some(c("USD"))), Ok(1000.0));
        assert_eq!(m.to_base(7.0, Some(c("USD"))), Ok(7.0));
        assert!(m.to_base(1000.0, Some(c("EUR"))).is_err());
    }
}
