//! The console's pictures, as SVG with no inline style (the CSP forbids it): cells are shaded
//! by class (`p0` unwatched .. `p10` fully watched, colours in the stylesheet), bar heights and
//! line points are attributes.

use maud::{html, Markup};

use super::model::{Run, TIMELINE};

/// Cell size, in SVG units.
const CELL: usize = 12;
const ROW: usize = 14;

/// The shade class of a percent: `p0` for nothing, then one step per started 10%.
pub fn shade(percent: i64) -> String {
    let p = percent.clamp(0, 100);
    format!("p{}", (p + 9) / 10)
}

/// One row of cells, one per block, shaded by the percent of it watched. Cells are titled with
/// Kollus's block names (`b0`, `b1`, ...), as the LMS report and the read API number them.
pub fn coverage_strip(percents: &[i64], label: &str) -> Markup {
    let width = (percents.len() * CELL).max(CELL);
    html! {
        svg class="strip" role="img" aria-label=(label) width=(width) height=(ROW)
            viewBox={ "0 0 " (width) " " (ROW) } xmlns="http://www.w3.org/2000/svg" {
            @for (i, p) in percents.iter().enumerate() {
                rect class={ "cell " (shade(*p)) } x=(i * CELL) y="0" width=(CELL - 1) height=(ROW - 2) {
                    title { "b" (i) ": " (p) "%" }
                }
            }
        }
    }
}

/// The refund view's heatmap: the union of the sessions on top (`union` cells), then the
/// session rows (`cell` cells, from [`heatmap_row`]), one column per block.
pub fn heatmap(union: &[i64], rows: &[Markup], label: &str) -> Markup {
    let blocks = union.len();
    let width = (blocks * CELL).max(CELL);
    let height = (rows.len() + 1) * ROW + ROW / 2;
    html! {
        svg class="heatmap" role="img" aria-label=(label) width=(width) height=(height)
            viewBox={ "0 0 " (width) " " (height) } xmlns="http://www.w3.org/2000/svg" {
            @for (i, p) in union.iter().enumerate() {
                rect class={ "union " (shade(*p)) } x=(i * CELL) y="0" width=(CELL - 1) height=(ROW - 2) {
                    title { "b" (i) ": " (p) "%" }
                }
            }
            @for row in rows { (row) }
        }
    }
}

/// Row `row` (from 0) of the heatmap: a session's cells, one per block of the union's `blocks`.
pub fn heatmap_row(row: usize, name: &str, percents: &[i64], blocks: usize) -> Markup {
    html! {
        @for (i, p) in percents.iter().enumerate().take(blocks) {
            rect class={ "cell " (shade(*p)) } x=(i * CELL) y=((row + 1) * ROW + ROW / 2)
                width=(CELL - 1) height=(ROW - 2) {
                title { (name) " b" (i) ": " (p) "%" }
            }
        }
    }
}

/// A session's played segments on the video's timeline: one bar per run of pixels played
/// (`model::timeline_runs`: at most one per pixel), titled with the time it covers.
pub fn timeline(runs: &[Run], label: &str) -> Markup {
    html! {
        svg class="timeline" role="img" aria-label=(label) width=(TIMELINE) height="10"
            viewBox={ "0 0 " (TIMELINE) " 10" } xmlns="http://www.w3.org/2000/svg" {
            rect class="track" x="0" y="3" width=(TIMELINE) height="4" {}
            @for r in runs {
                rect class="segment" x=(r.x) y="0" width=(r.width) height="10" {
                    title { (r.from) "s +" (r.to.saturating_sub(r.from)) "s" }
                }
            }
        }
    }
}

/// A bar chart of counts, labelled below.
pub fn bars(counts: &[(String, usize)], label: &str) -> Markup {
    let max = counts.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let (bar, gap, tall) = (56usize, 16usize, 120usize);
    let width = counts.len() * (bar + gap);
    html! {
        svg class="bars" role="img" aria-label=(label) width=(width) height=(tall + 40)
            viewBox={ "0 0 " (width) " " (tall + 40) } xmlns="http://www.w3.org/2000/svg" {
            @for (i, (name, n)) in counts.iter().enumerate() {
                @let h = n * tall / max;
                rect class="bar" x=(i * (bar + gap)) y=(tall - h) width=(bar) height=(h) {
                    title { (name) ": " (n) }
                }
                text x=(i * (bar + gap) + bar / 2) y=(tall + 14) text-anchor="middle" { (n) }
                text x=(i * (bar + gap) + bar / 2) y=(tall + 32) text-anchor="middle" { (name) }
            }
        }
    }
}

/// A line over blocks: how many viewers watched each block (where they drop off).
pub fn line(counts: &[usize], label: &str) -> Markup {
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let tall = 120usize;
    let width = (counts.len() * CELL).max(CELL);
    let points: Vec<String> = counts
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{},{}", i * CELL + CELL / 2, tall - n * tall / max))
        .collect();
    html! {
        svg class="line" role="img" aria-label=(label) width=(width) height=(tall + 4)
            viewBox={ "0 0 " (width) " " (tall + 4) } xmlns="http://www.w3.org/2000/svg" {
            polyline class="curve" points=(points.join(" ")) {}
            @for (i, n) in counts.iter().enumerate() {
                circle class="point" cx=(i * CELL + CELL / 2) cy=(tall - n * tall / max) r="2" {
                    title { "b" (i) ": " (n) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shades_step_by_started_tenths() {
        assert_eq!(shade(0), "p0");
        assert_eq!(shade(1), "p1");
        assert_eq!(shade(10), "p1");
        assert_eq!(shade(11), "p2");
        assert_eq!(shade(100), "p10");
        assert_eq!(shade(250), "p10");
        assert_eq!(shade(-3), "p0");
    }

    #[test]
    fn the_heatmap_has_a_cell_per_session_and_block_and_a_union_row() {
        let union = vec![100, 50, 0];
        let rows = [
            heatmap_row(0, "a", &[100, 0, 0], 3),
            heatmap_row(1, "b", &[20, 50, 0, 70], 3),
        ];
        let svg = heatmap(&union, &rows, "x").into_string();
        assert_eq!(svg.matches("class=\"cell ").count(), 6);
        assert_eq!(svg.matches("class=\"union ").count(), 3);
        assert!(!svg.contains("style"), "no inline style: {svg}");
        // Named as Kollus names blocks (b0, b1, ...), as the read API's `watched_blocks`.
        assert!(svg.contains("<title>b1: 50%</title>"), "{svg}");
        assert!(svg.contains("<title>b b1: 50%</title>"), "{svg}");
    }

    #[test]
    fn a_timeline_draws_a_bar_per_run() {
        let run = |x, width, from, to| Run { x, width, from, to };
        let svg = timeline(&[run(0, 60, 0, 60), run(120, 120, 120, 720)], "x").into_string();
        assert!(
            svg.contains(r#"class="segment" x="0" y="0" width="60""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"class="segment" x="120" y="0" width="120""#),
            "{svg}"
        );
        assert!(svg.contains("<title>120s +600s</title>"), "{svg}");
        assert_eq!(svg.matches("class=\"segment\"").count(), 2);
    }
}
