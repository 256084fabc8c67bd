//! linattn-attn (being built).
