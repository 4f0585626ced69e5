//! botocore's own EC2 protocol test cases, driven through ec2d's generic query decoder and
//! XML encoder (over shapes generated from the cases by `codegen --protocol-tests`).
//!
//! Inputs: each serialized body must decode to the case's params (compared here).
//! Outputs: each result is encoded to XML, and botocore's parser must read it back as the
//! case's result; that comparison runs in Python (`conformance/protocol_cases.py
//! check-output`), which this test invokes.
//!
//! The cases are exported from the pinned botocore sdist by
//! `conformance/protocol_cases.py export`; the README's test command does that first.

#[path = "protocol/generated.rs"]
mod generated;

use std::path::{Path, PathBuf};

use base64::Engine;
use ec2d::protocol::query::QueryNode;
use ec2d::protocol::types::Timestamp;
use serde_json::{Map, Value};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cases_dir() -> PathBuf {
    std::env::var_os("EC2D_PROTOCOL_CASES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("conformance/.cache/protocol"))
}

/// Loads a case file, or explains loudly why the cases are missing.
fn load(name: &str) -> Option<Vec<Value>> {
    let path = cases_dir().join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).ok(),
        Err(_) => {
            if std::env::var_os("EC2D_REQUIRE_PROTOCOL_CASES").is_some() {
                panic!("protocol cases missing at {}", path.display());
            }
            eprintln!(
                "\n*** SKIPPED: botocore protocol cases not found at {}.\n*** Run `conformance/run` (or `conformance/.venv/bin/python conformance/protocol_cases.py export`) first.\n",
                path.display()
            );
            None
        }
    }
}

fn shape_type<'a>(shapes: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    shapes.get(name)?.get("type")?.as_str()
}

/// Walks a value along its shape and lets `leaf` rewrite every scalar by its shape type.
fn walk(v: &mut Value, shape: &str, shapes: &Map<String, Value>, leaf: &dyn Fn(&mut Value, &str)) {
    let Some(def) = shapes.get(shape) else { return };
    let target = |key: &str| {
        def.get(key)
            .and_then(|m| m.get("shape"))
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    match shape_type(shapes, shape) {
        Some("structure") => {
            let Some(members) = def.get("members").and_then(Value::as_object) else {
                return;
            };
            for (k, val) in v.as_object_mut().into_iter().flatten() {
                if let Some(s) = members
                    .get(k)
                    .and_then(|m| m.get("shape"))
                    .and_then(Value::as_str)
                {
                    walk(val, s, shapes, leaf);
                }
            }
        }
        Some("list") => {
            for item in v.as_array_mut().into_iter().flatten() {
                walk(item, target("member"), shapes, leaf);
            }
        }
        Some("map") => {
            for item in v.as_object_mut().into_iter().flat_map(|o| o.values_mut()) {
                walk(item, target("value"), shapes, leaf);
            }
        }
        Some(t) => leaf(v, t),
        None => {}
    }
}

/// Rewrites what our types serialise to into the case files' normal form: blobs as UTF-8
/// text, timestamps as epoch seconds.
fn normalise(v: &mut Value, shape: &str, shapes: &Map<String, Value>) {
    walk(v, shape, shapes, &|v, t| match t {
        "blob" => {
            if let Some(s) = v.as_str() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .unwrap_or_default();
                *v = Value::String(String::from_utf8_lossy(&bytes).into_owned());
            }
        }
        "timestamp" => {
            if let Some(t) = v.as_str().and_then(Timestamp::parse) {
                *v = serde_json::json!(t.0.timestamp_millis() as f64 / 1000.0);
            }
        }
        _ => {}
    });
}

/// The reverse, for results to encode: blob text to base64.
fn denormalise(v: &mut Value, shape: &str, shapes: &Map<String, Value>) {
    walk(v, shape, shapes, &|v, t| {
        if t == "blob"
            && let Some(s) = v.as_str()
        {
            *v = Value::String(base64::engine::general_purpose::STANDARD.encode(s.as_bytes()));
        }
    });
}

/// Equality with numbers compared by value (5 == 5.0). serde_json has no NaN or infinity,
/// so such floats serialise as null; they match the case files' "NaN"/"Infinity" spellings
/// here, and their parsing is unit-tested in `protocol::query`.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Null, Value::String(s)) => matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity"),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        // An empty list is sent as nothing at all, so a server sees it as absent.
        (Value::Object(x), Value::Object(y)) => {
            let empty = |v: &Value| v.as_array().is_some_and(Vec::is_empty);
            x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
                && y.iter().all(|(k, w)| x.contains_key(k) || empty(w))
        }
        _ => a == b,
    }
}

fn module_of(id: &str, dir: &str) -> Option<usize> {
    generated::CASES
        .iter()
        .find(|(c, d, _)| *c == id && *d == dir)
        .map(|(_, _, m)| *m)
}

#[test]
fn input_cases_decode_to_their_params() {
    let Some(cases) = load("ec2-input-cases.json") else {
        return;
    };
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in &cases {
        let id = case["id"].as_str().unwrap_or_default();
        if !case["skip_decode"].is_null() {
            eprintln!(
                "input case {id}: not applicable to a server: {}",
                case["skip_decode"]
            );
            continue;
        }
        let Some(shape) = case["input_shape"].as_str() else {
            checked += 1;
            continue;
        };
        let shapes = case["shapes"].as_object().cloned().unwrap_or_default();
        let body = case["body"].as_str().unwrap_or_default();
        let pairs: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let mut node = QueryNode::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        node.take_value("Action");
        node.take_value("Version");
        let module = module_of(id, "input").expect("case is in the generated table");
        match generated::decode(module, shape, node) {
            Ok(mut got) => {
                normalise(&mut got, shape, &shapes);
                if same(&got, &case["expected_decoded"]) {
                    checked += 1;
                } else {
                    failures.push(format!(
                        "{id}: decoded {got} but expected {}",
                        case["expected_decoded"]
                    ));
                }
            }
            Err(e) => failures.push(format!("{id}: decode failed: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "input cases failed:\n{}",
        failures.join("\n")
    );
    assert!(checked > 30, "only {checked} input cases checked");
    eprintln!("{checked} botocore input cases decoded to their params");
}

/// Results that serde_json cannot hold (non-finite floats) are encoded by hand-built
/// values in `protocol::xml`'s unit tests instead.
fn has_non_finite(v: &Value) -> bool {
    match v {
        Value::String(s) => matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity"),
        Value::Array(a) => a.iter().any(has_non_finite),
        Value::Object(o) => o.values().any(has_non_finite),
        _ => false,
    }
}

#[test]
fn output_cases_encode_to_what_botocore_parses_back() {
    let Some(cases) = load("ec2-output-cases.json") else {
        return;
    };
    let mut produced = Map::new();
    for case in &cases {
        let id = case["id"].as_str().unwrap_or_default();
        let op = case["operation"].as_str().unwrap_or("Operation");
        let shapes = case["shapes"].as_object().cloned().unwrap_or_default();
        if case["botocore_ignored"] == true {
            eprintln!("output case {id}: botocore's own parser fails it (its ignore list)");
            continue;
        }
        if case["kind"] == "error" {
            // EC2's model defines no exception shapes, so ec2d's envelope carries only Code
            // and Message; cases with modelled error members do not apply.
            let extra = case["error"].as_object().is_some_and(|e| {
                e.keys()
                    .any(|k| !matches!(k.as_str(), "Error" | "ResponseMetadata" | "Message"))
            });
            if extra {
                eprintln!("output case {id}: modelled error members do not exist in EC2's model");
                continue;
            }
            let xml = ec2d::protocol::xml::error(
                case["error_code"].as_str().unwrap_or_default(),
                case["error_message"].as_str().unwrap_or_default(),
                "requestid",
            );
            produced.insert(
                id.into(),
                serde_json::json!({"status": case["status_code"], "body": xml}),
            );
            continue;
        }
        let mut result = case["result"].clone();
        if has_non_finite(&result) {
            eprintln!(
                "output case {id}: non-finite floats are covered by protocol::xml unit tests"
            );
            continue;
        }
        let members = match case["output_shape"].as_str() {
            Some(shape) => {
                denormalise(&mut result, shape, &shapes);
                let module = module_of(id, "output").expect("case is in the generated table");
                generated::encode(module, shape, result)
                    .unwrap_or_else(|e| panic!("{id}: encode failed: {e}"))
            }
            None => String::new(),
        };
        let xml = format!(
            "<{op}Response xmlns=\"{}\"><requestId>requestid</requestId>{members}</{op}Response>",
            ec2d::protocol::xml::NAMESPACE
        );
        produced.insert(id.into(), Value::String(xml));
    }
    let out = root().join("target/protocol-output-produced.json");
    std::fs::write(&out, serde_json::to_string_pretty(&produced).expect("json"))
        .expect("write produced");

    let python = [
        std::env::var("EC2D_PYTHON").ok(),
        Some(
            root()
                .join("conformance/.venv/bin/python")
                .display()
                .to_string(),
        ),
    ]
    .into_iter()
    .flatten()
    .find(|p| Path::new(p).exists());
    let Some(python) = python else {
        eprintln!(
            "\n*** SKIPPED (botocore check): no conformance venv; encoded {} cases to {} without botocore parsing them.\n*** Run `conformance/run` to check them.\n",
            produced.len(),
            out.display()
        );
        return;
    };
    let status = std::process::Command::new(&python)
        .arg(root().join("conformance/protocol_cases.py"))
        .arg("check-output")
        .arg(&out)
        .arg("--allow-missing")
        .status()
        .expect("run the botocore checker");
    assert!(
        status.success(),
        "botocore did not parse ec2d's XML back to the expected results"
    );
}
