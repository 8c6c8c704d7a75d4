//! The public conformance suite (filled in by the provider work).
