//! The `byte8-ledger` command (built out in the engine work).

fn main() {}
