//! `oca-agent`: the agent binary. Everything is in the `oca-agent` library.

fn main() -> std::process::ExitCode {
    oca_agent::cli_main()
}
