#![allow(dead_code)]
//! The hostile suite's harness: runs the cases one after another, catches their
//! panics, and prints what the suite did and what the servers went through.

use crate::common::tally;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Instant;

/// One case: its name and its body (which panics on failure).
pub type Case = (&'static str, fn());

static NOTES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Requests made without the common client (raw sockets): counts them and their
/// 5xx answers (status 0 when none came).
pub fn count_answer(status: u16) {
    tally::answer(status);
}

/// A figure a case measured, printed with the summary (e.g. memory under attack).
pub fn note(text: impl Into<String>) {
    NOTES.lock().unwrap().push(text.into());
}

/// Runs the cases whose name contains the first command-line argument (all without
/// one), prints the figures, and exits non-zero if any case failed or any server
/// panicked.
pub fn run(cases: Vec<Case>) {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, case) in cases {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        let t = Instant::now();
        let outcome = std::panic::catch_unwind(case);
        let secs = t.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => println!("hostile {name} ... ok ({secs:.1} s)"),
            Err(_) => {
                println!("hostile {name} ... FAILED ({secs:.1} s)");
                failed.push(name);
            }
        }
    }
    let panics = tally::SERVER_PANICS.load(Ordering::Relaxed);
    println!();
    println!("hostile-input figures");
    println!("  cases run:          {ran} ({} failed)", failed.len());
    println!(
        "  requests tried:     {}",
        tally::REQUESTS.load(Ordering::Relaxed)
    );
    println!(
        "  5xx / no answer:    {}",
        tally::SERVER_ERRORS.load(Ordering::Relaxed)
    );
    println!("  server panics:      {panics}");
    println!(
        "  servers' peak RSS:  {:.1} MiB (highest of {} servers)",
        tally::PEAK_RSS.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
        tally::SERVERS.load(Ordering::Relaxed)
    );
    for n in NOTES.lock().unwrap().iter() {
        println!("  {n}");
    }
    println!(
        "  time:               {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() || panics > 0 {
        println!("failed: {failed:?}");
        std::process::exit(1);
    }
}
