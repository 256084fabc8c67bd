//! linattn-adapters (being built).
