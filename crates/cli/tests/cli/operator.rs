//! `byte8-ledger operator add | list | remove`: the password from the environment or stdin
//! (never a flag, never echoed), stored as an argon2id hash that verifies.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use byte8_ledger_core::store::sqlite::SqliteStore;
use byte8_ledger_service::console::{ConsoleStore, password::verify_password};
use secrecy::SecretString;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_byte8-ledger"));
    c.env_remove("BYTE8_OPERATOR_PASSWORD").env_remove("BYTE8_DATABASE_URL").env("RUST_LOG", "error");
    c
}

fn run_with_stdin(mut c: Command, stdin: &str) -> (i32, String, String) {
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test]
async fn an_operator_is_added_from_stdin_or_the_environment_and_only_its_hash_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let state_arg = state.to_str().unwrap();

    // From stdin.
    let mut c = bin();
    c.args(["operator", "add", "alice", "--state", state_arg]);
    let (code, out, err) = run_with_stdin(c, "a long enough password\n");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("operator alice added"), "{out}");
    assert!(!out.contains("a long enough password") && !err.contains("a long enough password"), "never echoed");

    // From the environment; the same name again sets a new password.
    let mut c = bin();
    c.args(["operator", "add", "alice", "--state", state_arg]).env("BYTE8_OPERATOR_PASSWORD", "another long password");
    let (code, out, err) = run_with_stdin(c, "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("password changed"), "{out}");

    // Too short, or a bad name: refused with the rule, exit 2.
    let mut c = bin();
    c.args(["operator", "add", "bob", "--state", state_arg]);
    let (code, _, err) = run_with_stdin(c, "short\n");
    assert_eq!(code, 2);
    assert!(err.contains("password: at least 12 characters"), "{err}");
    let mut c = bin();
    c.args(["operator", "add", "no spaces", "--state", state_arg]);
    let (code, _, err) = run_with_stdin(c, "a long enough password\n");
    assert_eq!(code, 2);
    assert!(err.contains("operator name"), "{err}");
    // There is no password flag.
    let mut c = bin();
    c.args(["operator", "add", "carol", "--password", "a long enough password", "--state", state_arg]);
    let (code, _, _) = run_with_stdin(c, "");
    assert_eq!(code, 2, "no --password option exists");

    let store = SqliteStore::open(&state, None).await.unwrap();
    let hash = store.operator_hash("alice").await.unwrap().expect("stored");
    assert!(hash.expose_secret().starts_with("$argon2id$"));
    assert!(verify_password(&SecretString::from("another long password".to_owned()), Some(&hash)));
    assert!(!verify_password(&SecretString::from("a long enough password".to_owned()), Some(&hash)));
    assert!(store.operator_hash("bob").await.unwrap().is_none());
    drop(store);

    let mut c = bin();
    c.args(["operator", "list", "--state", state_arg]);
    let (code, out, _) = run_with_stdin(c, "");
    assert_eq!(code, 0);
    assert!(out.starts_with("alice  added "), "{out}");
    let mut c = bin();
    c.args(["operator", "remove", "alice", "--state", state_arg]);
    assert_eq!(run_with_stdin(c, "").0, 0);
    let mut c = bin();
    c.args(["operator", "remove", "alice", "--state", state_arg]);
    assert_eq!(run_with_stdin(c, "").0, 1, "no such operator any more");
}
