//! Keras' mixed precision (`keras.mixed_precision`): dtype policies.
//!
//! Under `mixed_bfloat16` a layer keeps its variables (and the optimizer its state) in f32
//! and computes in bf16: kandle's [`Conv2D`] and [`Dense`] round their input, their kernel
//! and, backward, their output gradient to bf16, sum the products in f32 (on Intel AMX tiles
//! where the CPU has them, see [`crate::kernels::amx_available`]) and round their output to
//! bf16. The loss, the metrics and the weight gradients stay f32 (Keras rounds the weight
//! gradients to bf16), and activations are stored as f32 tensors holding bf16 values (candle's
//! own bf16 CPU operations would be slower than f32 ones); the other layers compute in f32 on
//! those values. As in Keras, a layer takes the global policy when it is created, and
//! `.dtype_policy(..)` sets one layer's (Keras' guide keeps the last softmax in `float32`).
//!
//! ```
//! use kandle::mixed_precision::{global_policy, set_global_policy, DTypePolicy};
//! use kandle::prelude::*;
//! set_global_policy("mixed_bfloat16".parse()?);
//! let model = Sequential::new()
//!     .add(Conv2D::new(32, (3, 3)).activation(Activation::Relu).input_shape((8, 8, 32)))
//!     .add(Flatten::new())
//!     .add(Dense::new(10).activation(Activation::Softmax).dtype_policy(DTypePolicy::Float32));
//! set_global_policy(DTypePolicy::Float32);
//! assert_eq!(global_policy().name(), "float32");
//! let layers = model.model().layers();
//! assert_eq!(layers[0].dtype_policy(), DTypePolicy::MixedBfloat16);
//! assert_eq!(layers[2].dtype_policy().compute_dtype(), candle_core::DType::F32);
//! # Ok::<(), kandle::Error>(())
//! ```
//!
//! [`Conv2D`]: crate::layers::Conv2D
//! [`Dense`]: crate::layers::Dense

use crate::error::{Error, Result};
use crate::kernels::Precision;
use candle_core::DType;
use std::sync::atomic::{AtomicU8, Ordering};

/// A layer's dtype policy: the dtype of its variables and of its computations (Keras'
/// `DTypePolicy`, by its names `"float32"` and `"mixed_bfloat16"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DTypePolicy {
    /// f32 variables and computations (Keras' default).
    #[default]
    Float32,
    /// f32 variables, bf16 computations with f32 sums.
    MixedBfloat16,
}

impl DTypePolicy {
    /// Keras' name of the policy.
    pub fn name(&self) -> &'static str {
        match self {
            DTypePolicy::Float32 => "float32",
            DTypePolicy::MixedBfloat16 => "mixed_bfloat16",
        }
    }

    /// The dtype of the layer's computations (Keras' `compute_dtype`).
    pub fn compute_dtype(&self) -> DType {
        match self {
            DTypePolicy::Float32 => DType::F32,
            DTypePolicy::MixedBfloat16 => DType::BF16,
        }
    }

    /// The dtype of the layer's variables (Keras' `variable_dtype`): f32 for both.
    pub fn variable_dtype(&self) -> DType {
        DType::F32
    }

    /// The arithmetic of the products of kandle's kernels under this policy.
    pub fn precision(&self) -> Precision {
        match self {
            DTypePolicy::Float32 => Precision::F32,
            DTypePolicy::MixedBfloat16 => Precision::Bf16,
        }
    }
}

impl std::fmt::Display for DTypePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DTypePolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "float32" => Ok(DTypePolicy::Float32),
            "mixed_bfloat16" => Ok(DTypePolicy::MixedBfloat16),
            "mixed_float16" | "float16" | "bfloat16" | "float64" => Err(Error::invalid(
                "dtype_policy",
                format!("kandle supports \"float32\" and \"mixed_bfloat16\", received {s:?}"),
            )),
            other => Err(Error::invalid(
                "dtype_policy",
                format!("expected a dtype policy name (\"float32\" or \"mixed_bfloat16\"), received {other:?}"),
            )),
        }
    }
}

static GLOBAL: AtomicU8 = AtomicU8::new(0);

/// Sets the policy that layers created from now on take (Keras'
/// `keras.mixed_precision.set_global_policy`). Layers already created keep theirs.
pub fn set_global_policy(policy: DTypePolicy) {
    GLOBAL.store(policy as u8, Ordering::SeqCst);
}

/// The policy new layers take (Keras' `keras.mixed_precision.global_policy()`), `float32`
/// unless [`set_global_policy`] changed it.
pub fn global_policy() -> DTypePolicy {
    match GLOBAL.load(Ordering::SeqCst) {
        1 => DTypePolicy::MixedBfloat16,
        _ => DTypePolicy::Float32,
    }
}
