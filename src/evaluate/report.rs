//! `evaluate --report`: one self-contained HTML file (inline CSS and SVG,
//! nothing fetched), with the tables and the ROC and precision-recall
//! curves of A+B and of all customers, drawn with plotters' SVG backend.

use plotters::prelude::*;

use super::Evaluation;
use crate::engine::tier::Tier;

const COLOURS: [RGBColor; 3] = [
    RGBColor(200, 40, 40),
    RGBColor(40, 90, 200),
    RGBColor(30, 140, 60),
];

/// One chart of a curve per score; `diagonal` draws the chance line.
fn chart(
    title: &str,
    (x_label, y_label): (&str, &str),
    curves: &[(&str, &[(f64, f64)])],
    diagonal: bool,
) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (440, 340)).into_drawing_area();
        let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut c = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(36)
                .y_label_area_size(44)
                .build_cartesian_2d(0.0..1.0, 0.0..1.0)?;
            c.configure_mesh().x_desc(x_label).y_desc(y_label).draw()?;
            if diagonal {
                c.draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], &BLACK.mix(0.3)))?;
            }
            for (i, (name, points)) in curves.iter().enumerate() {
                let colour = COLOURS[i % COLOURS.len()];
                c.draw_series(LineSeries::new(
                    points.iter().copied(),
                    colour.stroke_width(2),
                ))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour));
            }
            c.configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
            root.present()?;
            Ok(())
        })();
        if let Err(e) = drawn {
            tracing::warn!(error = %e, "a report chart could not be drawn");
        }
    }
    svg
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The report page.
pub fn html(e: &Evaluation) -> String {
    let pct = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{:.1}%", v * 100.0));
    let num = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.4}"));
    let mut body = String::new();
    for g in &e.groups {
        body += &format!(
            "<h2>{}Tier {}</h2><p>{} customers, {} churned ({}).</p>",
            g.segment
                .as_ref()
                .map_or(String::new(), |s| format!("{} · ", escape(s))),
            g.group,
            g.customers,
            g.churners,
            pct(g.churn_rate)
        );
        body += "<table><tr><th>rule</th><th>firing at the cut</th><th>precision</th><th>recall</th><th>F1</th></tr>";
        for r in &g.rules {
            body += &format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&r.rule),
                r.firing,
                pct(r.precision),
                pct(r.recall),
                num(r.f1)
            );
        }
        body += "</table><table><tr><th>score</th><th>ROC AUC</th><th>PR AUC</th></tr>";
        for q in &g.scores {
            body += &format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                q.score,
                num(q.roc_auc),
                num(q.pr_auc)
            );
        }
        body += "</table>";
        if let Some(a) = &g.risk_at_fixed_recall {
            body += &format!(
                "<p>At the fixed recency rule's recall ({}): fixed rule precision {}, <b>risk ≥ {}</b> precision <b>{}</b> (recall {}).</p>",
                pct(Some(a.recall)),
                pct(a.fixed_precision),
                a.risk_threshold,
                pct(Some(a.risk_precision)),
                pct(Some(a.risk_recall))
            );
        }
    }
    let mut charts = String::new();
    for (name, tiers) in [("A+B", &[Tier::A, Tier::B][..]), ("all", &Tier::ALL[..])] {
        let curves = e.curves(tiers);
        let roc: Vec<(&str, &[(f64, f64)])> = curves.iter().map(|(n, r, _)| (*n, &r[..])).collect();
        let pr: Vec<(&str, &[(f64, f64)])> = curves.iter().map(|(n, _, p)| (*n, &p[..])).collect();
        charts += &chart(
            &format!("ROC, tier {name}"),
            ("false-positive rate", "true-positive rate"),
            &roc,
            true,
        );
        charts += &chart(
            &format!("Precision-recall, tier {name}"),
            ("recall", "precision"),
            &pr,
            false,
        );
    }
    let m = &e.model;
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>churnwatch evaluate</title>\
         <style>body{{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}}\
         table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}svg{{margin:.3em}}</style></head><body>\
         <h1>churnwatch evaluate</h1>\
         <p>Cut {}, horizon {} days: churned = no purchase in (cut, cut + horizon]. \
         BG/NBD ({}): r = {:.4}, α = {:.4}, a = {:.4}, b = {:.4}. Input: {}.</p>\
         <p>Scores: <b>risk</b> (churnwatch's score), <b>recency</b> (days since the last purchase), \
         <b>bgnbd</b> (1 − P(alive)).</p>{body}<h2>Curves</h2><div>{charts}</div></body></html>\n",
        e.cut, e.horizon_days, e.model_source, m.r, m.alpha, m.a, m.b, e.outcomes
    )
}
