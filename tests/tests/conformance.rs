//! Per-device instantiation of the conformance suite (being built).
