//! Cross-device conformance suite (being built).
