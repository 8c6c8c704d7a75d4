//! `docs/QUIRKS.md` stays true: every catalogued Sage and Xero quirk has an entry with its symptom,
//! evidence, workaround, code and tests; every `Code:` marker names a function that exists in the
//! module it names, and every `Test:` marker names a `#[test]` / `#[tokio::test]` function that
//! exists in the file it names (`cargo test` runs them all).
//!
//! Markers are list items: ``- Code: `providers::sage::transform::document_body` `` (a path under
//! `src/` or a package's sources beside it, types and modules alike) and ``- Test: `sage_http::name` ``
//! (the module `sage_http` of a test binary: `tests/core/sage_http.rs`) or
//! ``- Test: `identity::tests::name` `` (a unit test under `src/`).

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Byte8's catalogue (byte8-spec.md §9): Q1–Q7 (Q6 in its five parts) and B1–B3.
const BYTE8: &[&str] = &["Q1", "Q2", "Q3", "Q4", "Q5", "Q6a", "Q6b", "Q6c", "Q6d", "Q6e", "Q7", "B1", "B2", "B3"];

/// The quirks of sage-api.md §6 that touch posting.
const SAGE: &[&str] =
    &["Q1", "Q3", "Q5", "Q6", "Q7", "Q8", "Q9", "Q10", "Q11", "Q12", "Q15", "Q16", "Q17", "Q18", "Q20", "Q22", "Q23"];

/// What real Sage answers show (`tests/fixtures/sage-real/SOURCES.md`) beyond sage-api.md: paging,
/// size failures, inactive records, role and edition errors, 525, real values.
const SAGE_REAL: &[&str] = &["R1", "R2", "R3", "R4", "R5", "R6", "R7"];

/// Quirks the crate deliberately does not work around: named, with a reason, in that section.
const NOT_WORKED_AROUND: &[&str] = &["Q19", "Q21"];

/// The quirks of xero-api.md §9 that the Xero provider works around.
const XERO: &[&str] = &[
    "Q1", "Q2", "Q3", "Q4", "Q5", "Q6", "Q7", "Q8", "Q9", "Q10", "Q11", "Q12", "Q13", "Q14", "Q15", "Q16", "Q17",
    "Q19", "Q20", "Q21", "Q22", "Q23", "Q24",
];

/// Xero quirks deliberately not worked around, each explained in "Not worked around".
const XERO_NOT_WORKED_AROUND: &[&str] = &["Q18", "Q25"];

/// One `### ` entry of the catalogue.
#[derive(Debug)]
struct Entry {
    heading: String,
    lines: Vec<String>,
}

impl Entry {
    /// The (catalogue, id) pairs of the heading: `Byte8 Q7 · Sage Q6 — …` → (Byte8, Q7), (Sage, Q6).
    fn ids(&self) -> Vec<(String, String)> {
        let tokens: Vec<&str> = self.heading.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).collect();
        tokens
            .windows(2)
            .filter(|w| w[0] == "Byte8" || w[0] == "Sage" || w[0] == "Xero")
            .map(|w| (w[0].to_owned(), w[1].to_owned()))
            .collect()
    }

    /// The values of the `- {kind}: `…`` markers.
    fn markers(&self, kind: &str) -> Vec<String> {
        markers(&self.lines, kind)
    }

    fn has_field(&self, field: &str) -> bool {
        let wanted = format!("- **{field}**:");
        self.lines.iter().any(|l| l.trim_start().starts_with(&wanted))
    }
}

fn markers(lines: &[String], kind: &str) -> Vec<String> {
    let prefix = format!("- {kind}: `");
    lines
        .iter()
        .filter_map(|l| l.trim_start().strip_prefix(&prefix))
        .map(|rest| rest.split('`').next().unwrap_or_default().to_owned())
        .collect()
}

/// The catalogue's entries (its two catalogue sections) and the lines of "Not worked around".
fn catalogue() -> (Vec<Entry>, Vec<String>) {
    let path = Path::new(ROOT).join("docs/QUIRKS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut entries: Vec<Entry> = Vec::new();
    let mut not_worked_around = Vec::new();
    let mut in_not_worked_around = false;
    for line in text.lines() {
        if let Some(h2) = line.strip_prefix("## ") {
            in_not_worked_around = h2.trim() == "Not worked around";
            continue;
        }
        if in_not_worked_around {
            not_worked_around.push(line.to_owned());
        } else if let Some(h3) = line.strip_prefix("### ") {
            entries.push(Entry { heading: h3.to_owned(), lines: Vec::new() });
        } else if let Some(e) = entries.last_mut() {
            e.lines.push(line.to_owned());
        }
    }
    (entries, not_worked_around)
}

/// The directories of the workspace's integration-test binaries (`{dir}/{name}.rs` is a module).
const TEST_DIRS: &[&str] =
    &["tests/core", "crates/simulators/tests/simulators", "crates/service/tests/service", "crates/cli/tests/cli"];

/// Where a module path's first segment lives: the core's `src/`, or a package beside it
/// (`simulator::state` → `crates/simulators/src/state.rs`, `service::worker` →
/// `crates/service/src/worker.rs`, `magento::jwt` → `crates/service/src/magento/jwt.rs`,
/// `cli::demo` → `crates/cli/src/cli/demo.rs`).
fn source_root<'a>(root: &Path, module: &'a [&'a str]) -> (PathBuf, &'a [&'a str]) {
    match module.first() {
        Some(&"simulator") => (root.join("crates/simulators/src"), &module[1..]),
        Some(&"service") => (root.join("crates/service/src"), &module[1..]),
        Some(&"magento") => (root.join("crates/service/src"), module),
        Some(&"cli") => (root.join("crates/cli/src"), module),
        _ => (root.join("src"), module),
    }
}

/// The files a marker path may live in: `{test dir}/{name}.rs` for `name::f` (a module of one of
/// the [`TEST_DIRS`] binaries), else the module files under the package's sources from the
/// longest module prefix to the shortest (`a::b::T::f` → `src/a/b/T/f.rs`, …, `src/a/b.rs`,
/// `src/a/b/mod.rs`, `src/a.rs`, `src/a/mod.rs`, `src/lib.rs` for a package's root).
fn candidate_files(path: &str) -> (String, Vec<PathBuf>) {
    let segments: Vec<&str> = path.split("::").collect();
    let (name, module) = segments.split_last().expect("a non-empty path");
    let root = Path::new(ROOT);
    if module.len() == 1 {
        for dir in TEST_DIRS {
            let test_file = root.join(dir).join(format!("{}.rs", module[0]));
            if test_file.exists() {
                return ((*name).to_owned(), vec![test_file]);
            }
        }
    }
    let (src, module) = source_root(root, module);
    let mut files = Vec::new();
    for k in (1..=module.len()).rev() {
        let joined = module[..k].join("/");
        files.push(src.join(format!("{joined}.rs")));
        files.push(src.join(joined).join("mod.rs"));
    }
    if module.is_empty() {
        files.push(src.join("lib.rs"));
    }
    ((*name).to_owned(), files.into_iter().filter(|f| f.exists()).collect())
}

/// The line index of `fn name(` / `fn name<` in `text`, if any.
fn find_fn(text: &str, name: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    lines.iter().position(|l| {
        let l = l.trim_start();
        [format!("fn {name}("), format!("fn {name}<")]
            .iter()
            .any(|pat| l.starts_with(pat.as_str()) || l.contains(&format!(" {pat}")))
    })
}

/// Where a `Code:` marker's function is defined, or why not.
fn resolve_code(path: &str) -> Result<PathBuf, String> {
    let (name, files) = candidate_files(path);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        if find_fn(&text, &name).is_some() {
            return Ok(f.clone());
        }
    }
    Err(format!("Code: `{path}`: no `fn {name}` in {files:?}"))
}

/// Where a `Test:` marker's test is defined (with its test attribute), or why not.
fn resolve_test(path: &str) -> Result<PathBuf, String> {
    let (name, files) = candidate_files(path);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let Some(at) = find_fn(&text, &name) else { continue };
        let lines: Vec<&str> = text.lines().collect();
        let attributes = lines[..at].iter().rev().take(3).map(|l| l.trim_start());
        let is_test = attributes
            .take_while(|l| l.starts_with("#["))
            .any(|l| l.starts_with("#[test]") || l.starts_with("#[tokio::test"));
        return if is_test {
            Ok(f.clone())
        } else {
            Err(format!("Test: `{path}`: `fn {name}` in {} is not a #[test]", f.display()))
        };
    }
    Err(format!("Test: `{path}`: no `fn {name}` in {files:?}"))
}

#[test]
fn every_catalogued_quirk_has_an_entry() {
    let (entries, not_worked_around) = catalogue();
    let ids: Vec<(String, String)> = entries.iter().flat_map(Entry::ids).collect();
    let mut missing = Vec::new();
    for (catalogue, wanted) in BYTE8
        .iter()
        .map(|q| ("Byte8", q))
        .chain(SAGE.iter().map(|q| ("Sage", q)))
        .chain(SAGE_REAL.iter().map(|q| ("Sage", q)))
        .chain(XERO.iter().map(|q| ("Xero", q)))
    {
        if !ids.iter().any(|(c, q)| c == catalogue && q == wanted) {
            missing.push(format!("{catalogue} {wanted}"));
        }
    }
    assert!(missing.is_empty(), "docs/QUIRKS.md has no entry for: {missing:?}");
    let text = not_worked_around.join("\n");
    for q in NOT_WORKED_AROUND {
        assert!(text.contains(&format!("Sage {q} —")), "\"Not worked around\" does not explain Sage {q}");
    }
    for q in XERO_NOT_WORKED_AROUND {
        assert!(text.contains(&format!("Xero {q} —")), "\"Not worked around\" does not explain Xero {q}");
    }
}

#[test]
fn every_entry_has_its_fields_code_and_tests() {
    let (entries, _) = catalogue();
    assert!(entries.len() >= 25, "only {} entries: is the catalogue parsed?", entries.len());
    let mut problems = Vec::new();
    for e in &entries {
        if e.ids().is_empty() {
            problems.push(format!("`{}`: the heading names no `Byte8 …` / `Sage …` / `Xero …` id", e.heading));
        }
        if e.markers("Test").is_empty() {
            problems.push(format!("`{}`: no `- Test:` marker", e.heading));
        }
        let cross_reference = e.lines.iter().any(|l| l.starts_with("See ["));
        if !cross_reference {
            for field in ["Symptom", "Evidence", "Workaround"] {
                if !e.has_field(field) {
                    problems.push(format!("`{}`: no **{field}**", e.heading));
                }
            }
            if e.markers("Code").is_empty() {
                problems.push(format!("`{}`: no `- Code:` marker", e.heading));
            }
        }
    }
    assert!(problems.is_empty(), "docs/QUIRKS.md:\n  {}", problems.join("\n  "));
}

#[test]
fn every_named_function_and_test_exists() {
    let (entries, not_worked_around) = catalogue();
    let mut codes: Vec<String> = entries.iter().flat_map(|e| e.markers("Code")).collect();
    let mut tests: Vec<String> = entries.iter().flat_map(|e| e.markers("Test")).collect();
    codes.extend(markers(&not_worked_around, "Code"));
    tests.extend(markers(&not_worked_around, "Test"));
    codes.sort();
    codes.dedup();
    tests.sort();
    tests.dedup();
    assert!(codes.len() >= 40 && tests.len() >= 60, "{} code and {} test markers: parsed?", codes.len(), tests.len());
    let problems: Vec<String> = codes
        .iter()
        .map(|c| resolve_code(c))
        .chain(tests.iter().map(|t| resolve_test(t)))
        .filter_map(Result::err)
        .collect();
    assert!(problems.is_empty(), "docs/QUIRKS.md names what does not exist:\n  {}", problems.join("\n  "));
}

#[test]
fn the_checker_tells_apart_what_exists() {
    // The checker itself: it finds real items in the right file and refuses wrong ones.
    assert!(
        resolve_code("providers::sage::transform::document_body").unwrap().ends_with("src/providers/sage/transform.rs")
    );
    assert!(
        resolve_code("providers::AccountingProviderExt::resolve_contact").unwrap().ends_with("src/providers/mod.rs")
    );
    assert!(resolve_code("providers::sage::transform::no_such_function").is_err());
    assert!(resolve_code("identity::document_body").is_err(), "the right name in the wrong module");
    assert!(resolve_test("sage_http::get_document_never_marks_as_sent").unwrap().ends_with("tests/core/sage_http.rs"));
    assert!(resolve_code("simulator::state::page").unwrap().ends_with("crates/simulators/src/state.rs"));
    assert!(
        resolve_test("cli::connect_xero_pins_the_organisation_and_sync_uses_it")
            .unwrap()
            .ends_with("crates/cli/tests/cli/cli.rs")
    );
    assert!(resolve_test("providers::sage::transform::tests::item_bodies").is_ok());
    assert!(resolve_test("auth::tests::secrets_never_show_in_debug").is_ok());
    assert!(resolve_test("sage_http::invoice").is_err(), "a helper is not a test");
    assert!(resolve_test("sage_http::no_such_test").is_err());
    let e = Entry { heading: "Byte8 Q7 · Sage Q6 — shipping (§32)".into(), lines: Vec::new() };
    assert_eq!(
        e.ids(),
        vec![("Byte8".to_owned(), "Q7".to_owned()), ("Sage".to_owned(), "Q6".to_owned())],
        "and Q6 is not Q61"
    );
}
