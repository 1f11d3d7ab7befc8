//! Makes the user guide's Rust examples doc tests (`cargo test --doc`): a copy of docs/guide.md
//! in which every Rust block gets, hidden, the names the guide's text gives it (the tutorial's
//! compiled `model`, `x_train`, `y_train` ...) and a `main` returning `kandle::Result`. The guide itself
//! stays as readers see it; its blocks are compiled, and run unless marked `no_run`.

fn main() {
    println!("cargo:rerun-if-changed=docs/guide.md");
    println!("cargo:rerun-if-changed=build.rs");
    let guide = std::fs::read_to_string("docs/guide.md").unwrap_or_default();
    let preamble = "\
# #![allow(unused)]
# use kandle::prelude::*;
# fn main() -> kandle::Result<()> {
# let x_train = Tensor::zeros((8, 32, 32, 3), DType::F32, &Device::Cpu)?;
# let y_train = Tensor::zeros((8, 10), DType::F32, &Device::Cpu)?;
# let (x_test, y_test) = (x_train.clone(), y_train.clone());
# let model = Sequential::new().add(Flatten::new().input_shape((32, 32, 3))).add(Dense::new(10).activation(Activation::Softmax));
# model.compile(RMSprop::default(), Loss::CategoricalCrossentropy, &[Metric::Accuracy])?;
";
    let mut out = String::new();
    let mut in_rust = false;
    let mut in_other = false;
    for line in guide.lines() {
        let fence = line.trim_start().starts_with("```");
        if fence && !in_rust && !in_other {
            if line.trim_start().starts_with("```rust") {
                in_rust = true;
                out.push_str(line);
                out.push('\n');
                out.push_str(preamble);
            } else {
                in_other = true;
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        if fence && in_rust {
            in_rust = false;
            out.push_str("# Ok(())\n# }\n");
        } else if fence && in_other {
            in_other = false;
        }
        out.push_str(line);
        out.push('\n');
    }
    let dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(std::path::Path::new(&dir).join("guide.md"), out).expect("OUT_DIR is writable");
}
