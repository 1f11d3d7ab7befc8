//! `model.summary()` in Keras 3's table form, as Keras prints it outside a terminal (rich's
//! table at 76 columns: cells wrapped at spaces, words too long cut with `…`). A functional
//! model gets Keras' "Connected to" column and its `InputLayer` rows.

use super::model::{Model, ModelState};
use crate::error::fmt_shape;
use crate::error::Result;

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

/// The lines of `text` in a cell of `width` characters (one space of padding each side):
/// greedy wrapping at spaces, a word longer than the cell cut with an ellipsis, as rich does.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let room = width.saturating_sub(2).max(1);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let word: String = if word.chars().count() > room {
            word.chars().take(room - 1).chain(std::iter::once('…')).collect()
        } else {
            word.to_string()
        };
        if line.is_empty() {
            line = word;
        } else if line.chars().count() + 1 + word.chars().count() <= room {
            line.push(' ');
            line.push_str(&word);
        } else {
            lines.push(std::mem::replace(&mut line, word));
        }
    }
    lines.push(line);
    lines
}

fn cell(text: &str, width: usize, right: bool) -> String {
    let len = text.chars().count();
    let pad = " ".repeat(width.saturating_sub(len + 2));
    if right {
        format!(" {pad}{text} ")
    } else {
        format!(" {text}{pad} ")
    }
}

/// Renders a table of `rows` (one string per column) under `header`, with the columns' widths
/// and right alignment.
fn render(
    name: &str,
    header: &[&str],
    widths: &[usize],
    right: &[bool],
    rows: &[Vec<String>],
    counts: [usize; 3],
) -> String {
    let line = |l: &str, m: &str, r: &str, fill: &str| {
        let parts: Vec<String> = widths.iter().map(|w| fill.repeat(*w)).collect();
        format!("{l}{}{r}\n", parts.join(m))
    };
    let mut s = format!("Model: \"{name}\"\n");
    s += &line("┏", "┳", "┓", "━");
    let heads: Vec<String> = header.iter().zip(widths).zip(right).map(|((h, w), r)| cell(h, *w, *r)).collect();
    s += &format!("┃{}┃\n", heads.join("┃"));
    s += &line("┡", "╇", "┩", "━");
    for (i, r) in rows.iter().enumerate() {
        let wrapped: Vec<Vec<String>> = r.iter().zip(widths).map(|(t, w)| wrap(t, *w)).collect();
        let height = wrapped.iter().map(Vec::len).max().unwrap_or(1);
        for k in 0..height {
            let cells: Vec<String> = wrapped
                .iter()
                .zip(widths)
                .zip(right)
                .map(|((lines, w), r)| cell(lines.get(k).map(String::as_str).unwrap_or(""), *w, *r))
                .collect();
            s += &format!("│{}│\n", cells.join("│"));
        }
        if i + 1 < rows.len() {
            s += &line("├", "┼", "┤", "─");
        }
    }
    s += &line("└", "┴", "┘", "─");
    let [trainable, non_trainable, bytes] = counts;
    let total = trainable + non_trainable;
    let size = |n: usize| readable_size((n * bytes) as f64);
    s += &format!(" Total params: {} ({})\n", thousands(total), size(total));
    s += &format!(" Trainable params: {} ({})\n", thousands(trainable), size(trainable));
    s += &format!(" Non-trainable params: {} ({})\n", thousands(non_trainable), size(non_trainable));
    s
}

/// The summary of a built model.
pub(crate) fn model_summary(inner: &ModelState) -> String {
    let p = inner.graph.plan();
    let (mut trainable, mut frozen) = (0, 0);
    for l in inner.graph.layers() {
        for w in l.weights() {
            if w.trainable {
                trainable += w.var.elem_count();
            } else {
                frozen += w.var.elem_count();
            }
        }
    }
    let counts = [trainable, frozen, inner.dtype.size_in_bytes()];
    let label = |l: &crate::layers::LayerRef| format!("{} ({})", l.name(), l.class_name());
    let params = |l: &crate::layers::LayerRef| thousands(l.count_params());
    // The first node of each layer gives its output shape, as in Keras.
    let first_node = |li: usize| p.nodes.iter().position(|n| n.layer == li).expect("every layer is called");
    let layers = inner.graph.layers();
    if inner.graph.is_stack() {
        let rows: Vec<Vec<String>> = layers
            .iter()
            .enumerate()
            .map(|(i, l)| vec![label(l), fmt_shape(true, &p.shapes[p.output_of(first_node(i))]), params(l)])
            .collect();
        return render(
            &inner.name,
            &["Layer (type)", "Output Shape", "Param #"],
            &[33, 24, 15],
            &[false, false, true],
            &rows,
            counts,
        );
    }
    let inputs = inner.graph.input_layers();
    // `name[node][0]` of each tensor: the layer that made it and which of its calls did.
    let mut calls = vec![0usize; layers.len()];
    let mut source: Vec<String> = inputs.iter().map(|l| format!("{}[0][0]", l.name())).collect();
    for n in &p.nodes {
        source.push(format!("{}[{}][0]", layers[n.layer].name(), calls[n.layer]));
        calls[n.layer] += 1;
    }
    // The rows in Keras' order of `model.layers`.
    let mut rows: Vec<Vec<String>> = Vec::new();
    for op in inner.graph.keras_order() {
        match op {
            crate::graph::Op::Input(i) => {
                let l = &inputs[i];
                rows.push(vec![label(l), fmt_shape(true, &inner.graph.input_shapes()[i]), "0".into(), "-".into()]);
            }
            crate::graph::Op::Layer(i) => {
                let l = &layers[i];
                let links: Vec<&str> = p
                    .nodes
                    .iter()
                    .filter(|n| n.layer == i)
                    .flat_map(|n| n.inputs.iter().map(|&t| source[t].as_str()))
                    .collect();
                rows.push(vec![
                    label(l),
                    fmt_shape(true, &p.shapes[p.output_of(first_node(i))]),
                    params(l),
                    links.join(", "),
                ]);
            }
        }
    }
    render(
        &inner.name,
        &["Layer (type)", "Output Shape", "Param #", "Connected to"],
        &[21, 19, 12, 19],
        &[false, false, true, false],
        &rows,
        counts,
    )
}

/// Formats an integer with thousands separators, as Keras' summary does: `276,138`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Model {
    /// The summary table, as Keras' `model.summary()` prints it; a functional model's has
    /// Keras' "Connected to" column, and frozen layers' weights count as non-trainable.
    ///
    /// ```
    /// use kandle::prelude::*;
    /// let model = Sequential::new().add(Dense::new(10).input_shape(784));
    /// let table = model.summary_string()?;
    /// assert!(table.contains("│ dense (Dense)                   │ (None, 10)             │         7,850 │"));
    /// assert!(table.contains("Total params: 7,850 (30.66 KB)"));
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Model::build`].
    pub fn summary_string(&self) -> Result<String> {
        let mut inner = self.lock();
        inner.build()?;
        Ok(model_summary(&inner))
    }

    /// Prints [`Model::summary_string`].
    ///
    /// # Errors
    /// As [`Model::build`].
    pub fn summary(&self) -> Result<()> {
        print!("{}", self.summary_string()?);
        Ok(())
    }
}
