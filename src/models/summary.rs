//! `model.summary()` in Keras 3's table form.

use crate::error::fmt_shape;
use crate::utils::thousands;

/// One row of the summary.
pub(crate) struct Row {
    pub label: String,
    pub shape: Vec<usize>,
    pub params: usize,
}

/// Keras' `readable_memory_size`: `1.05 MB`.
fn readable_size(mut bytes: f64) -> String {
    for unit in ["B", "KB", "MB", "GB", "TB"] {
        if bytes / 1024.0 < 1.0 {
            return format!("{bytes:.2} {unit}");
        }
        bytes /= 1024.0;
    }
    format!("{bytes:.2} PB")
}

fn cell(text: &str, width: usize, right: bool) -> String {
    let len = text.chars().count();
    let pad = " ".repeat(width.saturating_sub(len + 1));
    if right {
        format!("{pad}{text} ")
    } else {
        format!(" {text}{pad}")
    }
}

/// Renders the table.
pub(crate) fn render(
    name: &str,
    rows: &[Row],
    trainable: usize,
    non_trainable: usize,
    bytes_per_param: usize,
) -> String {
    let w = [33usize, 24, 15];
    let line = |l: &str, m: &str, r: &str, fill: &str| {
        format!("{l}{}{m}{}{m}{}{r}\n", fill.repeat(w[0]), fill.repeat(w[1]), fill.repeat(w[2]))
    };
    let mut s = format!("Model: \"{name}\"\n");
    s += &line("┏", "┳", "┓", "━");
    s += &format!(
        "┃{}┃{}┃{}┃\n",
        cell("Layer (type)", w[0], false),
        cell("Output Shape", w[1], false),
        cell("Param #", w[2], true)
    );
    s += &line("┡", "╇", "┩", "━");
    for (i, r) in rows.iter().enumerate() {
        s += &format!(
            "│{}│{}│{}│\n",
            cell(&r.label, w[0], false),
            cell(&fmt_shape(true, &r.shape), w[1], false),
            cell(&thousands(r.params), w[2], true)
        );
        if i + 1 < rows.len() {
            s += &line("├", "┼", "┤", "─");
        }
    }
    s += &line("└", "┴", "┘", "─");
    let total = trainable + non_trainable;
    let size = |n: usize| readable_size((n * bytes_per_param) as f64);
    s += &format!(" Total params: {} ({})\n", thousands(total), size(total));
    s += &format!(" Trainable params: {} ({})\n", thousands(trainable), size(trainable));
    s += &format!(" Non-trainable params: {} ({})\n", thousands(non_trainable), size(non_trainable));
    s
}
