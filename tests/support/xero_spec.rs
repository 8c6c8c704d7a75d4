//! Checks every request the Xero provider sends against Xero's own OpenAPI 3 specs
//! (`tests/fixtures/specs/xero/xero_accounting.yaml`, 16.1.0, and `xero-identity.yaml` for
//! `/connections`, vendored; provenance in the `SOURCE.md` beside them).
//!
//! Include it with `#[path = "support/xero_spec.rs"] mod xero_spec;` and call
//! [`assert_request_valid`] on each request a wiremock server received (or [`check`] on a
//! [`Sent`]).
//!
//! # Rules
//!
//! - **Operation**: the method and path match an operation of the spec (path templates such as
//!   `/Invoices/{InvoiceID}` match any one segment).
//! - **Parameters** (`$ref`s into `components/parameters` resolved, path-level ones included):
//!   every required header is sent (`xero-tenant-id`); every query parameter sent is declared by
//!   the operation, booleans are `true`/`false`, integers are digits; an `Idempotency-Key` is only
//!   sent where declared, never empty, at most 128 characters (the parameter's own description).
//! - **Body**: sent only where the operation has a `requestBody`, and valid against its
//!   `application/json` schema: `$ref`s resolved; types (`number` must be a JSON number — money
//!   never travels as a string); `enum`; `maxLength` (Unicode characters); `required`; no `null`
//!   (the spec declares no `nullable`); no `readOnly` property (Xero owns totals, Q22); no
//!   property the schema does not declare; `x-is-msdate` strings sent as `YYYY-MM-DD`.
//!
//! Problems come back one per violation, each naming the JSON path and the rule.

#![allow(dead_code)]

use std::sync::OnceLock;

use serde_json::{Map, Value};

/// The Accounting API spec, from the workspace root.
pub const SPEC_PATH: &str = "tests/fixtures/specs/xero/xero_accounting.yaml";
/// The identity API spec (`GET /Connections`), from the workspace root.
pub const IDENTITY_PATH: &str = "tests/fixtures/specs/xero/xero-identity.yaml";

/// The workspace root: this package's directory for the root package, two levels up for the
/// packages under `crates/` (this file is shared by the test binaries of both).
fn workspace_root() -> std::path::PathBuf {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    if here.join("tests/fixtures").is_dir() { here.to_path_buf() } else { here.join("../..") }
}

fn load(path: &str) -> Value {
    let full = workspace_root().join(path);
    let path = full.display();
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| {
        panic!("cannot read Xero's spec at {path} ({e}); it is vendored in tests/fixtures/specs/xero/")
    });
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("Xero's spec at {path} is not YAML: {e}"))
}

/// The Accounting API spec, parsed once.
pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| load(SPEC_PATH))
}

/// The identity spec, parsed once.
pub fn identity() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| load(IDENTITY_PATH))
}

/// A request as sent: the path relative to the API root (`/Invoices/…`), its query pairs,
/// headers (names lower-case) and JSON body.
#[derive(Debug, Clone)]
pub struct Sent {
    /// `GET`, `PUT`, `POST`.
    pub method: String,
    /// The path under the API root.
    pub path: String,
    /// Query pairs.
    pub query: Vec<(String, String)>,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// The body, when one was sent.
    pub body: Option<Value>,
}

fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    let mut s = schema;
    for _ in 0..32 {
        let Some(r) = s.get("$ref").and_then(Value::as_str) else { return s };
        let mut node = root;
        for part in r.trim_start_matches("#/").split('/') {
            node = node.get(part).unwrap_or_else(|| panic!("dangling $ref {r} in Xero's spec"));
        }
        s = node;
    }
    panic!("$ref cycle in Xero's spec")
}

fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.trim_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_matches('/').split('/').collect();
    t.len() == p.len() && t.iter().zip(&p).all(|(a, b)| (a.starts_with('{') && a.ends_with('}')) || a == b)
}

/// The spec, path template and operation of a request, if the spec has one.
pub fn operation(method: &str, path: &str) -> Option<(&'static Value, String, &'static Value)> {
    let root = if path.eq_ignore_ascii_case("/connections") { identity() } else { spec() };
    let paths = root.get("paths")?.as_object()?;
    // Exact paths win over templates (`/Contacts` vs `/Contacts/{ContactID}`).
    let mut candidates: Vec<(&String, &Value)> =
        paths.iter().filter(|(t, _)| template_matches(t, path) || t.eq_ignore_ascii_case(path)).collect();
    candidates.sort_by_key(|(t, _)| t.matches('{').count());
    for (template, item) in candidates {
        if let Some(op) = item.get(method.to_ascii_lowercase()) {
            return Some((root, template.clone(), op));
        }
    }
    None
}

/// Every violation of a request against the spec (empty: valid).
pub fn check(sent: &Sent) -> Vec<String> {
    let mut problems = Vec::new();
    let Some((root, template, op)) = operation(&sent.method, &sent.path) else {
        return vec![format!("{} {}: no such operation in Xero's spec", sent.method, sent.path)];
    };
    let what = format!("{} {template} ({})", sent.method, op.get("operationId").and_then(Value::as_str).unwrap_or("?"));
    let path_item = root["paths"][&template].clone();
    let mut params: Vec<&Value> = Vec::new();
    for list in [path_item.get("parameters"), op.get("parameters")].into_iter().flatten() {
        if let Some(a) = list.as_array() {
            for p in a {
                params.push(resolve(root, p));
            }
        }
    }
    // A path-level parameter is a clone: resolve it against the real spec.
    let params: Vec<Value> = params.into_iter().cloned().collect();
    let header = |name: &str| sent.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    for p in &params {
        let name = p.get("name").and_then(Value::as_str).unwrap_or("");
        let place = p.get("in").and_then(Value::as_str).unwrap_or("");
        let required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
        if place == "header" && required && header(name).is_none() {
            problems.push(format!("{what}: required header `{name}` is missing"));
        }
    }
    for (k, v) in &sent.query {
        match params.iter().find(|p| {
            p.get("in").and_then(Value::as_str) == Some("query")
                && p.get("name").and_then(Value::as_str) == Some(k.as_str())
        }) {
            None => problems.push(format!("{what}: query parameter `{k}` is not declared by the operation")),
            Some(p) => match p.get("schema").and_then(|s| s.get("type")).and_then(Value::as_str) {
                Some("boolean") if v != "true" && v != "false" => {
                    problems.push(format!("{what}: `{k}={v}` is not a boolean"))
                }
                Some("integer") if v.parse::<i64>().is_err() => {
                    problems.push(format!("{what}: `{k}={v}` is not an integer"))
                }
                _ => {}
            },
        }
    }
    if let Some(key) = header("idempotency-key") {
        let declared = params.iter().any(|p| p.get("name").and_then(Value::as_str) == Some("Idempotency-Key"));
        if !declared {
            problems.push(format!("{what}: sends Idempotency-Key, which the operation does not declare"));
        }
        if key.trim().is_empty() || key.chars().count() > 128 {
            problems.push(format!(
                "{what}: Idempotency-Key must be 1–128 characters (\"128 character max\"), got {}",
                key.chars().count()
            ));
        }
    }
    match (&sent.body, op.get("requestBody")) {
        (Some(_), None) => problems.push(format!("{what}: sends a body the operation does not take")),
        (None, Some(rb)) if rb.get("required").and_then(Value::as_bool) == Some(true) => {
            problems.push(format!("{what}: the operation requires a body"));
        }
        (Some(body), Some(rb)) => {
            let rb = resolve(root, rb);
            match rb.get("content").and_then(|c| c.get("application/json")).and_then(|c| c.get("schema")) {
                None => problems.push(format!("{what}: the operation takes no JSON body")),
                Some(schema) => {
                    let mut walk = Walk { root, problems: Vec::new() };
                    walk.value(schema, body, "");
                    problems.extend(walk.problems.into_iter().map(|p| format!("{what}: {p}")));
                }
            }
        }
        _ => {}
    }
    problems
}

/// The request as a [`Sent`] (its path relative to `/api.xro/2.0`).
pub fn sent_of(req: &wiremock::Request) -> Sent {
    let path = req.url.path();
    let path = path.split_once("/api.xro/2.0").map_or(path, |(_, rest)| rest).to_owned();
    Sent {
        method: req.method.to_string(),
        path,
        query: req.url.query_pairs().into_owned().collect(),
        headers: req
            .headers
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_ascii_lowercase(), v.to_owned())))
            .collect(),
        body: (!req.body.is_empty()).then(|| serde_json::from_slice(&req.body).unwrap_or(Value::Null)),
    }
}

/// Panics, listing every problem, unless the request satisfies the spec. Token requests
/// (`/connect/token`) are not in the spec and are skipped.
#[track_caller]
pub fn assert_request_valid(req: &wiremock::Request) {
    if req.url.path().ends_with("/connect/token") {
        return;
    }
    let sent = sent_of(req);
    let problems = check(&sent);
    assert!(
        problems.is_empty(),
        "{} problem(s) with {} {} against Xero's spec:\n  - {}\nbody: {}",
        problems.len(),
        sent.method,
        sent.path,
        problems.join("\n  - "),
        sent.body.map(|b| serde_json::to_string_pretty(&b).unwrap_or_default()).unwrap_or_default()
    );
}

struct Walk<'a> {
    root: &'a Value,
    problems: Vec<String>,
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

fn shown(path: &str) -> &str {
    if path.is_empty() { "(body)" } else { path }
}

fn is_date(s: &str) -> bool {
    s.len() == 10 && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

impl Walk<'_> {
    fn push(&mut self, path: &str, p: String) {
        self.problems.push(format!("{}: {p}", shown(path)));
    }

    fn value(&mut self, schema: &Value, v: &Value, path: &str) {
        let schema = resolve(self.root, schema);
        if v.is_null() {
            self.push(path, "null (the spec declares no nullable: omit the property)".into());
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(v)
        {
            self.push(path, format!("{v} is not one of the spec's enum values"));
        }
        let ty = schema.get("type").and_then(Value::as_str).or_else(|| {
            if schema.get("properties").is_some() {
                Some("object")
            } else if schema.get("items").is_some() {
                Some("array")
            } else {
                None
            }
        });
        match ty {
            Some("string") => match v.as_str() {
                None => self.push(path, format!("expected string, found {v}")),
                Some(s) => {
                    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                        && s.chars().count() as u64 > max
                    {
                        self.push(
                            path,
                            format!("{} characters, more than the {max} allowed (maxLength)", s.chars().count()),
                        );
                    }
                    if schema.get("x-is-msdate").and_then(Value::as_bool) == Some(true) && !is_date(s) {
                        self.push(path, format!("`{s}` is not a date sent as YYYY-MM-DD"));
                    }
                    if schema.get("format").and_then(Value::as_str) == Some("uuid") && uuid::Uuid::parse_str(s).is_err()
                    {
                        self.push(path, format!("`{s}` is not a uuid (format: uuid)"));
                    }
                }
            },
            Some("number") if !v.is_number() => self.push(path, format!("expected a JSON number, found {v}")),
            Some("integer") if !(v.is_i64() || v.is_u64()) => {
                self.push(path, format!("expected an integer, found {v}"))
            }
            Some("boolean") if !v.is_boolean() => self.push(path, format!("expected a boolean, found {v}")),
            Some("array") => match v.as_array() {
                None => self.push(path, format!("expected an array, found {v}")),
                Some(items) => {
                    let item = schema.get("items").cloned().unwrap_or(Value::Null);
                    for (i, x) in items.iter().enumerate() {
                        if item.is_object() {
                            self.value(&item, x, &format!("{path}[{i}]"));
                        }
                    }
                }
            },
            Some("object") => match v.as_object() {
                None => self.push(path, format!("expected an object, found {v}")),
                Some(o) => self.object(schema, o, path),
            },
            _ => {}
        }
    }

    fn object(&mut self, schema: &Value, o: &Map<String, Value>, path: &str) {
        let empty = Map::new();
        let props = schema.get("properties").and_then(Value::as_object).unwrap_or(&empty);
        let required: Vec<&str> =
            schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        for r in &required {
            if !o.contains_key(*r) {
                self.push(&child(path, r), "required property is missing".into());
            }
        }
        for (k, v) in o {
            let p = child(path, k);
            match props.get(k) {
                None => self.push(&p, "unknown property: not declared in the spec's schema".into()),
                Some(prop) => {
                    if prop.get("readOnly").and_then(Value::as_bool) == Some(true) {
                        self.push(&p, "readOnly: Xero owns this value, a request must not send it".into());
                    }
                    let prop = prop.clone();
                    self.value(&prop, v, &p);
                }
            }
        }
    }
}

#[cfg(test)]
mod checker_tests {}
