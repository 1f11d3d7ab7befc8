//! Convolution layers, as Keras' `layers/convolutional/`: [`Conv2D`] on kandle's own kernels
//! (direct, Winograd, AMX), [`DepthwiseConv2D`] and [`SeparableConv2D`], each with its own
//! backward pass.

mod conv2d;
mod depthwise;

pub use conv2d::Conv2D;
pub use depthwise::{DepthwiseConv2D, SeparableConv2D};
