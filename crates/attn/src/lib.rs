//! linattn-attn: chunked linear attention (being built).

pub mod layout;
