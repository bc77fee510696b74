//! Tekton's own examples (`INDEX.tsv` in `../shared/conformance/tekton-examples`, never
//! copied here) run through `tenon` and compared with the outcome upstream expects; shared by
//! `conformance_run.rs` (the local executor) and `conformance_k8s.rs` (pods), which publish
//! their pass tables side by side in this folder.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common;

pub fn corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("TENON_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_root().join("../shared/conformance/tekton-examples"));
    dir.join("INDEX.tsv").is_file().then_some(dir)
}

#[derive(Debug, Clone)]
pub struct Row {
    pub path: String,
    pub local_runnable: bool,
    pub needs: String,
    pub expected: String,
    pub notes: String,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub row: Row,
    pub parsed: bool,
    pub ran: bool,
    pub got: String,
    pub verdict: &'static str,
    pub why: String,
}

/// Validate and run one file in a scratch copy, `flags` added to `tenon run` (the executor's).
pub fn run_file(dir: &Path, row: &Row, flags: &[String]) -> Outcome {
    let scratch = tempfile::tempdir().unwrap();
    let file = dir.join(&row.path);
    let store = scratch.path().join("store");
    let mut o = Outcome {
        row: row.clone(),
        parsed: false,
        ran: false,
        got: String::new(),
        verdict: "fail",
        why: String::new(),
    };
    let validate = common::tenon(&["validate", file.to_str().unwrap(), "--output", "json"], &store);
    let vjson: serde_json::Value = serde_json::from_str(&validate.stdout).unwrap_or_default();
    o.parsed = validate.code == 0;
    if validate.code != 0 {
        let errors = vjson["errors"].as_array().cloned().unwrap_or_default();
        let first = errors.first().map(|e| e["message"].as_str().unwrap_or("").to_string()).unwrap_or_default();
        if !errors.is_empty() && errors.iter().all(|e| e["message"].as_str().unwrap_or("").starts_with("unsupported")) {
            o.verdict = "unsupported";
            o.why = first;
        } else if row.expected == "expected-failure" {
            o.verdict = "pass";
            o.got = "rejected".into();
            o.why = format!("rejected at validation: {first}");
        } else {
            o.why = format!("validation: {first}");
        }
        return o;
    }
    // INDEX marks files blocked only by image entrypoints as not runnable; tenon knows
    // the entrypoints of common images, so it runs them too
    let emulated = !row.needs.is_empty() && row.needs.split(',').all(|n| n == "image-entrypoint");
    if !row.local_runnable && !emulated {
        o.verdict = "unsupported";
        o.why = format!("needs {}", if row.needs.is_empty() { "a cluster".into() } else { row.needs.clone() });
        return o;
    }
    // run in a scratch copy of the file's directory context: just the file
    let work = scratch.path().join("repo");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::copy(&file, work.join("example.yaml")).unwrap();
    let out = scratch.path().join("out.json");
    let mut child = Command::new(common::bin())
        .args(["run", work.to_str().unwrap(), "--output", "json", "-q", "--no-cache"])
        .args(flags)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", scratch.path())
        .env("TENON_STORE", &store)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            o.why = "did not finish within 180 s".into();
            return o;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    o.ran = true;
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap_or_default()).unwrap_or_default();
    let runs = report["runs"].as_array().cloned().unwrap_or_default();
    o.got = runs
        .iter()
        .map(|r| format!("{}/{}", r["status"].as_str().unwrap_or("?"), r["reason"].as_str().unwrap_or("?")))
        .collect::<Vec<_>>()
        .join(" ");
    let all =
        |reason: &str| !runs.is_empty() && runs.iter().all(|r| r["status"] == "Succeeded" && r["reason"] == reason);
    let completed = !runs.is_empty()
        && runs.iter().all(|r| r["status"] == "Succeeded")
        && runs.iter().any(|r| r["reason"] == "Completed");
    // no-ci files fail upstream only for cluster reasons; where INDEX notes say they
    // would succeed semantically (LimitRange, unschedulable nodeSelector), success is right
    let would_succeed = row.notes.contains("would succeed") || row.notes.contains("it succeeds");
    let ok = match row.expected.as_str() {
        "success" => all("Succeeded"),
        "success:Completed" => completed,
        "expected-failure" if would_succeed => all("Succeeded"),
        "expected-failure" => code != 0,
        _ => false,
    };
    if ok {
        o.verdict = "pass";
    } else {
        let failed: Vec<String> = runs
            .iter()
            .flat_map(|r| r["tasks"].as_array().cloned().unwrap_or_default())
            .filter(|t| t["status"] == "Failed" || t["status"] == "TimedOut")
            .map(|t| {
                format!(
                    "{}: {}",
                    t["name"].as_str().unwrap_or(""),
                    t["message"].as_str().unwrap_or("").lines().next().unwrap_or("")
                )
            })
            .collect();
        o.why = if failed.is_empty() {
            runs.first()
                .map(|r| r["message"].as_str().unwrap_or("").to_string())
                .unwrap_or_else(|| format!("exit {code}, no report"))
        } else {
            failed.join("; ")
        };
        if !row.needs.is_empty() {
            o.why = format!("{} (needs: {})", o.why, row.needs);
        }
    }
    o
}

/// Every row of the corpus's INDEX.
pub fn rows(dir: &Path) -> Vec<Row> {
    let index = std::fs::read_to_string(dir.join("INDEX.tsv")).unwrap();
    let rows: Vec<Row> = index
        .lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            Row {
                path: c[0].into(),
                local_runnable: c[4] == "yes",
                needs: c[5].into(),
                expected: c[6].into(),
                notes: c.get(7).copied().unwrap_or("").into(),
            }
        })
        .collect();
    assert_eq!(rows.len(), 152, "the corpus INDEX lists 152 files");
    rows
}

/// `run` over `rows`, `threads` at a time; the outcomes sorted by path.
pub fn run_all(rows: Vec<Row>, threads: usize, run: impl Fn(&Row) -> Outcome + Sync) -> Vec<Outcome> {
    let queue = Mutex::new(rows);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let Some(row) = queue.lock().unwrap().pop() else { break };
                let o = run(&row);
                results.lock().unwrap().push(o);
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by(|a, b| a.row.path.cmp(&b.row.path));
    results
}

/// The table's headline: counts of pass, unsupported and fail, and the INDEX's
/// locally runnable files' pass rate.
pub fn summary(results: &[Outcome]) -> String {
    let runnable: Vec<&Outcome> = results.iter().filter(|o| o.row.local_runnable).collect();
    let runnable_pass = runnable.iter().filter(|o| o.verdict == "pass").count();
    let pass = results.iter().filter(|o| o.verdict == "pass").count();
    let extra = results.iter().filter(|o| !o.row.local_runnable && o.ran).count();
    let extra_pass = results.iter().filter(|o| !o.row.local_runnable && o.ran && o.verdict == "pass").count();
    let unsupported = results.iter().filter(|o| o.verdict == "unsupported").count();
    let parsed = results.iter().filter(|o| o.parsed || o.verdict == "unsupported").count();
    format!(
        "{} files: {} parse or are rejected as unsupported; {} pass, {} unsupported, {} fail; local_runnable=yes: {}/{} pass ({:.1}%)",
        results.len(),
        parsed,
        pass,
        unsupported,
        results.len() - pass - unsupported,
        runnable_pass,
        runnable.len(),
        100.0 * runnable_pass as f64 / runnable.len().max(1) as f64
    ) + &format!("; also ran {extra} files INDEX marks blocked only by image entrypoints: {extra_pass} pass")
}

/// With `TENON_WRITE_CONFORMANCE` set, write `tests/conformance/{results_md}` (the table) and
/// `{expected}` (the passing files); then fail if a file listed in `{expected}` does not pass
/// (or it lists fewer than `min_listed`).
pub fn publish_and_check(
    results: &[Outcome],
    title: &str,
    command: &str,
    summary: &str,
    results_md: &str,
    expected: &str,
    min_listed: usize,
) {
    let folder = common::repo_root().join("tests/conformance");
    let expected_file = folder.join(expected);
    if std::env::var_os("TENON_WRITE_CONFORMANCE").is_some() {
        let mut md = format!("# Tekton conformance: {title}\n\n");
        md.push_str(&format!("Generated by `{command}` "));
        md.push_str(
            "from `../shared/conformance/tekton-examples` (Tekton's own examples, Apache-2.0, not copied here).\n\n",
        );
        md.push_str(&format!("**{summary}**\n\n"));
        md.push_str("| file | parsed | ran | outcome | expected | verdict | why |\n|---|---|---|---|---|---|---|\n");
        for o in results {
            md.push_str(&format!(
                "| `{}` | {} | {} | {} | {} | {} | {} |\n",
                o.row.path,
                if o.parsed { "yes" } else { "no" },
                if o.ran { "yes" } else { "no" },
                if o.got.is_empty() { "-" } else { &o.got },
                o.row.expected,
                o.verdict,
                o.why.replace('|', "\\|").replace('\n', " ")
            ));
        }
        std::fs::write(folder.join(results_md), md).unwrap();
        let passing: Vec<&str> = results.iter().filter(|o| o.verdict == "pass").map(|o| o.row.path.as_str()).collect();
        std::fs::write(&expected_file, passing.join("\n") + "\n").unwrap();
        eprintln!("wrote tests/conformance/{results_md} and {expected}");
    }
    let listed: BTreeSet<String> = std::fs::read_to_string(&expected_file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect();
    assert!(listed.len() >= min_listed, "{expected} lists only {} files", listed.len());
    let regressions: Vec<String> = results
        .iter()
        .filter(|o| listed.contains(&o.row.path) && o.verdict != "pass")
        .map(|o| format!("{}: {} ({}; expected {})", o.row.path, o.verdict, o.why, o.row.expected))
        .collect();
    assert!(regressions.is_empty(), "files that passed before no longer pass:\n{}", regressions.join("\n"));
}
