//! A restricted unpickler for the Python pickles of Keras' data sets (the CIFAR
//! `*-batches-py` and `cifar-100-python` files), as Keras' own `RestrictedUnpickler`: it
//! rebuilds dictionaries, lists, tuples, strings, integers and numpy arrays, and refuses every
//! global other than `numpy.ndarray`, `numpy.dtype` and `multiarray._reconstruct`, so a
//! tampered file cannot run code. Nothing is allocated beyond what the file itself holds: every
//! length is checked against the bytes left before it is used.
//!
//! It reads the Python 2 files as published (protocol 2, `str` as `SHORT_BINSTRING` /
//! `BINSTRING`, which candle's PyTorch-oriented pickle module lacks) and Python 3 pickles of
//! protocols 2 to 5 of the same objects. Strings are read as bytes, as Keras reads them
//! (`encoding="bytes"`).
//!
//! Memo entries are copies (large byte strings are shared, not copied): a pickle that
//! refers back to a list or dictionary it modifies afterwards reads the earlier state. The data
//! sets' files never do.

use std::collections::HashMap;
use std::rc::Rc;

/// A Python value of the restricted set.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A float.
    Float(f64),
    /// A byte string (Python 2 `str`, Python 3 `bytes`).
    Bytes(Rc<[u8]>),
    /// A unicode string.
    Str(String),
    /// A list.
    List(Vec<Value>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A dictionary, its items in the file's order.
    Dict(Vec<(Value, Value)>),
    /// A numpy dtype: its type string (`"u1"`, `"<i8"` ...) and byte order (`'|'`, `'<'`, `'>'`).
    Dtype(String, char),
    /// A numpy array.
    Array(Array),
    /// One of the allowed globals, before it is called.
    Global(Global),
}

/// The globals a data set pickle may name (Keras' `_ALLOWED_PICKLE_GLOBALS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    /// `numpy.ndarray`.
    Ndarray,
    /// `numpy.dtype`.
    Dtype,
    /// `numpy.core.multiarray._reconstruct` or `numpy._core.multiarray._reconstruct`.
    Reconstruct,
}

/// A numpy array: its dtype, shape and raw bytes (C order unless `fortran`).
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// The dtype's type string without the byte order (`"u1"`, `"i8"`, `"f4"` ...).
    pub dtype: String,
    /// The byte order: `'|'` (not applicable), `'<'` or `'>'`.
    pub order: char,
    /// The shape.
    pub shape: Vec<usize>,
    /// Whether the bytes are in Fortran order.
    pub fortran: bool,
    /// The values' bytes.
    pub data: Rc<[u8]>,
}

impl Value {
    /// The item of a dictionary whose key is `key`, as bytes or as a string.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items.iter().find(|(k, _)| k.as_text() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text of a byte or unicode string (bytes read as UTF-8).
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// What the value is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Bytes(_) => "bytes",
            Value::Str(_) => "str",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Dtype(..) => "numpy.dtype",
            Value::Array(_) => "numpy.ndarray",
            Value::Global(_) => "a global",
        }
    }
}

/// Why a pickle was refused: the byte offset and the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct PickleError {
    /// Offset of the opcode at fault.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

type Res<T> = std::result::Result<T, PickleError>;

enum Item {
    Mark,
    V(Value),
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    op_at: usize,
}

impl<'a> Reader<'a> {
    fn err<T>(&self, reason: impl Into<String>) -> Res<T> {
        Err(PickleError { offset: self.op_at as u64, reason: reason.into() })
    }

    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        if n > self.b.len() - self.pos {
            return self.err(format!(
                "a length of {n} bytes runs past the end of the file ({} left)",
                self.b.len() - self.pos
            ));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Res<u8> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> Res<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn line(&mut self) -> Res<&'a str> {
        let rest = &self.b[self.pos..];
        let Some(end) = rest.iter().take(256).position(|&c| c == b'\n') else {
            return self.err("a line of text (a global's module or name) without its end");
        };
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).or_else(|_| self.err("a global's name is not UTF-8"))
    }

    /// A length read as `usize`, checked against the bytes left.
    fn len(&mut self, n: u64) -> Res<usize> {
        if n > (self.b.len() - self.pos) as u64 {
            return self.err(format!(
                "a length of {n} bytes runs past the end of the file ({} left)",
                self.b.len() - self.pos
            ));
        }
        Ok(n as usize)
    }
}

fn global(module: &str, name: &str) -> Option<Global> {
    match (module, name) {
        ("numpy", "ndarray") => Some(Global::Ndarray),
        ("numpy", "dtype") => Some(Global::Dtype),
        ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => Some(Global::Reconstruct),
        _ => None,
    }
}

/// The size in bytes of one value of a dtype's type string (`"u1"` -> 1, `"f8"` -> 8).
fn item_size(dtype: &str) -> Option<usize> {
    match dtype {
        "u1" | "i1" | "b1" => Some(1),
        "u2" | "i2" | "f2" => Some(2),
        "u4" | "i4" | "f4" => Some(4),
        "u8" | "i8" | "f8" => Some(8),
        _ => None,
    }
}

/// Reads a pickle of the restricted set.
///
/// # Errors
/// A global outside the allowed set (named), an opcode it does not know, a truncated or
/// inconsistent file (an array whose bytes do not match its shape, a length past the end).
pub fn load(bytes: &[u8]) -> Res<Value> {
    let mut r = Reader { b: bytes, pos: 0, op_at: 0 };
    let mut stack: Vec<Item> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    macro_rules! pop {
        () => {
            match stack.pop() {
                Some(Item::V(v)) => v,
                Some(Item::Mark) => return r.err("a mark where a value was expected"),
                None => return r.err("the stack is empty"),
            }
        };
    }
    macro_rules! top {
        () => {
            match stack.last_mut() {
                Some(Item::V(v)) => v,
                _ => return r.err("no value on the stack"),
            }
        };
    }
    macro_rules! since_mark {
        () => {{
            let Some(m) = stack.iter().rposition(|i| matches!(i, Item::Mark)) else {
                return r.err("no mark on the stack");
            };
            let items: Vec<Value> = stack
                .drain(m..)
                .skip(1)
                .map(|i| match i {
                    Item::V(v) => v,
                    Item::Mark => Value::None,
                })
                .collect();
            items
        }};
    }
    loop {
        r.op_at = r.pos;
        let op = match r.take(1) {
            Ok(b) => b[0],
            Err(_) => return r.err("the file ends before the pickle's STOP opcode"),
        };
        match op {
            0x80 => {
                let proto = r.u8()?;
                if proto > 5 {
                    return r.err(format!("pickle protocol {proto} (this reader knows 0 to 5)"));
                }
            }
            0x95 => {
                r.le::<8>()?;
            }
            b'.' => {
                return match stack.pop() {
                    Some(Item::V(v)) => Ok(v),
                    _ => r.err("STOP with no value on the stack"),
                };
            }
            b'(' => stack.push(Item::Mark),
            b'}' => stack.push(Item::V(Value::Dict(Vec::new()))),
            b']' => stack.push(Item::V(Value::List(Vec::new()))),
            b')' => stack.push(Item::V(Value::Tuple(Vec::new()))),
            b'N' => stack.push(Item::V(Value::None)),
            0x88 => stack.push(Item::V(Value::Bool(true))),
            0x89 => stack.push(Item::V(Value::Bool(false))),
            b'K' => {
                let v = r.u8()?;
                stack.push(Item::V(Value::Int(v as i64)))
            }
            b'M' => {
                let v = u16::from_le_bytes(r.le()?);
                stack.push(Item::V(Value::Int(v as i64)))
            }
            b'J' => {
                let v = i32::from_le_bytes(r.le()?);
                stack.push(Item::V(Value::Int(v as i64)))
            }
            0x8a => {
                let n = r.u8()? as usize;
                if n > 8 {
                    return r.err(format!("an integer of {n} bytes (at most 8 are read)"));
                }
                let b = r.take(n)?;
                let mut v: i64 = 0;
                for (i, &x) in b.iter().enumerate() {
                    v |= (x as i64) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Item::V(Value::Int(v)))
            }
            b'I' => {
                let line = r.line()?;
                let v = match line {
                    "01" => Value::Bool(true),
                    "00" => Value::Bool(false),
                    s => match s.parse::<i64>() {
                        Ok(v) => Value::Int(v),
                        Err(_) => return r.err(format!("INT opcode with the text {s:?}")),
                    },
                };
                stack.push(Item::V(v))
            }
            b'G' => {
                let v = f64::from_be_bytes(r.le()?);
                stack.push(Item::V(Value::Float(v)))
            }
            b'U' | b'C' => {
                let n = r.u8()? as u64;
                let n = r.len(n)?;
                stack.push(Item::V(Value::Bytes(r.take(n)?.into())))
            }
            b'T' | b'B' => {
                let n = i32::from_le_bytes(r.le()?);
                if n < 0 {
                    return r.err(format!("a negative string length ({n})"));
                }
                let n = r.len(n as u64)?;
                stack.push(Item::V(Value::Bytes(r.take(n)?.into())))
            }
            0x8e => {
                let n = u64::from_le_bytes(r.le()?);
                let n = r.len(n)?;
                stack.push(Item::V(Value::Bytes(r.take(n)?.into())))
            }
            0x8c | b'X' | 0x8d => {
                let n = match op {
                    0x8c => r.u8()? as u64,
                    b'X' => u32::from_le_bytes(r.le()?) as u64,
                    _ => u64::from_le_bytes(r.le()?),
                };
                let n = r.len(n)?;
                let s = r.take(n)?;
                match std::str::from_utf8(s) {
                    Ok(s) => stack.push(Item::V(Value::Str(s.to_string()))),
                    Err(_) => return r.err("a unicode string that is not UTF-8"),
                }
            }
            b'q' | b'r' | 0x94 => {
                let key = match op {
                    b'q' => r.u8()? as u32,
                    b'r' => u32::from_le_bytes(r.le()?),
                    _ => memo.len() as u32,
                };
                let v = match stack.last() {
                    Some(Item::V(v)) => v.clone(),
                    _ => return r.err("PUT with no value on the stack"),
                };
                memo.insert(key, v);
            }
            b'h' | b'j' => {
                let key = if op == b'h' { r.u8()? as u32 } else { u32::from_le_bytes(r.le()?) };
                match memo.get(&key) {
                    Some(v) => stack.push(Item::V(v.clone())),
                    None => return r.err(format!("GET of memo entry {key}, which was never PUT")),
                }
            }
            b't' => {
                let items = since_mark!();
                stack.push(Item::V(Value::Tuple(items)))
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(pop!());
                }
                items.reverse();
                stack.push(Item::V(Value::Tuple(items)))
            }
            b'l' => {
                let items = since_mark!();
                stack.push(Item::V(Value::List(items)))
            }
            b'd' => {
                let items = since_mark!();
                if items.len() % 2 != 0 {
                    return r.err("DICT with an odd number of items");
                }
                let mut it = items.into_iter();
                let mut d = Vec::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
                stack.push(Item::V(Value::Dict(d)))
            }
            b'a' => {
                let v = pop!();
                match top!() {
                    Value::List(l) => l.push(v),
                    o => return r.err(format!("APPEND to a {}", o.kind())),
                }
            }
            b'e' => {
                let items = since_mark!();
                match top!() {
                    Value::List(l) => l.extend(items),
                    o => return r.err(format!("APPENDS to a {}", o.kind())),
                }
            }
            b's' => {
                let v = pop!();
                let k = pop!();
                match top!() {
                    Value::Dict(d) => d.push((k, v)),
                    o => return r.err(format!("SETITEM on a {}", o.kind())),
                }
            }
            b'u' => {
                let items = since_mark!();
                if items.len() % 2 != 0 {
                    return r.err("SETITEMS with an odd number of items");
                }
                match top!() {
                    Value::Dict(d) => {
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                    o => return r.err(format!("SETITEMS on a {}", o.kind())),
                }
            }
            b'c' | 0x93 => {
                let (module, name) = if op == b'c' {
                    (r.line()?.to_string(), r.line()?.to_string())
                } else {
                    let name = pop!();
                    let module = pop!();
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => (m, n),
                        _ => return r.err("STACK_GLOBAL without two strings"),
                    }
                };
                match global(&module, &name) {
                    Some(g) => stack.push(Item::V(Value::Global(g))),
                    None => {
                        return r.err(format!(
                            "refusing to deserialize `{module}.{name}` while loading a data set: only numpy arrays are \
                             allowed (the file may be corrupted or malicious)"
                        ))
                    }
                }
            }
            b'R' => {
                let args = pop!();
                let f = pop!();
                let Value::Tuple(args) = args else {
                    return r.err(format!("REDUCE with {} arguments instead of a tuple", args.kind()));
                };
                let v = match (f, args.as_slice()) {
                    (Value::Global(Global::Reconstruct), [Value::Global(Global::Ndarray), ..]) => Value::Array(Array {
                        dtype: String::new(),
                        order: '|',
                        shape: vec![0],
                        fortran: false,
                        data: Rc::from(Vec::new()),
                    }),
                    (Value::Global(Global::Dtype), [descr, ..]) => {
                        let Some(d) = descr.as_text() else {
                            return r.err(format!("numpy.dtype of a {}", descr.kind()));
                        };
                        let (order, t) = match d.chars().next() {
                            Some(c @ ('<' | '>' | '|' | '=')) => (c, &d[1..]),
                            _ => ('|', d),
                        };
                        Value::Dtype(t.to_string(), order)
                    }
                    (f, _) => return r.err(format!("REDUCE calls {}, which is not allowed", f.kind())),
                };
                stack.push(Item::V(v))
            }
            b'b' => {
                let state = pop!();
                let target = top!();
                match (target, state) {
                    (Value::Dtype(_, order), Value::Tuple(s)) => {
                        // (version, byte order, subarray, names, fields, elsize, alignment, flags)
                        if let Some(o) = s.get(1).and_then(|o| o.as_text()).and_then(|o| o.chars().next()) {
                            *order = o;
                        }
                    }
                    (Value::Array(a), Value::Tuple(s)) => {
                        // (version, shape, dtype, is_fortran, raw data)
                        let [_, Value::Tuple(shape), Value::Dtype(dtype, order), fortran, Value::Bytes(data)] =
                            s.as_slice()
                        else {
                            return r.err("an array's state is not (version, shape, dtype, fortran, bytes)");
                        };
                        let mut dims = Vec::with_capacity(shape.len());
                        for d in shape {
                            match d {
                                Value::Int(d) if *d >= 0 => dims.push(*d as usize),
                                _ => return r.err(format!("an array dimension of {d:?}")),
                            }
                        }
                        let Some(size) = item_size(dtype) else {
                            return r.err(format!("an array of dtype {dtype:?} (numbers only)"));
                        };
                        let n = dims.iter().try_fold(size, |acc, &d| acc.checked_mul(d));
                        if n != Some(data.len()) {
                            return r.err(format!(
                                "an array of shape {dims:?} and dtype {dtype} needs {} bytes, the file holds {}",
                                n.map_or("more than 2^64".to_string(), |n| n.to_string()),
                                data.len()
                            ));
                        }
                        *a = Array {
                            dtype: dtype.clone(),
                            order: *order,
                            shape: dims,
                            fortran: matches!(fortran, Value::Bool(true) | Value::Int(1)),
                            data: data.clone(),
                        };
                    }
                    (t, s) => return r.err(format!("BUILD of a {} with a {}", t.kind(), s.kind())),
                }
            }
            op => return r.err(format!("opcode 0x{op:02x} ({:?}) is not one a data set pickle uses", op as char)),
        }
    }
}
