//! The console's pictures, as SVG with no inline style (the CSP forbids it): cells are shaded
//! by class (`unwatched` for a block nobody watched, `p1` .. `p10` for a watched one by the
//! tenths of it played, colours in the stylesheet), bar heights and line points are attributes.
//! Pictures over blocks are drawn at [`CELL`] units a block and fit the page whatever the block
//! count: the stylesheet caps their width at their container's (`max-width: 100%`) and
//! `preserveAspectRatio="none"` narrows the cells to it, keeping the height.

use maud::{html, Markup};

use super::i18n::UiLang;
use super::model::{Cell, Run, TIMELINE};

/// Cell size, in SVG units.
const CELL: usize = 12;
const ROW: usize = 14;

/// The widest a coverage strip is laid out, in pixels: it shares a table row with the video's
/// key and counts, and a table widens to its cells' widths (30 blocks at [`CELL`] units each).
const STRIP: usize = 360;

/// The shade class of a cell: `unwatched` only for a block not watched; a watched one `p1` for
/// up to 10% (and for 0%: Kollus's `b{i}` = 1 without a percent), then one step per started 10%.
pub fn shade(cell: Cell) -> String {
    if !cell.watched {
        return "unwatched".to_owned();
    }
    let p = cell.percent.clamp(0, 100);
    format!("p{}", ((p + 9) / 10).max(1))
}

/// A cell's title: Kollus's block name (`b0`, `b1`, ..., as the LMS report and the read API
/// number them), watched or not, and the percent played of a watched one.
fn title(l: UiLang, block: usize, cell: Cell) -> String {
    if cell.watched {
        format!("b{block}: {} {}%", l.t("시청함,", "watched,"), cell.percent)
    } else {
        format!("b{block}: {}", l.t("시청 안 함", "not watched"))
    }
}

/// The width of a picture over `blocks` blocks, in SVG units and in pixels before the
/// stylesheet narrows it to the page.
fn width_of(blocks: usize) -> usize {
    (blocks * CELL).max(CELL)
}

/// One row of cells, one per block, shaded by the percent of it watched, at most [`STRIP`]
/// pixels wide (its cells narrowed to fit). Cells are titled with Kollus's block names (`b0`,
/// `b1`, ...), as the LMS report and the read API number them.
pub fn coverage_strip(l: UiLang, cells: &[Cell], label: &str) -> Markup {
    let width = width_of(cells.len());
    html! {
        svg class="strip" role="img" aria-label=(label) width=(width.min(STRIP)) height=(ROW)
            viewBox={ "0 0 " (width) " " (ROW) } preserveAspectRatio="none"
            xmlns="http://www.w3.org/2000/svg" {
            @for (i, c) in cells.iter().enumerate() {
                rect class={ "cell " (shade(*c)) } x=(i * CELL) y="0" width=(CELL - 1) height=(ROW - 2) {
                    title { (title(l, i, *c)) }
                }
            }
        }
    }
}

/// The refund view's heatmap: the union of the sessions on top (`union` cells), then the
/// session rows (`cell` cells, from [`heatmap_row`]), one column per block.
pub fn heatmap(l: UiLang, union: &[Cell], rows: &[Markup], label: &str) -> Markup {
    let width = width_of(union.len());
    let height = (rows.len() + 1) * ROW + ROW / 2;
    html! {
        svg class="heatmap" role="img" aria-label=(label) width=(width) height=(height)
            viewBox={ "0 0 " (width) " " (height) } preserveAspectRatio="none"
            xmlns="http://www.w3.org/2000/svg" {
            @for (i, c) in union.iter().enumerate() {
                rect class={ "union " (shade(*c)) } x=(i * CELL) y="0" width=(CELL - 1) height=(ROW - 2) {
                    title { (title(l, i, *c)) }
                }
            }
            @for row in rows { (row) }
        }
    }
}

/// Row `row` (from 0) of the heatmap: a session's cells, one per block of the union's `blocks`.
pub fn heatmap_row(l: UiLang, row: usize, name: &str, cells: &[Cell], blocks: usize) -> Markup {
    html! {
        @for (i, c) in cells.iter().enumerate().take(blocks) {
            rect class={ "cell " (shade(*c)) } x=(i * CELL) y=((row + 1) * ROW + ROW / 2)
                width=(CELL - 1) height=(ROW - 2) {
                title { (name) " " (title(l, i, *c)) }
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
    let width = width_of(counts.len());
    let points: Vec<String> = counts
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{},{}", i * CELL + CELL / 2, tall - n * tall / max))
        .collect();
    html! {
        svg class="line" role="img" aria-label=(label) width=(width) height=(tall + 4)
            viewBox={ "0 0 " (width) " " (tall + 4) } preserveAspectRatio="none"
            xmlns="http://www.w3.org/2000/svg" {
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

    fn cells(percents: &[i64]) -> Vec<Cell> {
        let played: Vec<bool> = percents.iter().map(|p| *p > 0).collect();
        (0..percents.len())
            .map(|i| Cell::of(percents, &played, i))
            .collect()
    }

    /// Kollus's `b{i}` = 1 with `p{i}` = 0: watched, no percent.
    const MARKED: Cell = Cell {
        watched: true,
        percent: 0,
    };

    #[test]
    fn shades_step_by_started_tenths_and_only_an_unwatched_block_is_unwatched() {
        let watched = |percent| Cell {
            watched: true,
            percent,
        };
        assert_eq!(shade(Cell::default()), "unwatched");
        assert_eq!(
            shade(MARKED),
            "p1",
            "watched at 0%: the lightest watched shade"
        );
        assert_eq!(shade(watched(1)), "p1");
        assert_eq!(shade(watched(10)), "p1");
        assert_eq!(shade(watched(11)), "p2");
        assert_eq!(shade(watched(100)), "p10");
        assert_eq!(shade(watched(250)), "p10");
        assert_eq!(shade(watched(-3)), "p1");
    }

    #[test]
    fn the_heatmap_has_a_cell_per_session_and_block_and_a_union_row() {
        let union = cells(&[100, 50, 0]);
        let rows = [
            heatmap_row(UiLang::En, 0, "a", &cells(&[100, 0, 0]), 3),
            heatmap_row(UiLang::En, 1, "b", &cells(&[20, 50, 0, 70]), 3),
        ];
        let svg = heatmap(UiLang::En, &union, &rows, "x").into_string();
        assert_eq!(svg.matches("class=\"cell ").count(), 6);
        assert_eq!(svg.matches("class=\"union ").count(), 3);
        assert!(!svg.contains("style"), "no inline style: {svg}");
        // Named as Kollus names blocks (b0, b1, ...), as the read API's `watched_blocks`.
        assert!(svg.contains("<title>b1: watched, 50%</title>"), "{svg}");
        assert!(svg.contains("<title>b b1: watched, 50%</title>"), "{svg}");
        assert!(svg.contains("<title>b2: not watched</title>"), "{svg}");
        let svg = heatmap(UiLang::Ko, &union, &[], "x").into_string();
        assert!(svg.contains("<title>b1: 시청함, 50%</title>"), "{svg}");
    }

    #[test]
    fn blocks_kollus_marks_played_without_a_percent_are_drawn_watched_at_zero() {
        // 300 blocks, `b{i}` = 1 and `p{i}` = 0 each, as the support agent's session.
        let played = vec![true; 300];
        let percent = vec![0; 300];
        let session: Vec<Cell> = (0..300).map(|i| Cell::of(&percent, &played, i)).collect();
        assert!(session.iter().all(|c| *c == MARKED));
        let strip = coverage_strip(UiLang::En, &session, "x").into_string();
        let heat = heatmap(
            UiLang::En,
            &session,
            &[heatmap_row(UiLang::En, 0, "s", &session, 300)],
            "x",
        )
        .into_string();
        for svg in [&strip, &heat] {
            assert!(!svg.contains("unwatched"), "no cell drawn unwatched: {svg}");
            assert!(svg.contains("<title>b299: watched, 0%</title>"), "{svg}");
        }
        assert_eq!(strip.matches("class=\"cell p1\"").count(), 300);
        assert_eq!(heat.matches("class=\"cell p1\"").count(), 300);
        assert_eq!(heat.matches("class=\"union p1\"").count(), 300);
        // Nothing reported for a block: unwatched, whatever the arrays' lengths.
        assert_eq!(Cell::of(&[], &[], 3), Cell::default());
        assert_eq!(
            Cell::of(&[40], &[false], 0),
            Cell {
                watched: true,
                percent: 40
            },
            "a percent is watched, whatever `b`"
        );
    }

    #[test]
    fn pictures_over_blocks_scale_to_their_container_for_any_block_count() {
        for blocks in [1usize, 300, 5000] {
            let row = cells(&vec![50; blocks]);
            let strip = coverage_strip(UiLang::En, &row, "x").into_string();
            let heat = heatmap(UiLang::En, &row, &[], "x").into_string();
            let line = line(&vec![1; blocks], "x").into_string();
            for (svg, most) in [(&strip, STRIP), (&heat, usize::MAX), (&line, usize::MAX)] {
                // Drawn at 12 units a block in a viewBox the stylesheet's `max-width: 100%`
                // narrows (a strip laid out at most 360 px wide, in a table row); stretched,
                // not letterboxed, so the cells span the width.
                let width = blocks * CELL;
                assert!(
                    svg.contains(&format!("width=\"{}\"", width.min(most))),
                    "{blocks}: {svg:.300}"
                );
                assert!(
                    svg.contains(&format!("viewBox=\"0 0 {width} ")),
                    "{svg:.300}"
                );
                assert!(svg.contains("preserveAspectRatio=\"none\""), "{svg:.300}");
                assert!(!svg.contains("style"), "no inline style: {svg:.300}");
            }
            assert_eq!(
                strip.matches("<title>").count(),
                blocks,
                "every title stays"
            );
        }
        let css = include_str!("style.css");
        assert!(
            css.contains("svg.strip, svg.heatmap, svg.line { max-width: 100%; }"),
            "the stylesheet narrows them"
        );
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
