//! token-api's module graph, read from its source ([`layers`]). The graph must have no cycle at
//! all, file by file; the bottom layer must import
//! nothing above it; a feature may use another feature's model, never its handlers (`mod.rs`);
//! nothing but `startup` imports `routes`, nothing imports `startup`.

use std::path::Path;

use kollus_test_support::layers;

const BOTTOM: &[&str] = &[
    "configuration",
    "api_scope",
    "auth",
    "problem",
    "params",
    "signer",
    "json",
    "metrics",
];
const FEATURES: &[&str] = &[
    "tokens",
    "history",
    "entitlements",
    "playback",
    "export",
    "console",
    "access_log",
    "erasure",
];

fn top(module: &str) -> &str {
    module.split("::").next().unwrap()
}

#[test]
fn the_import_graph_has_no_cycle_and_runs_one_way() {
    let g = layers::assert_acyclic(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(g.len() > 25, "read every file: {:?}", g.keys());
    assert!(
        g["playback"].contains("playback::wire")
            && g["playback::store"].contains("entitlements::model"),
        "edges are read: {g:#?}"
    );
    for (from, tos) in &g {
        for to in tos {
            let (f, t) = (top(from), top(to));
            if BOTTOM.contains(&f) {
                assert!(
                    BOTTOM.contains(&t),
                    "bottom layer {from} imports {to}, above it"
                );
            }
            if FEATURES.contains(&f) {
                assert!(
                    !["routes", "startup"].contains(&t),
                    "feature {from} imports the top ({to})"
                );
                if FEATURES.contains(&t) && f != t {
                    assert_ne!(
                        to.as_str(),
                        t,
                        "feature {from} imports another feature's handlers ({to}); use its model"
                    );
                }
            }
            if t == "startup" {
                assert!(f.is_empty(), "{from} imports startup");
            }
            if t == "routes" {
                assert!(["startup", ""].contains(&f), "{from} imports routes");
            }
        }
    }
}
