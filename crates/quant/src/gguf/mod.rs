//! GGUF (placeholder while the reader is written).
