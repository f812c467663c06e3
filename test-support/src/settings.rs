//! A service's settings for a test, as zero2prod's `spawn_app` builds its own: from the real
//! loader (the binary's clap definitions, so every default is the one `--help` shows), with
//! what the test must set given on the command line, then fields a test builds itself (its
//! database, its broker) assigned. No field is restated here, so a new setting needs no edit.

use clap::{Args, CommandFactory, FromArgMatches};

/// `S` (a service's `Settings`) parsed from `args`, as if they followed the binary's name. The
/// environment is ignored: a developer's `DATABASE_URL` or `KAFKA_BROKERS` never reaches a test.
/// Panics with clap's message when `args` do not parse (a test's mistake).
pub fn settings<S: CommandFactory + FromArgMatches>(args: &[&str]) -> S {
    parse(S::command(), args)
}

/// The same for a settings group (`#[command(flatten)]`-ed into a service's settings).
pub fn settings_group<A: Args>(args: &[&str]) -> A {
    parse(A::augment_args(clap::Command::new("test")), args)
}

fn parse<T: FromArgMatches>(cmd: clap::Command, args: &[&str]) -> T {
    let name = cmd.get_name().to_owned();
    kollus_common::settings::parse_ignoring_env(
        cmd,
        std::iter::once(name.as_str()).chain(args.iter().copied()),
    )
    .unwrap_or_else(|e| panic!("test settings {args:?}: {e}"))
}

/// `--listen-addr` on an ephemeral port: every test's service listens on a port of its own.
pub const EPHEMERAL_PORT: &str = "--listen-addr=127.0.0.1:0";
