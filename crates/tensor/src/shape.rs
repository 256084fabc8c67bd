//! Shapes: the dimensions of a contiguous row-major tensor, outermost first.

use crate::error::{Error, Result};

/// Dimensions of a tensor, outermost first (row-major, last dimension contiguous).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    pub fn new(dims: impl Into<Vec<usize>>) -> Self {
        Shape(dims.into())
    }

    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// Number of elements (1 for a scalar of rank 0).
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }

    /// Number of elements, or an error if it overflows `usize`.
    pub fn checked_numel(&self) -> Result<usize> {
        self.0
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| Error::InvalidArgument(format!("shape {self} has more elements than fit in usize")))
    }

    /// Size of dimension `i`, with an error naming the shape when out of range.
    pub fn dim(&self, i: usize) -> Result<usize> {
        self.0
            .get(i)
            .copied()
            .ok_or_else(|| Error::InvalidArgument(format!("dimension {i} out of range for shape {self}")))
    }

    /// Size of the last dimension (1 for a scalar).
    pub fn last_dim(&self) -> usize {
        self.0.last().copied().unwrap_or(1)
    }

    /// Product of all dimensions but the last: the number of rows of the 2D view.
    pub fn rows(&self) -> usize {
        match self.0.split_last() {
            Some((_, rest)) => rest.iter().product(),
            None => 1,
        }
    }

    /// Row-major strides in elements.
    pub fn strides(&self) -> Vec<usize> {
        let mut strides = vec![1; self.0.len()];
        for i in (0..self.0.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * self.0[i + 1];
        }
        strides
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

impl std::fmt::Debug for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl From<Vec<usize>> for Shape {
    fn from(v: Vec<usize>) -> Self {
        Shape(v)
    }
}
impl From<&[usize]> for Shape {
    fn from(v: &[usize]) -> Self {
        Shape(v.to_vec())
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(v: [usize; N]) -> Self {
        Shape(v.to_vec())
    }
}
impl From<&Shape> for Shape {
    fn from(s: &Shape) -> Self {
        s.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_and_rows() {
        let s = Shape::new([2, 3, 4]);
        assert_eq!(s.strides(), vec![12, 4, 1]);
        assert_eq!(s.rows(), 6);
        assert_eq!(s.numel(), 24);
        assert_eq!(s.to_string(), "[2, 3, 4]");
        assert_eq!(Shape::new([]).numel(), 1);
    }

    #[test]
    fn overflow_is_an_error() {
        assert!(Shape::new([usize::MAX, 2]).checked_numel().is_err());
    }
}
