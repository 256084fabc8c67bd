//! Launch geometry: grids that respect the hardware limits.
//!
//! Limits (all CUDA GPUs since compute capability 3.0): gridDim.x <= 2^31 - 1,
//! gridDim.y and gridDim.z <= 65535, at most 1024 threads per block. Kernels that loop
//! with grid strides take [`grid_capped`] (each dimension clamped to its limit);
//! kernels that map one block per item take [`grid_3d`], which fails instead.

use cudarc::driver::LaunchConfig;

use crate::error::{Error, Result};

/// Largest gridDim.x.
pub const MAX_GRID_X: u32 = i32::MAX as u32;
/// Largest gridDim.y and gridDim.z.
pub const MAX_GRID_YZ: u32 = 65_535;
/// Most threads in one block.
pub const MAX_BLOCK_THREADS: u32 = 1024;

fn check_block(block: (u32, u32, u32)) -> Result<()> {
    let threads = u64::from(block.0) * u64::from(block.1) * u64::from(block.2);
    if threads == 0 || threads > u64::from(MAX_BLOCK_THREADS) || block.2 > 64 {
        return Err(Error::invalid(format!(
            "CUDA block {block:?} has {threads} threads; expected 1 to {MAX_BLOCK_THREADS} (and z <= 64)"
        )));
    }
    Ok(())
}

/// Checks a finished configuration (used before every launch).
pub(crate) fn check_config(config: &LaunchConfig) -> std::result::Result<(), String> {
    let (x, y, z) = config.grid_dim;
    if x == 0 || y == 0 || z == 0 || x > MAX_GRID_X || y > MAX_GRID_YZ || z > MAX_GRID_YZ {
        return Err(format!("grid {:?} is outside 1..=({MAX_GRID_X}, {MAX_GRID_YZ}, {MAX_GRID_YZ})", config.grid_dim));
    }
    check_block(config.block_dim).map_err(|e| e.to_string())
}

/// Exactly `blocks` blocks of `block` threads; fails when a dimension exceeds its limit
/// or is zero.
pub fn grid_3d(blocks: (u64, u64, u64), block: (u32, u32, u32), shared_mem_bytes: u32) -> Result<LaunchConfig> {
    check_block(block)?;
    let limits = [u64::from(MAX_GRID_X), u64::from(MAX_GRID_YZ), u64::from(MAX_GRID_YZ)];
    let wanted = [blocks.0, blocks.1, blocks.2];
    for (axis, (&n, &limit)) in ["x", "y", "z"].iter().zip(wanted.iter().zip(&limits)) {
        if n == 0 || n > limit {
            return Err(Error::invalid(format!(
                "CUDA grid {blocks:?}: gridDim.{axis} = {n} is outside 1..={limit}; use a grid-stride kernel"
            )));
        }
    }
    Ok(LaunchConfig {
        grid_dim: (blocks.0 as u32, blocks.1 as u32, blocks.2 as u32),
        block_dim: block,
        shared_mem_bytes,
    })
}

/// `blocks` clamped to the limits, for kernels that cover the rest with grid-stride
/// loops. Each dimension must be at least 1.
pub fn grid_capped(blocks: (u64, u64, u64), block: (u32, u32, u32), shared_mem_bytes: u32) -> Result<LaunchConfig> {
    let clamp = |n: u64, limit: u32| n.min(u64::from(limit));
    grid_3d(
        (clamp(blocks.0, MAX_GRID_X), clamp(blocks.1, MAX_GRID_YZ), clamp(blocks.2, MAX_GRID_YZ)),
        block,
        shared_mem_bytes,
    )
}

/// A 1-D grid-stride launch over `items` with `block` threads per block and at most
/// `max_blocks` blocks (e.g. a few waves: 32 x multiprocessors).
pub fn grid_1d(items: u64, block: u32, max_blocks: u64) -> Result<LaunchConfig> {
    if items == 0 {
        return Err(Error::invalid("CUDA launch over 0 items: skip the launch instead"));
    }
    let blocks = items.div_ceil(u64::from(block.max(1))).min(max_blocks.max(1));
    grid_capped((blocks, 1, 1), (block, 1, 1), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_respect_limits() {
        let cfg = grid_capped((10, 100_000, 70_000), (256, 1, 1), 0).unwrap();
        assert_eq!(cfg.grid_dim, (10, MAX_GRID_YZ, MAX_GRID_YZ));
        let err = grid_3d((1, 65_536, 1), (256, 1, 1), 0).unwrap_err().to_string();
        assert!(err.contains("gridDim.y = 65536"), "{err}");
        assert!(grid_3d((1u64 << 31, 1, 1), (32, 1, 1), 0).is_err());
        assert!(grid_3d((0, 1, 1), (32, 1, 1), 0).is_err());
        assert!(grid_3d((1, 1, 1), (2048, 1, 1), 0).is_err());
        assert_eq!(grid_1d(1000, 256, 1 << 20).unwrap().grid_dim, (4, 1, 1));
        assert_eq!(grid_1d(u64::MAX / 2, 256, 4096).unwrap().grid_dim, (4096, 1, 1));
        assert!(grid_1d(0, 256, 10).is_err());
        assert!(
            check_config(&LaunchConfig { grid_dim: (1, 0, 1), block_dim: (32, 1, 1), shared_mem_bytes: 0 }).is_err()
        );
    }
}
