//! The console's pictures, as SVG with no inline style (the CSP forbids it): cells are shaded
//! by class (`p0` unwatched .. `p10` fully watched, colours in the stylesheet), bar heights and
//! line points are attributes.

use kollus_common::kollus::lms::Segment;
use maud::{html, Markup};

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

/// The refund view's heatmap: the union of the sessions on top (`union` cells), then one row
/// per session (`cell` cells), one column per block.
pub fn heatmap(union: &[i64], sessions: &[(String, Vec<i64>)], label: &str) -> Markup {
    let blocks = union.len();
    let width = (blocks * CELL).max(CELL);
    let height = (sessions.len() + 1) * ROW + ROW / 2;
    html! {
        svg class="heatmap" role="img" aria-label=(label) width=(width) height=(height)
            viewBox={ "0 0 " (width) " " (height) } xmlns="http://www.w3.org/2000/svg" {
            @for (i, p) in union.iter().enumerate() {
                rect class={ "union " (shade(*p)) } x=(i * CELL) y="0" width=(CELL - 1) height=(ROW - 2) {
                    title { "b" (i) ": " (p) "%" }
                }
            }
            @for (row, (name, percents)) in sessions.iter().enumerate() {
                @for (i, p) in percents.iter().enumerate().take(blocks) {
                    rect class={ "cell " (shade(*p)) } x=(i * CELL) y=((row + 1) * ROW + ROW / 2)
                        width=(CELL - 1) height=(ROW - 2) {
                        title { (name) " b" (i) ": " (p) "%" }
                    }
                }
            }
        }
    }
}

/// Width of a session's timeline, in SVG units.
const TIMELINE: u64 = 240;

/// A session's played segments on the video's timeline: one bar per segment, from where it
/// started for as long as it played (capped at the end).
pub fn timeline(segments: &[Segment], duration: Option<i64>, label: &str) -> Markup {
    let end = segments
        .iter()
        .map(|s| s.start_time.saturating_add(s.play_time))
        .max()
        .unwrap_or(0);
    let length = duration
        .and_then(|d| u64::try_from(d).ok())
        .filter(|d| *d > 0)
        .unwrap_or(end)
        .max(1);
    // In u128: seconds times the width cannot overflow.
    let x = |t: u64| (u128::from(t.min(length)) * u128::from(TIMELINE) / u128::from(length)) as u64;
    html! {
        svg class="timeline" role="img" aria-label=(label) width=(TIMELINE) height="10"
            viewBox={ "0 0 " (TIMELINE) " 10" } xmlns="http://www.w3.org/2000/svg" {
            rect class="track" x="0" y="3" width=(TIMELINE) height="4" {}
            @for s in segments {
                rect class="segment" x=(x(s.start_time)) y="0"
                    width=((x(s.start_time.saturating_add(s.play_time)) - x(s.start_time)).max(1)) height="10" {
                    title { (s.start_time) "s +" (s.play_time) "s" }
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
        let sessions = vec![
            ("a".to_owned(), vec![100, 0, 0]),
            ("b".to_owned(), vec![20, 50, 0]),
        ];
        let svg = heatmap(&union, &sessions, "x").into_string();
        assert_eq!(svg.matches("class=\"cell ").count(), 6);
        assert_eq!(svg.matches("class=\"union ").count(), 3);
        assert!(!svg.contains("style"), "no inline style: {svg}");
        // Named as Kollus names blocks (b0, b1, ...), as the read API's `watched_blocks`.
        assert!(svg.contains("<title>b1: 50%</title>"), "{svg}");
        assert!(svg.contains("<title>b b1: 50%</title>"), "{svg}");
    }

    #[test]
    fn a_timeline_places_each_segment_on_the_video() {
        let seg = |start_time, play_time| Segment {
            block: 0,
            start_time,
            play_time,
        };
        let svg = timeline(&[seg(0, 60), seg(120, 600)], Some(240), "x").into_string();
        assert!(
            svg.contains(r#"class="segment" x="0" y="0" width="60""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"class="segment" x="120" y="0" width="120""#),
            "capped at the end: {svg}"
        );
        // A player's word: numbers past any video neither panic nor leave the timeline.
        let svg = timeline(&[seg(u64::MAX, u64::MAX)], None, "x").into_string();
        assert!(svg.contains(r#"x="240""#), "{svg}");
    }
}
