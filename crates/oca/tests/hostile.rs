//! The hostile-input suite: a hostile tenant and a hostile host try to alter, flood,
//! hoard and escape, against a real server and real agents on 127.0.0.1. Every case
//! is a regression test of a weakness found so (issue 9), and each asserts the
//! behaviour that holds now.
//!
//! It runs without the standard test harness so that it can print its figures at the
//! end: requests tried, 5xx answers, server panics and the servers' peak memory.
//! `cargo test --test hostile [-- FILTER]` runs the cases whose name contains FILTER.

mod common;

#[path = "hostile/figures.rs"]
mod figures;

#[path = "hostile/agent_escape.rs"]
mod agent_escape;

use figures::Case;

fn main() {
    let cases: Vec<Case> = []
        .into_iter()
        .chain(agent_escape::CASES.iter().copied())
        .collect();
    figures::run(cases);
}
