//! CUDA launches of the gated linear-attention kernels (not yet written).
