//! The manifest format: every bundled manifest loads and satisfies the published JSON Schema,
//! the schema in the repository is the one the types produce, and broken manifests are
//! refused with the file, the path inside it and the reason.

use std::collections::BTreeSet;
use std::path::PathBuf;

use switchboard_connectors::load::{bundled, load_dir, load_str};
use switchboard_connectors::manifest::{Auth, Manifest};
use switchboard_connectors::{Catalog, Query, Sort};

fn schema_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../connectors/schema/manifest.schema.json")
}

fn generated_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Manifest)).unwrap()
}

#[test]
fn the_schema_in_the_repository_is_the_one_the_types_produce() {
    let generated = serde_json::to_string_pretty(&generated_schema()).unwrap() + "\n";
    if std::env::var_os("UPDATE_MANIFEST_SCHEMA").is_some() {
        std::fs::create_dir_all(schema_path().parent().unwrap()).unwrap();
        std::fs::write(schema_path(), &generated).unwrap();
    }
    let stored = std::fs::read_to_string(schema_path()).expect("connectors/schema/manifest.schema.json exists");
    assert_eq!(stored, generated, "run with UPDATE_MANIFEST_SCHEMA=1 to regenerate the schema");
}

#[test]
fn every_bundled_manifest_loads_and_satisfies_the_schema() {
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(schema_path()).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../connectors");
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let document: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        let errors: Vec<String> =
            validator.iter_errors(&document).map(|e| format!("{}: {e}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{} breaks the schema: {errors:?}", path.display());
        names.insert(path.file_stem().unwrap().to_string_lossy().to_string());
    }
    let loaded: BTreeSet<String> = bundled().unwrap().iter().map(|p| p.name().to_string()).collect();
    assert_eq!(loaded, names, "the binary embeds exactly the manifests in connectors/");
    for expected in ["slack", "github", "stripe", "hubspot", "jira", "google-calendar", "rest", "total-battle"] {
        assert!(loaded.contains(expected), "{expected} is bundled");
    }
}

#[test]
fn the_bundled_manifests_exercise_every_auth_mode_and_pagination_style() {
    let providers = bundled().unwrap();
    let modes: BTreeSet<&str> = providers.iter().flat_map(|p| p.manifest.auth.iter().map(Auth::mode)).collect();
    assert_eq!(modes, BTreeSet::from(["oauth2", "oauth2_client_credentials", "api_key", "bearer", "basic", "none"]));
    let styles: BTreeSet<&str> =
        providers.iter().flat_map(|p| p.manifest.pagination.values().map(|s| s.style())).collect();
    assert_eq!(styles, BTreeSet::from(["cursor", "offset", "page", "link_header"]));
}

fn refusal(yaml: &str) -> (String, String) {
    let error = load_str("connectors/broken.yaml", yaml).expect_err("the manifest is refused");
    assert_eq!(error.file, "connectors/broken.yaml");
    (error.path, error.reason)
}

const MINIMAL: &str = "name: broken\ndisplay_name: Broken\ndescription: A test.\ncategories: [custom]\nauth: {mode: none}\nbase_url: https://example.com\n";

#[test]
fn a_minimal_manifest_loads() {
    let provider = load_str("connectors/broken.yaml", MINIMAL).unwrap();
    assert_eq!(provider.name(), "broken");
    assert_eq!(provider.manifest.auth.len(), 1, "a single auth mode is read as a list of one");
}

#[test]
fn broken_manifests_are_refused_with_the_path_and_the_reason() {
    let cases: Vec<(String, &str, &str)> = vec![
        (MINIMAL.replace("auth: {mode: none}", "auth: {mode: oauth3}"), "auth[0].mode", "unknown variant `oauth3`"),
        (
            MINIMAL.replace("auth: {mode: none}", "auth: {mode: oauth2, token_url: https://x.test/t}"),
            "auth[0]",
            "missing field `authorization_url`",
        ),
        (
            MINIMAL.replace("categories: [custom]", "categories: [cooking]"),
            "categories[0]",
            "unknown variant `cooking`",
        ),
        (MINIMAL.replace("name: broken", "name: other"), "name", "must equal the file name"),
        (MINIMAL.to_string() + "colour: blue\n", "colour", "unknown field `colour`"),
        (
            MINIMAL.replace("https://example.com", "https://{{ config.subdomain }}.example.com"),
            "base_url",
            "config.subdomain",
        ),
        (MINIMAL.replace("https://example.com", "https://{{ config.sub"), "base_url", "is not a valid template"),
        (
            MINIMAL.to_string()
                + "actions:\n  - {name: list, method: GET, path: /items, pagination: nope, response: /items}\n",
            "actions[0].pagination",
            "does not declare",
        ),
        (
            MINIMAL.to_string() + "actions:\n  - {name: get, method: GET, path: items}\n",
            "actions[0].path",
            "must start with '/'",
        ),
        (
            MINIMAL.to_string()
                + "actions:\n  - {name: get, method: GET, path: /x, input: {type: object, properties: {a: {type: 12}}}}\n",
            "actions[0].input",
            "is not a valid JSON Schema",
        ),
        (
            MINIMAL.to_string()
                + "actions:\n  - {name: get, method: GET, path: /x}\n  - {name: get, method: GET, path: /y}\n",
            "actions[1].name",
            "declared twice",
        ),
        (MINIMAL.to_string() + "rate_limit: {requests: 0, per_seconds: 1}\n", "rate_limit.requests", "at least 1"),
        (
            MINIMAL.to_string() + "connection_config:\n  - {name: tier, label: Tier, type: enum}\n",
            "connection_config[0].values",
            "must list its values",
        ),
        (MINIMAL.to_string() + "errors: {pointer: ok, equals: false}\n", "errors.pointer", "not a JSON pointer"),
        ("name: [unclosed\n".to_string(), "line 2 column 1", "is not valid YAML"),
        (
            MINIMAL.to_string() + "webhooks: {scheme: generic_hmac, event_type: /type}\n",
            "webhooks.signature",
            "is required for the generic_hmac scheme",
        ),
        (
            MINIMAL.to_string() + "webhooks: {scheme: stripe, event_type: /type, signature: {header: x-sig}}\n",
            "webhooks.signature",
            "only the generic_hmac scheme",
        ),
        (
            MINIMAL.to_string()
                + "webhooks: {scheme: generic_hmac, event_type: /type, signature: {header: x-sig, signed: '{timestamp}.{body}'}}\n",
            "webhooks.signature.signed",
            "without a timestamp_header",
        ),
        (
            MINIMAL.to_string()
                + "webhooks: {scheme: generic_hmac, event_type: /type, signature: {header: 'bad header', algorithm: md5}}\n",
            "webhooks.signature.algorithm",
            "unknown variant `md5`",
        ),
        (
            MINIMAL.to_string()
                + "webhooks: {scheme: generic_hmac, event_type: /type, signature: {header: 'bad header'}}\n",
            "webhooks.signature.header",
            "is not a header name",
        ),
        (
            MINIMAL.to_string() + "webhooks: {scheme: stripe, event_type: /type, event_id: 'literal:x'}\n",
            "webhooks.event_id",
            "every webhook would be a duplicate",
        ),
        (
            MINIMAL.to_string()
                + "webhooks: {scheme: stripe, event_type: /type, batch: '', event_id: [/id, 'header:x-id']}\n",
            "webhooks.event_id",
            "every item of a batch would have the same id",
        ),
        (
            MINIMAL.to_string() + "webhooks: {scheme: stripe, event_type: /type, handshakes: [smoke_signal]}\n",
            "webhooks.handshakes[0]",
            "unknown variant `smoke_signal`",
        ),
        (
            MINIMAL.to_string()
                + "connection_config: [{name: webhook_accept_unsigned, label: L, type: boolean}]\n"
                + "webhooks: {scheme: stripe, event_type: /type}\n",
            "connection_config[0].name",
            "the receiver's own setting",
        ),
    ];
    for (yaml, path, reason) in cases {
        let (got_path, got_reason) = refusal(&yaml);
        assert_eq!(got_path, path, "path for {yaml:?} (reason: {got_reason})");
        assert!(got_reason.contains(reason), "reason for {yaml:?}: {got_reason:?} should mention {reason:?}");
    }
}

#[test]
fn operator_folders_add_and_override_providers_and_report_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("acme.yaml"), MINIMAL.replace("broken", "acme")).unwrap();
    std::fs::write(
        dir.path().join("slack.yaml"),
        MINIMAL.replace("broken", "slack").replace("Broken", "Patched Slack"),
    )
    .unwrap();
    let catalog = Catalog::load(&[dir.path().to_path_buf()]).unwrap();
    assert!(catalog.get("acme").is_some());
    assert_eq!(catalog.get("slack").unwrap().manifest.display_name, "Patched Slack");

    std::fs::write(dir.path().join("bad.yaml"), MINIMAL.replace("broken", "bad").replace("[custom]", "[]")).unwrap();
    let error = load_dir(dir.path()).unwrap_err();
    assert!(error.file.ends_with("bad.yaml"), "{error}");
    assert_eq!(error.path, "categories");
}

#[test]
fn the_catalog_searches_filters_sorts_and_suggests() {
    let catalog = Catalog::load(&[]).unwrap();
    let none = Default::default();
    let page = |query: Query| catalog.search(&query, &none).0.iter().map(|p| p.name().to_string()).collect::<Vec<_>>();
    let base = Query { limit: 100, ..Query::default() };

    assert_eq!(
        page(Query { category: Some(switchboard_connectors::manifest::Category::Gaming), ..base.clone() }),
        vec!["total-battle"]
    );
    assert_eq!(page(Query { search: Some("ISSUES jira".into()), ..base.clone() }), vec!["jira"]);
    let by_name = page(Query { sort: Sort::Name, ..base.clone() });
    let mut sorted = by_name.clone();
    sorted.sort();
    assert_eq!(by_name, sorted);

    let installs = std::collections::HashMap::from([("stripe".to_string(), 7), ("jira".to_string(), 3)]);
    let popular: Vec<String> = catalog
        .search(&Query { sort: Sort::Popularity, ..base.clone() }, &installs)
        .0
        .iter()
        .map(|p| p.name().to_string())
        .collect();
    assert_eq!(&popular[..2], ["stripe", "jira"]);

    let (first, more) = catalog.search(&Query { sort: Sort::Name, limit: 3, ..base.clone() }, &none);
    assert_eq!(first.len(), 3);
    assert!(more);
    let (rest, more) = catalog.search(&Query { sort: Sort::Name, limit: 100, offset: 3, ..base }, &none);
    assert!(!more);
    assert_eq!(first.len() + rest.len(), catalog.len());

    assert_eq!(catalog.close_names("slak").first().map(String::as_str), Some("slack"));
    assert_eq!(catalog.close_names("githb").first().map(String::as_str), Some("github"));
}
