//! The summary: one row per scenario, echoed to stderr as it is decided, printed as one table at
//! the end.

use std::time::Duration;

use crate::stats::secs;

/// One line of the summary.
pub struct Row {
    pub scenario: &'static str,
    pub pass: bool,
    pub figures: String,
}

/// A scenario's row that also fails when the daemon did not survive it.
pub fn row_alive(scenario: &'static str, pass: bool, figures: String, alive: bool) -> Row {
    if alive {
        row(scenario, pass, figures)
    } else {
        row(scenario, false, format!("the daemon died; {figures}"))
    }
}

pub fn row(scenario: &'static str, pass: bool, figures: impl Into<String>) -> Row {
    let figures = figures.into();
    eprintln!(
        "e2e: {scenario}: {} {figures}",
        if pass { "pass" } else { "FAIL" }
    );
    Row {
        scenario,
        pass,
        figures,
    }
}

/// The row of a scenario `--skip` left out: a skipped scenario fails the run.
pub fn skipped(scenario: &'static str) -> Row {
    row(scenario, false, "skipped (--skip)")
}

pub fn print_summary(rows: &[Row], mode: &str, took: Duration) {
    let width = rows
        .iter()
        .map(|r| r.scenario.len())
        .max()
        .unwrap_or(8)
        .max(8);
    println!();
    println!("tokenbot e2e summary ({mode} mode, {})", secs(took));
    println!("| {:width$} | result | figures", "scenario");
    println!("| {:-<width$} | ------ | -------", "");
    for r in rows {
        println!(
            "| {:width$} | {:6} | {}",
            r.scenario,
            if r.pass { "pass" } else { "FAIL" },
            r.figures
        );
    }
    let failed = rows.iter().filter(|r| !r.pass).count();
    println!("{} passed, {} failed", rows.len() - failed, failed);
}
