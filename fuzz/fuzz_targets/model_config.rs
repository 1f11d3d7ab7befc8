//! The model configuration parser of `load_model`: the input is the architecture JSON of a
//! saved model file whose other metadata and tensors are those of a real small model. A
//! declared shape must not make the loader allocate gigabytes.
#![no_main]

use kandle::prelude::*;
use libfuzzer_sys::fuzz_target;
use safetensors::tensor::TensorView;
use std::collections::HashMap;
use std::sync::OnceLock;

#[path = "common.rs"]
mod common;

struct Reference {
    meta: HashMap<String, String>,
    tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>,
}

fn reference() -> Reference {
    let mut m = Sequential::new()
        .seed(0)
        .add(Conv2D::new(2, 3).padding(Padding::Same).activation(Activation::Relu).input_shape((6, 6, 1)))
        .add(MaxPooling2D::new(2))
        .add(Dropout::new(0.5))
        .add(Flatten::new())
        .add(Dense::new(3).activation(Activation::Softmax));
    m.compile(Adam::new(0.01), Loss::CategoricalCrossentropy, &[Metric::Accuracy]).expect("compile");
    let path = common::scratch().join("reference.kandle");
    m.save(&path).expect("save");
    let bytes = std::fs::read(&path).expect("read");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("metadata");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let tensors =
        st.tensors().into_iter().map(|(k, v)| (k, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    Reference { meta: meta.metadata().clone().unwrap_or_default(), tensors }
}

fuzz_target!(|data: &[u8]| {
    static REF: OnceLock<Reference> = OnceLock::new();
    let r = REF.get_or_init(reference);
    let mut meta = r.meta.clone();
    meta.insert("architecture".into(), String::from_utf8_lossy(data).into_owned());
    let views: Vec<(&str, TensorView)> =
        r.tensors.iter().map(|(k, d, s, b)| (k.as_str(), TensorView::new(*d, s.clone(), b).expect("view"))).collect();
    let bytes = safetensors::tensor::serialize(views, Some(meta)).expect("serialize");
    let path = common::file("model.kandle", &bytes);
    match kandle::models::load_model(&path) {
        Ok(m) => {
            let _ = m.summary_string();
        }
        Err(e) => common::check_message(&e),
    }
});
