//! common's module graph, read from its source ([`layers`]), checked as token-api's is: no
//! import cycle, file by file (a child that names a type of its parent's `mod.rs` is one: the
//! shared types live in modules of their own, `kollus::callback`, `kollus::lms::report`,
//! `model::table`, and the parents re-export them).

use std::path::Path;

use kollus_test_support::layers;

#[test]
fn the_import_graph_has_no_cycle() {
    let g = layers::graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(g.len() > 30, "read every file: {:?}", g.keys());
    assert!(
        g["worker::consume"].contains("worker::retry")
            && g["worker::rebuild"].contains("worker::retry")
            && g["worker"].contains("worker::consume"),
        "edges are read: {g:#?}"
    );
    if let Some(cycle) = layers::find_cycle(&g) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
}
