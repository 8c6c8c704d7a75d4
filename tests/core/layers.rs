//! The layering rule of the workspace (see the crate docs, "Packages and the layering rule"),
//! read from the packages' dependency graph rather than held by discipline:
//!
//! - `byte8-ledger-core` depends on none of the other workspace packages (not even for its tests);
//! - `byte8-ledger-simulators` depends on the core only;
//! - `byte8-ledger-service` depends on the core only (the simulators at most for its tests);
//! - `byte8-ledger` (the command) sits on top and may use them all; nothing depends on it;
//! - the core with its default features builds no web server, database driver or argument
//!   parser (`axum`, `sqlx`, `clap`, `indicatif`, `tracing-subscriber`);
//! - the service's concepts (tenant bindings, the Magento api key, dispatch leases, the callback
//!   outbox, the replay cache) are defined in the service package (`crates/service/src/store`),
//!   not in the core's sources.

use std::{collections::BTreeMap, path::Path, process::Command};

use serde_json::Value;

const CORE: &str = "byte8-ledger-core";
const SERVICE: &str = "byte8-ledger-service";
const SIMULATORS: &str = "byte8-ledger-simulators";
const CLI: &str = "byte8-ledger";

/// Crates an embedder posting to Sage must not compile.
const NOT_IN_DEFAULT_CORE: &[&str] = &["axum", "sqlx", "clap", "indicatif", "tracing-subscriber"];

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    c.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
    c
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("cargo runs");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// Each workspace package's dependencies on other workspace packages, as (name, kind) with kind
/// `normal`, `dev` or `build`.
fn workspace_edges() -> BTreeMap<String, Vec<(String, String)>> {
    let text = run(cargo().args(["metadata", "--format-version", "1", "--no-deps", "--offline"]));
    let meta: Value = serde_json::from_str(&text).expect("cargo metadata is JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let names: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| names.contains(&d["name"].as_str().unwrap_or_default()))
                .map(|d| {
                    let name = d["name"].as_str().unwrap_or_default().to_owned();
                    (name, d["kind"].as_str().unwrap_or("normal").to_owned())
                })
                .collect();
            (p["name"].as_str().unwrap_or_default().to_owned(), deps)
        })
        .collect()
}

/// What breaks the rule, for a graph: one line per forbidden edge.
fn violations(edges: &BTreeMap<String, Vec<(String, String)>>) -> Vec<String> {
    let mut out = Vec::new();
    for (package, deps) in edges {
        for (dep, kind) in deps {
            let allowed = match package.as_str() {
                CORE => false,
                SIMULATORS => dep == CORE,
                SERVICE => dep == CORE || (dep == SIMULATORS && kind == "dev"),
                CLI => dep != CLI,
                _ => false,
            };
            if !allowed || dep == CLI {
                out.push(format!("{package} → {dep} ({kind})"));
            }
        }
    }
    out
}

#[test]
fn no_package_depends_on_a_layer_above_it() {
    let edges = workspace_edges();
    for package in [CORE, SERVICE, SIMULATORS, CLI] {
        assert!(edges.contains_key(package), "{package} is a workspace member: {:?}", edges.keys());
    }
    assert_eq!(violations(&edges), Vec::<String>::new(), "the layering rule of the crate docs");
    // The command really is on top: it uses every layer below.
    let cli: Vec<&str> = edges[CLI].iter().filter(|(_, k)| k == "normal").map(|(d, _)| d.as_str()).collect();
    for below in [CORE, SERVICE, SIMULATORS] {
        assert!(cli.contains(&below), "the command depends on {below}: {cli:?}");
    }
}

#[test]
fn the_checker_refuses_upward_edges() {
    let graph = |package: &str, dep: &str, kind: &str| {
        BTreeMap::from([(package.to_owned(), vec![(dep.to_owned(), kind.to_owned())])])
    };
    assert_eq!(violations(&graph(CORE, SERVICE, "normal")).len(), 1);
    assert_eq!(violations(&graph(CORE, SIMULATORS, "dev")).len(), 1, "not even for the core's tests");
    assert_eq!(violations(&graph(SIMULATORS, SERVICE, "normal")).len(), 1);
    assert_eq!(violations(&graph(SERVICE, SIMULATORS, "normal")).len(), 1, "a dev-dependency at most");
    assert_eq!(violations(&graph(SERVICE, CLI, "dev")).len(), 1);
    assert!(violations(&graph(SERVICE, SIMULATORS, "dev")).is_empty());
    assert!(violations(&graph(CLI, SERVICE, "normal")).is_empty());
}

/// The crate names in `cargo tree` of the core with `args` (normal dependencies only).
fn core_tree(args: &[&str]) -> Vec<String> {
    let mut cmd = cargo();
    cmd.args(["tree", "-p", CORE, "-e", "normal", "--prefix", "none", "--format", "{p}", "--offline"]).args(args);
    let mut names: Vec<String> =
        run(&mut cmd).lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_core_with_default_features_builds_no_server_database_or_command_line() {
    let default = core_tree(&[]);
    assert!(default.iter().any(|n| n == "reqwest"), "the tree was read: {default:?}");
    let found: Vec<&&str> = NOT_IN_DEFAULT_CORE.iter().filter(|n| default.iter().any(|d| d == **n)).collect();
    assert!(found.is_empty(), "the core's default features pull {found:?}");
    // The same check sees a database driver when a feature asks for one.
    let sqlite = core_tree(&["--features", "sqlite"]);
    assert!(sqlite.iter().any(|n| n == "sqlx"), "feature `sqlite` brings sqlx: {sqlite:?}");
}

/// The service's store items, which only the service package may define.
const SERVICE_ITEMS: &[&str] = &[
    "trait BindingStore",
    "trait DispatchStore",
    "trait ReplayCache",
    "trait ServiceStore",
    "trait ProviderFactory",
    "struct Binding ",
    "struct Binding<",
    "struct BindingInfo",
    "struct PendingCallback",
    "struct DispatchStats",
    "struct ApiKey",
    "enum BindingStatus",
    "enum ConnectionStatus",
];

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((path.display().to_string(), std::fs::read_to_string(&path).expect("UTF-8 source")));
        }
    }
    out
}

/// `file: item` for each service item a source defines.
fn service_items_defined(files: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (file, text) in files {
        for item in SERVICE_ITEMS {
            if text.lines().any(|l| !l.trim_start().starts_with("//") && l.contains(&format!("pub {item}"))) {
                found.push(format!("{file}: {}", item.trim()));
            }
        }
    }
    found
}

#[test]
fn the_core_defines_none_of_the_service_s_store_items() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let core = sources(&root.join("src"));
    assert!(core.len() > 50, "the core's sources were read: {}", core.len());
    assert_eq!(service_items_defined(&core), Vec::<String>::new(), "the service's items live in crates/service");
    // They are where the service package says they are (the check reads real definitions).
    let service = sources(&root.join("crates/service/src/store"));
    let defined = service_items_defined(&service);
    for item in
        ["trait BindingStore", "trait DispatchStore", "trait ReplayCache", "trait ServiceStore", "struct ApiKey"]
    {
        assert!(
            defined.iter().any(|d| d.ends_with(item)),
            "{item} is defined in crates/service/src/store: {defined:?}"
        );
    }
    assert!(!core.iter().any(|(f, _)| f.ends_with("store/service.rs")), "no store::service module in the core");
}

#[test]
fn the_item_check_sees_a_definition_and_skips_comments() {
    let files = |text: &str| vec![("x.rs".to_owned(), text.to_owned())];
    assert_eq!(service_items_defined(&files("pub trait BindingStore: Send {}")), ["x.rs: trait BindingStore"]);
    assert_eq!(service_items_defined(&files("pub struct Binding {")), ["x.rs: struct Binding"]);
    assert!(service_items_defined(&files("/// see `pub trait BindingStore` in the service")).is_empty());
    assert!(service_items_defined(&files("pub struct BindingHelper;")).is_empty());
}
