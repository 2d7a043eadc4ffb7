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

#[path = "hostile/wire.rs"]
mod wire;

#[path = "hostile/accounts.rs"]
mod accounts;
#[path = "hostile/agent_escape.rs"]
mod agent_escape;
#[path = "hostile/agents.rs"]
mod agents;
#[path = "hostile/connections.rs"]
mod connections;
#[path = "hostile/guessing.rs"]
mod guessing;
#[path = "hostile/output.rs"]
mod output;
#[path = "hostile/requests.rs"]
mod requests;

use figures::Case;

fn main() {
    let cases: Vec<Case> = [
        requests::CASES,
        output::CASES,
        connections::CASES,
        agents::CASES,
        accounts::CASES,
        guessing::CASES,
        agent_escape::CASES,
    ]
    .into_iter()
    .flatten()
    .copied()
    .collect();
    figures::run(cases);
}
