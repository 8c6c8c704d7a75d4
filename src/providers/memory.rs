//! The in-memory reference provider (filled in by the provider work).
