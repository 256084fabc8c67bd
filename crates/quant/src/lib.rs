//! linattn-quant (being built).
