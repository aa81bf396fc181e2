//! Every configuration example in docs/ loads (so the documentation stays true).

use std::collections::HashMap;
use std::path::PathBuf;

#[test]
fn the_documented_example_loads() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/marina.yaml");
    let s = marina_core::settings::load(Some(&path), Some(HashMap::new()), &[])
        .expect("docs/examples/marina.yaml");
    assert_eq!(s.tenants.len(), 2);
    assert_eq!(s.tenants["acme"].allowed_origins, ["https://app.acme.example"]);
    assert_eq!(s.tenants["acme"].limits.max_body_bytes, 262_144);
    assert_eq!(s.sessions.lease_ttl_ms, 3000);
    let doc =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"))
            .unwrap();
    let example = std::fs::read_to_string(&path).unwrap();
    assert!(
        doc.contains(&example),
        "docs/configuration.md and docs/examples/marina.yaml differ"
    );
}
