//! Ranking quality of a score against yes/no outcomes: ROC AUC, the area
//! under the precision-recall curve (average precision), and the curves.
//! Ties count half, as in the pair definition of AUC.

use std::cmp::Ordering;

/// A score and whether the outcome happened, per customer.
pub type Scored = (f64, bool);

/// Scores sorted high to low, grouped by equal score: (positives, negatives) per group.
fn groups(rows: &[Scored]) -> Vec<(f64, u64, u64)> {
    let mut sorted: Vec<Scored> = rows.to_vec();
    sorted.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(Ordering::Equal));
    let mut out: Vec<(f64, u64, u64)> = Vec::new();
    for (s, y) in sorted {
        match out.last_mut() {
            Some(g) if g.0 == s => {
                g.1 += u64::from(y);
                g.2 += u64::from(!y);
            }
            _ => out.push((s, u64::from(y), u64::from(!y))),
        }
    }
    out
}

/// P(score of a random positive > score of a random negative), ties half;
/// `None` without both kinds.
pub fn roc_auc(rows: &[Scored]) -> Option<f64> {
    let (mut neg_above, mut wins) = (0u64, 0.0f64);
    let (pos, neg) = totals(rows);
    if pos == 0 || neg == 0 {
        return None;
    }
    for (_, p, n) in groups(rows) {
        // Positives in this group beat every negative below it, tie with its own.
        let below = neg - neg_above - n;
        wins += p as f64 * (below as f64 + 0.5 * n as f64);
        neg_above += n;
    }
    Some(wins / (pos as f64 * neg as f64))
}

fn totals(rows: &[Scored]) -> (u64, u64) {
    let pos = rows.iter().filter(|r| r.1).count() as u64;
    (pos, rows.len() as u64 - pos)
}

/// Average precision: the precision-recall curve's area, summed over
/// thresholds (each distinct score) as recall gained × precision there.
pub fn pr_auc(rows: &[Scored]) -> Option<f64> {
    let (pos, neg) = totals(rows);
    if pos == 0 || neg == 0 {
        return None;
    }
    Some(
        pr_curve(rows)
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) * w[1].1)
            .sum(),
    )
}

/// (false-positive rate, true-positive rate) from the top threshold down,
/// starting at (0, 0).
pub fn roc_curve(rows: &[Scored]) -> Vec<(f64, f64)> {
    let (pos, neg) = totals(rows);
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut out = vec![(0.0, 0.0)];
    for (_, p, n) in groups(rows) {
        tp += p;
        fp += n;
        out.push((fp as f64 / neg.max(1) as f64, tp as f64 / pos.max(1) as f64));
    }
    out
}

/// (recall, precision) from the top threshold down, starting at recall 0
/// with the first threshold's precision.
pub fn pr_curve(rows: &[Scored]) -> Vec<(f64, f64)> {
    let (pos, _) = totals(rows);
    let (mut tp, mut all) = (0u64, 0u64);
    let mut out = Vec::new();
    for (_, p, n) in groups(rows) {
        tp += p;
        all += p + n;
        let point = (tp as f64 / pos.max(1) as f64, tp as f64 / all as f64);
        if out.is_empty() {
            out.push((0.0, point.1));
        }
        out.push(point);
    }
    out
}

/// The highest threshold whose alerts (score ≥ it) reach `recall`, with
/// the precision and recall there.
pub fn at_recall(rows: &[Scored], recall: f64) -> Option<(f64, f64, f64)> {
    let (pos, _) = totals(rows);
    if pos == 0 {
        return None;
    }
    let (mut tp, mut all) = (0u64, 0u64);
    for (s, p, n) in groups(rows) {
        tp += p;
        all += p + n;
        let r = tp as f64 / pos as f64;
        if r >= recall - 1e-12 {
            return Some((s, tp as f64 / all as f64, r));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn brute_auc(rows: &[Scored]) -> Option<f64> {
        let (mut wins, mut pairs) = (0.0, 0.0);
        for p in rows.iter().filter(|r| r.1) {
            for n in rows.iter().filter(|r| !r.1) {
                pairs += 1.0;
                wins += match p.0.partial_cmp(&n.0) {
                    Some(Ordering::Greater) => 1.0,
                    Some(Ordering::Equal) => 0.5,
                    _ => 0.0,
                };
            }
        }
        (pairs > 0.0).then(|| wins / pairs)
    }

    proptest! {
        #[test]
        fn auc_equals_the_brute_force_pair_count(
            rows in proptest::collection::vec((0u8..12, any::<bool>()), 0..60)
        ) {
            let rows: Vec<Scored> = rows.into_iter().map(|(s, y)| (f64::from(s), y)).collect();
            let (got, want) = (roc_auc(&rows), brute_auc(&rows));
            prop_assert_eq!(got.is_some(), want.is_some());
            if let (Some(g), Some(w)) = (got, want) {
                prop_assert!((g - w).abs() < 1e-12, "{} vs {}", g, w);
            }
        }
    }

    #[test]
    fn a_perfect_ranking_scores_one_and_curves_end_at_the_corner() {
        let rows = [(0.9, true), (0.8, true), (0.3, false), (0.1, false)];
        assert_eq!(roc_auc(&rows), Some(1.0));
        assert_eq!(pr_auc(&rows), Some(1.0));
        assert_eq!(roc_curve(&rows).last(), Some(&(1.0, 1.0)));
        assert_eq!(at_recall(&rows, 1.0), Some((0.8, 1.0, 1.0)));
        let reversed: Vec<Scored> = rows.iter().map(|r| (-r.0, r.1)).collect();
        assert_eq!(roc_auc(&reversed), Some(0.0));
        // Average precision of the worst order: hits at ranks 3 and 4.
        let ap = pr_auc(&reversed).unwrap();
        assert!((ap - (0.5 * (1.0 / 3.0) + 0.5 * 0.5)).abs() < 1e-12, "{ap}");
    }
}
