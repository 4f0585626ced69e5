//! Generates `server/src/model/` from botocore's EC2 model (protocol `ec2`) and IAM model
//! (protocol `query`); the protocol is read from the model's metadata.
//!
//! Usage:
//!   `codegen --model service-2.json[.gz] --ops codegen/operations.txt --out server/src/model/generated.rs [--check]`
//!   `codegen --model iam/service-2.json[.gz] --ops codegen/iam-operations.txt --out server/src/model/iam_generated.rs`
//!   `codegen --protocol-tests INPUT_CASES.json OUTPUT_CASES.json --out FILE [--check]`
//!   (the case files are exported by `conformance/protocol_cases.py export`)
//!
//! With `--check` nothing is written; the exit code says whether the committed file is
//! up to date with the model, so a test can fail when the two drift apart.

mod emit;
mod naming;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

struct Args {
    model: Option<PathBuf>,
    protocol_tests: Option<(PathBuf, PathBuf)>,
    ops: Option<PathBuf>,
    out: PathBuf,
    check: bool,
    all_shapes: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut model = None;
    let mut ops = None;
    let mut out = None;
    let mut check = false;
    let mut all_shapes = false;
    let mut protocol_tests = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--model" => model = it.next().map(PathBuf::from),
            "--ops" => ops = it.next().map(PathBuf::from),
            "--out" => out = it.next().map(PathBuf::from),
            "--check" => check = true,
            "--all-shapes" => all_shapes = true,
            "--protocol-tests" => {
                let i = it.next().ok_or("--protocol-tests needs two files")?;
                let o = it.next().ok_or("--protocol-tests needs two files")?;
                protocol_tests = Some((PathBuf::from(i), PathBuf::from(o)));
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        model,
        protocol_tests,
        ops,
        out: out.ok_or("--out is required")?,
        check,
        all_shapes,
    })
}

fn read_model(path: &PathBuf) -> Result<Value, String> {
    let raw = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut s = String::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_string(&mut s)
            .map_err(|e| format!("gunzip {}: {e}", path.display()))?;
        s
    } else {
        String::from_utf8(raw).map_err(|e| e.to_string())?
    };
    serde_json::from_str(&text).map_err(|e| format!("parse {}: {e}", path.display()))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("codegen: {e}");
            return ExitCode::from(2);
        }
    };
    let code = match (&args.protocol_tests, &args.model) {
        (Some((i, o)), _) => read_model(i)
            .and_then(|i| read_model(o).map(|o| (i, o)))
            .and_then(|(i, o)| emit::generate_protocol_tests(&i, &o)),
        (None, Some(m)) => read_model(m).and_then(|model| model_code(&model, &args)),
        (None, None) => Err("--model or --protocol-tests is required".to_string()),
    };
    let code = match code {
        Ok(c) => c,
        Err(e) => {
            eprintln!("codegen: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        let current = std::fs::read_to_string(&args.out).unwrap_or_default();
        if current != code {
            eprintln!(
                "codegen: {} is stale against its model; run codegen/run",
                args.out.display()
            );
            return ExitCode::from(1);
        }
        eprintln!("codegen: {} is up to date", args.out.display());
        return ExitCode::SUCCESS;
    }
    if let Err(e) = std::fs::write(&args.out, code) {
        eprintln!("codegen: write {}: {e}", args.out.display());
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

fn model_code(model: &Value, args: &Args) -> Result<String, String> {
    let selected: BTreeSet<String> = match &args.ops {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| format!("{}: {e}", p.display()))?
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
            .filter(|l| !l.is_empty())
            .collect(),
        None => BTreeSet::new(),
    };
    let ops_file = args
        .ops
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the operations list".to_string());
    emit::generate(model, &selected, args.all_shapes, &ops_file)
}
