//! Data preprocessing, as in Keras' (legacy) `keras.preprocessing`.

pub mod image;
