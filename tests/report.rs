//! The pictures after training: the confusion matrix (its counts from indices, one-hot rows
//! and probabilities), the per-class table and the grid of misclassified images.

use candle_core::{Device, Tensor};
use kandle::utils::{confusion_matrix, per_class_csv, plot_confusion_matrix, plot_misclassified};

#[test]
fn confusion_matrix_counts_and_pictures() {
    let dev = Device::Cpu;
    let y = Tensor::new(&[0u32, 1, 1, 2, 2, 2], &dev).unwrap();
    let onehot = kandle::utils::to_categorical(&y, 3).unwrap();
    let probs = Tensor::new(
        &[[0.9f32, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4], [0.6, 0.2, 0.2]],
        &dev,
    )
    .unwrap();
    let want = vec![vec![1, 0, 0], vec![0, 1, 1], vec![1, 0, 2]];
    assert_eq!(confusion_matrix(&y, &probs, 3).unwrap(), want);
    assert_eq!(confusion_matrix(&onehot, &probs, 3).unwrap(), want);
    assert_eq!(confusion_matrix(&y.unsqueeze(1).unwrap(), &probs, 3).unwrap(), want);
    let csv = per_class_csv(&want, &["cat", "dog", "bird"]);
    assert_eq!(csv.lines().nth(3), Some("2,bird,3,2,0.6667"));
    assert!(confusion_matrix(&y, &probs, 2).is_err(), "a class outside num_classes");
    assert!(confusion_matrix(&y.narrow(0, 0, 5).unwrap(), &probs, 3).is_err(), "lengths differ");

    let dir = std::env::temp_dir().join(format!("kandle-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["c.png", "c.svg"] {
        plot_confusion_matrix(dir.join(f), &y, &probs, &["cat", "dog", "bird"]).unwrap();
        assert!(std::fs::metadata(dir.join(f)).unwrap().len() > 2000);
    }
    let svg = std::fs::read_to_string(dir.join("c.svg")).unwrap();
    assert!(
        svg.contains("bird") && svg.contains("0.67") && svg.contains("predicted"),
        "class names and row-normalised values are drawn"
    );
    // The images the model got wrong: 2 of 6 here (rows 2 and 5).
    let x = Tensor::rand(0f32, 1., (6, 8, 8, 3), &dev).unwrap();
    let wrong = plot_misclassified(dir.join("m.png"), &x, &y, &probs, &["cat", "dog", "bird"], 36).unwrap();
    assert_eq!(wrong, 2);
    plot_misclassified(dir.join("m.svg"), &x, &y, &probs, &["cat", "dog", "bird"], 1).unwrap();
    let svg = std::fs::read_to_string(dir.join("m.svg")).unwrap();
    assert!(
        svg.contains("2 of 6 images misclassified (first 1 shown)") && svg.contains("pred: bird (50%)"),
        "{}",
        &svg[..300]
    );
    let err =
        plot_misclassified(dir.join("m.png"), &x.flatten_from(1).unwrap(), &y, &probs, &[], 9).unwrap_err().to_string();
    assert!(err.contains("expected images"), "{err}");
}
