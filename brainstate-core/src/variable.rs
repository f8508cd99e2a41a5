//! [`Variable`]: BrainPy's `bm.Variable` / `bm.TrainVar`.

use crate::dtype::DType;
use crate::state::LoadProblem;
use crate::tensor::{Storable, Tensor, TensorError};
use ndarray::{ArrayViewD, ArrayViewMutD};

/// A mutable state holder, saved and loaded with its node. Its key is `<node name>.<field>`,
/// the field being the struct field that holds it (or a key a hand-written node chooses).
///
/// Assignment keeps the dtype and the shape fixed, except along the batch axis when there is
/// one, as BrainPy's `Variable.value` setter does.
#[derive(Clone, Debug, PartialEq)]
pub struct Variable {
    value: Tensor,
    batch_axis: Option<usize>,
    trainable: bool,
}

impl Variable {
    /// A non-trainable variable without a batch axis (`bm.Variable(value)`).
    pub fn new(value: impl Into<Tensor>) -> Variable {
        Variable {
            value: value.into(),
            batch_axis: None,
            trainable: false,
        }
    }

    /// A trainable variable (`bm.TrainVar(value)`).
    pub fn trainable(value: impl Into<Tensor>) -> Variable {
        Variable {
            value: value.into(),
            batch_axis: None,
            trainable: true,
        }
    }

    /// Sets the batch axis. An axis beyond the value's rank is clamped to none.
    pub fn with_batch_axis(mut self, axis: usize) -> Variable {
        self.batch_axis = (axis < self.value.ndim()).then_some(axis);
        self
    }

    /// The value.
    pub fn value(&self) -> &Tensor {
        &self.value
    }

    /// The dtype of the value.
    pub fn dtype(&self) -> DType {
        self.value.dtype()
    }

    /// The shape of the value.
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    /// The batch axis, if the variable has one.
    pub fn batch_axis(&self) -> Option<usize> {
        self.batch_axis
    }

    /// The batch size (the length of the batch axis), if there is a batch axis.
    pub fn batch_size(&self) -> Option<usize> {
        self.batch_axis.map(|a| self.value.shape()[a])
    }

    /// True for trainable variables (BrainPy's `TrainVar`).
    pub fn is_trainable(&self) -> bool {
        self.trainable
    }

    /// A typed read-only view of the value.
    pub fn array<T: Storable>(&self) -> Result<ArrayViewD<'_, T>, TensorError> {
        self.value.as_array()
    }

    /// A typed mutable view of the value (in-place updates; shape and dtype cannot change).
    pub fn array_mut<T: Storable>(&mut self) -> Result<ArrayViewMutD<'_, T>, TensorError> {
        self.value.as_array_mut()
    }

    /// Checks that `value` may be assigned: same dtype, same shape apart from the batch axis
    /// (whose length must match too unless `adopt_batch`). `key` names the variable in the problem.
    pub fn check(&self, key: &str, value: &Tensor, adopt_batch: bool) -> Result<(), LoadProblem> {
        if value.dtype() != self.dtype() {
            return Err(LoadProblem::Dtype {
                key: key.to_string(),
                expected: self.dtype(),
                found: value.dtype(),
            });
        }
        let (ours, theirs) = (self.shape(), value.shape());
        let shape_problem = || LoadProblem::Shape {
            key: key.to_string(),
            expected: ours.to_vec(),
            found: theirs.to_vec(),
            batch_axis: self.batch_axis,
        };
        if ours.len() != theirs.len() {
            return Err(shape_problem());
        }
        for (axis, (a, b)) in ours.iter().zip(theirs).enumerate() {
            if a == b {
                continue;
            }
            if Some(axis) == self.batch_axis {
                if !adopt_batch {
                    return Err(LoadProblem::BatchSize {
                        key: key.to_string(),
                        expected: *a,
                        found: *b,
                    });
                }
            } else {
                return Err(shape_problem());
            }
        }
        Ok(())
    }

    /// Assigns a new value after [`Variable::check`] (adopting a new batch size).
    pub fn assign(&mut self, value: Tensor) -> Result<(), LoadProblem> {
        self.check("<value>", &value, true)?;
        self.value = value;
        Ok(())
    }

    /// Replaces the value without checks, e.g. when a layer is reset to a new batch size.
    pub fn reset(&mut self, value: Tensor) {
        if let Some(a) = self.batch_axis {
            if a >= value.ndim() {
                self.batch_axis = None;
            }
        }
        self.value = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2};

    #[test]
    fn assignment_checks_dtype_and_shape() {
        let mut v = Variable::new(Array1::<f32>::zeros(10));
        assert!(v.assign(Tensor::from(Array1::<f32>::ones(10))).is_ok());
        assert!(matches!(
            v.assign(Tensor::from(Array1::<f32>::ones(11))),
            Err(LoadProblem::Shape { .. })
        ));
        assert!(matches!(
            v.assign(Tensor::from(Array1::<bool>::from_elem(10, true))),
            Err(LoadProblem::Dtype { .. })
        ));
        assert_eq!(v.array::<f32>().unwrap()[3], 1.0);
    }

    #[test]
    fn batch_axis_is_ignored_or_checked() {
        let v = Variable::new(Array2::<f32>::zeros((32, 10))).with_batch_axis(0);
        let saved = Tensor::from(Array2::<f32>::zeros((256, 10)));
        assert!(v.check("Lif0.V", &saved, true).is_ok());
        assert_eq!(
            v.check("Lif0.V", &saved, false),
            Err(LoadProblem::BatchSize {
                key: "Lif0.V".into(),
                expected: 32,
                found: 256
            })
        );
        let wrong = Tensor::from(Array2::<f32>::zeros((256, 11)));
        assert!(matches!(
            v.check("Lif0.V", &wrong, true),
            Err(LoadProblem::Shape { .. })
        ));
        assert_eq!(v.batch_size(), Some(32));
    }
}
