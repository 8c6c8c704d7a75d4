//! `byte8-ledger operator add | list | remove`: who may log in to the service's console
//! (`/console`, [`byte8_ledger_service::console`]).
//!
//! The password is never a flag (a command line is visible in `ps` and kept in shell history):
//! it is read from `BYTE8_OPERATOR_PASSWORD` when set, else from the terminal without echo
//! (asked twice), else from the first line of stdin. Only its argon2id hash is stored.

use std::{
    io::{BufRead as _, IsTerminal as _, Write},
    sync::Arc,
};

use clap::Subcommand;
use secrecy::SecretString;

use super::{
    Failure,
    database::{Database, StoreArgs},
    io, usage,
};
use byte8_ledger_core::clock::{Clock, SystemClock};
use byte8_ledger_service::console::{
    ConsoleStore,
    password::{check_operator_name, check_password, hash_password},
};

/// The environment variable `operator add` reads the password from.
pub(crate) const PASSWORD_ENV: &str = "BYTE8_OPERATOR_PASSWORD";

/// The `operator` sub-commands.
#[derive(Debug, Subcommand)]
pub(crate) enum OperatorCommand {
    /// Add an operator of the console, or set a new password for one (which ends its
    /// sessions). The password (at least 12 characters) comes from BYTE8_OPERATOR_PASSWORD,
    /// else the terminal (not echoed), else the first line of stdin; never from the command
    /// line.
    Add {
        /// Where the state lives.
        #[command(flatten)]
        store: StoreArgs,
        /// The login name (letters, digits, `.`, `_`, `-`, `@`).
        name: String,
    },
    /// List the operators.
    List {
        /// Where the state lives.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove an operator (and end its sessions).
    Remove {
        /// Where the state lives.
        #[command(flatten)]
        store: StoreArgs,
        /// The login name.
        name: String,
    },
}

/// The password of `operator add`: the environment, the terminal, or stdin.
fn read_password() -> Result<SecretString, Failure> {
    if let Ok(p) = std::env::var(PASSWORD_ENV) {
        return Ok(SecretString::from(p));
    }
    if std::io::stdin().is_terminal() {
        let first =
            rpassword::prompt_password("password: ").map_err(|e| usage(format!("cannot read the password: {e}")))?;
        let second =
            rpassword::prompt_password("again: ").map_err(|e| usage(format!("cannot read the password: {e}")))?;
        if first != second {
            return Err(usage("the two passwords differ"));
        }
        return Ok(SecretString::from(first));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| usage(format!("cannot read the password from stdin: {e}")))?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err(usage(format!("no password: set {PASSWORD_ENV} or give it on stdin")));
    }
    Ok(SecretString::from(password))
}

/// Adds (or updates) operator `name` with `password` in `store`; true when new.
pub(crate) async fn add_operator(
    store: &Arc<dyn ConsoleStore>,
    name: &str,
    password: &SecretString,
) -> Result<(String, bool), Failure> {
    let name = check_operator_name(name).map_err(|e| usage(format!("operator {}: {}", e.path, e.rule)))?;
    check_password(password).map_err(|e| usage(format!("{}: {}", e.path, e.rule)))?;
    let password = password.clone();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| Failure { code: 1, message: format!("hashing the password failed: {e}") })??;
    let new = store.put_operator(&name, &hash, SystemClock.now()).await?;
    Ok((name, new))
}

pub(crate) async fn run(command: OperatorCommand, out: &mut dyn Write) -> Result<(), Failure> {
    match command {
        OperatorCommand::Add { store, name } => {
            // The name first: a typo is reported before the password is asked.
            check_operator_name(&name).map_err(|e| usage(format!("operator {}: {}", e.path, e.rule)))?;
            let password = read_password()?;
            let db = Database::open(&store, None).await?;
            let (name, new) = add_operator(&db.console(), &name, &password).await?;
            if new {
                writeln!(out, "operator {name} added: log in at /console of `byte8-ledger serve`").map_err(io)?;
            } else {
                writeln!(out, "operator {name}: password changed; its sessions are ended").map_err(io)?;
            }
            Ok(())
        }
        OperatorCommand::List { store } => {
            let db = Database::open(&store, None).await?;
            let operators = db.console().operators().await?;
            if operators.is_empty() {
                writeln!(out, "no operator in {db}: add one with `byte8-ledger operator add NAME`").map_err(io)?;
            }
            for o in operators {
                writeln!(
                    out,
                    "{}  added {}  password set {}",
                    o.name,
                    o.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    o.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
                .map_err(io)?;
            }
            Ok(())
        }
        OperatorCommand::Remove { store, name } => {
            let db = Database::open(&store, None).await?;
            if db.console().remove_operator(name.trim()).await? {
                writeln!(out, "operator {} removed; its sessions are ended", name.trim()).map_err(io)?;
                Ok(())
            } else {
                Err(Failure { code: 1, message: format!("no operator {} in {db}", name.trim()) })
            }
        }
    }
}
