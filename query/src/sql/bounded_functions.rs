//! Scalar functions that can make a result much larger than their inputs (`repeat`, `lpad`,
//! `range`, ...), wrapped so that each call is bounded before it allocates.
//!
//! DataFusion's memory pool sees what operators hold (hash tables, sorts, aggregates), not
//! what a scalar function makes: `repeat('x', 2147483647)` allocated 2 GiB in one call and
//! took the process past its memory ceiling. Each function in [`BOUNDED`] is registered under
//! its own name as a [`Bounded`] wrapper that computes, from the call's arguments, the bytes
//! the result would take, refuses above the per-call cap, reserves the bytes from the SQL
//! memory pool while the call runs (so concurrent calls count against `--sql-memory-limit`),
//! and checks the size of what it actually made.
//!
//! A value that is the same on every row (a constant, or a call whose arguments are all
//! constants) is copied into every row of a batch when projected, so it may take at most a
//! batch's share of the per-call cap ([`CallLimits::max_constant_bytes`]); `run` in `sql.rs`
//! checks the constants of every optimized plan against the same cap.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, FieldRef, Int64Type, IntervalMonthDayNanoType, TimeUnit};
use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

use crate::error::QueryError;

/// The most one function call may make, whatever the SQL memory: a batch of strings larger
/// than this is not something a dashboard or an alert rule needs.
pub const MAX_CALL_BYTES: usize = 64 << 20;

/// Rows DataFusion puts in a batch (its `batch_size` default): a constant is copied this
/// many times when projected.
const BATCH_ROWS: usize = 8192;

/// The caps every bounded call checks, and the pool it reserves from.
#[derive(Debug)]
pub struct CallLimits {
    pool: Arc<dyn MemoryPool>,
    /// Bytes one call may make: `min(64 MiB, --sql-memory-limit / 8)`.
    pub max_call_bytes: usize,
    /// Bytes a value that is the same on every row may take: a batch's share of the above
    /// (at least 1 KiB).
    pub max_constant_bytes: usize,
}

impl CallLimits {
    pub fn new(pool: Arc<dyn MemoryPool>, sql_memory_limit: usize) -> Self {
        let max_call_bytes = MAX_CALL_BYTES.min(sql_memory_limit / 8).max(1 << 20);
        Self {
            pool,
            max_call_bytes,
            max_constant_bytes: (max_call_bytes / BATCH_ROWS).max(1 << 10),
        }
    }

    /// The error for a constant over [`CallLimits::max_constant_bytes`].
    pub fn constant_too_large(&self, bytes: usize) -> QueryError {
        QueryError::TooExpensive(format!(
            "the query holds a constant value of {}, more than the {} a constant may take (it is copied into every row); use a smaller value",
            size_text(bytes),
            size_text(self.max_constant_bytes)
        ))
    }
}

/// How a function's result grows with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(s, n)`: `len(s) * n`.
    Repeat,
    /// `lpad(s, n [, fill])`, `rpad`: `s` and `n` of the fill's widest character.
    Pad,
    /// `replace(s, from, to)`: every `from` (or every gap, when empty) becomes `to`.
    Replace,
    /// `regexp_replace(s, pattern, replacement [, flags])`.
    RegexpReplace,
    /// `concat(...)`: the sum of the arguments.
    Concat,
    /// `concat_ws(separator, ...)`: the arguments and a separator between each two.
    ConcatWs,
    /// `array_repeat(element, n)`: `n` copies of the element.
    ArrayRepeat,
    /// `range(start, stop [, step])` and `generate_series` as list functions.
    Range,
    /// `array_resize(list, n [, value])`.
    ArrayResize,
    /// `array_to_string(list, separator [, null])`: each element as text with a separator.
    ArrayToString,
    /// `array_replace*(list, from, to)`: every element may become `to`.
    ArrayReplace,
    /// `string_to_array(s, separator)`: up to one element (and its offset) per byte.
    StringToArray,
    /// `encode(s, format)`: hex doubles the bytes.
    Encode,
}

/// Every function that can make a result much larger than its inputs, with how it grows.
/// Functions whose result is at most a small multiple of their inputs (`upper`, `to_hex`,
/// `overlay`, `translate`, `substr`) are not wrapped.
const BOUNDED: &[(&str, Growth)] = &[
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("replace", Growth::Replace),
    ("regexp_replace", Growth::RegexpReplace),
    ("concat", Growth::Concat),
    ("concat_ws", Growth::ConcatWs),
    ("array_repeat", Growth::ArrayRepeat),
    ("range", Growth::Range),
    ("generate_series", Growth::Range),
    ("array_resize", Growth::ArrayResize),
    ("array_to_string", Growth::ArrayToString),
    ("array_replace", Growth::ArrayReplace),
    ("array_replace_n", Growth::ArrayReplace),
    ("array_replace_all", Growth::ArrayReplace),
    ("string_to_array", Growth::StringToArray),
    ("encode", Growth::Encode),
];

/// Registers the bounded version of every function in [`BOUNDED`] in `context`, under the
/// function's own name and aliases.
pub fn register(context: &SessionContext, limits: &Arc<CallLimits>) {
    let state = context.state();
    let functions = state.scalar_functions();
    for (name, growth) in BOUNDED {
        let Some(inner) = functions.get(*name) else {
            continue;
        };
        context.register_udf(ScalarUDF::new_from_impl(Bounded {
            inner: inner.clone(),
            growth: *growth,
            limits: limits.clone(),
        }));
    }
}

fn bounded(function: &Arc<ScalarUDF>, limits: &Arc<CallLimits>) -> Option<Arc<ScalarUDF>> {
    if function.inner().is::<Bounded>() {
        return None;
    }
    let growth = BOUNDED.iter().find(|(name, _)| *name == function.name())?.1;
    Some(Arc::new(ScalarUDF::new_from_impl(Bounded {
        inner: function.clone(),
        growth,
        limits: limits.clone(),
    })))
}

/// A function of [`BOUNDED`] with its size checks.
#[derive(Debug)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    growth: Growth,
    limits: Arc<CallLimits>,
}

impl PartialEq for Bounded {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner && self.growth == other.growth
    }
}

impl Eq for Bounded {}

impl Hash for Bounded {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
        self.growth.hash(state);
    }
}

impl Bounded {
    fn refuse(&self, message: String) -> DataFusionError {
        DataFusionError::External(Box::new(QueryError::TooExpensive(message)))
    }

    /// Refuses a result of `bytes` above its cap.
    fn check(&self, bytes: usize, constant: bool) -> Result<()> {
        let name = self.inner.name();
        if constant && bytes > self.limits.max_constant_bytes {
            return Err(self.refuse(format!(
                "the function {name} would make a value of {} that is the same on every row, more than the {} such a value may take (it is copied into every row); make it smaller",
                size_text(bytes),
                size_text(self.limits.max_constant_bytes)
            )));
        }
        if bytes > self.limits.max_call_bytes {
            return Err(self.refuse(format!(
                "the function {name} would make {}, more than the {} one function call may make; make the strings or lists smaller, or filter rows before calling it",
                size_text(bytes),
                size_text(self.limits.max_call_bytes)
            )));
        }
        Ok(())
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        let updated = self.inner.inner().with_updated_config(config)?;
        Some(ScalarUDF::new_from_impl(Bounded {
            inner: Arc::new(updated),
            growth: self.growth,
            limits: self.limits.clone(),
        }))
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        // `concat_ws('', ...)` simplifies to DataFusion's own `concat`, not the registered
        // one: put the bound back on any function of the list the rewrite names.
        match self.inner.simplify(args, info)? {
            ExprSimplifyResult::Simplified(expr) => {
                let limits = self.limits.clone();
                let expr = expr
                    .transform(|expr| match expr {
                        Expr::ScalarFunction(call) => match bounded(&call.func, &limits) {
                            Some(func) => {
                                Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction {
                                    func,
                                    args: call.args,
                                })))
                            }
                            None => Ok(Transformed::no(Expr::ScalarFunction(call))),
                        },
                        other => Ok(Transformed::no(other)),
                    })?
                    .data;
                Ok(ExprSimplifyResult::Simplified(expr))
            }
            original => Ok(original),
        }
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let constant = args
            .args
            .iter()
            .all(|arg| matches!(arg, ColumnarValue::Scalar(_)));
        let estimate = estimate(self.growth, &args.args, args.number_rows)?;
        self.check(estimate, constant)?;
        let reservation = MemoryConsumer::new(format!("function {}", self.inner.name()))
            .register(&self.limits.pool);
        reservation.try_grow(estimate).map_err(|_| {
            self.refuse(format!(
                "the function {} would make {} while the other queries hold most of the SQL memory; retry later or make the strings or lists smaller",
                self.inner.name(),
                size_text(estimate)
            ))
        })?;
        let result = self.inner.invoke_with_args(args)?;
        // The estimates are upper bounds; this catches a function whose growth is misjudged
        // after one call instead of letting it compound.
        let made = match &result {
            ColumnarValue::Scalar(value) => value.size(),
            ColumnarValue::Array(array) => array.get_array_memory_size(),
        };
        self.check(made, constant)?;
        drop(reservation);
        Ok(result)
    }
}

/// "12 MiB", "3 KiB" or "512 bytes".
pub fn size_text(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

/// One argument, row by row: a constant is row 0 of a one-row array.
struct Column {
    array: ArrayRef,
    constant: bool,
}

impl Column {
    fn new(value: &ColumnarValue) -> Result<Self> {
        Ok(match value {
            ColumnarValue::Scalar(scalar) => Self {
                array: scalar.to_array()?,
                constant: true,
            },
            ColumnarValue::Array(array) => Self {
                array: array.clone(),
                constant: false,
            },
        })
    }

    fn row(&self, row: usize) -> usize {
        if self.constant { 0 } else { row }
    }

    /// Bytes of the value at `row` (a string's or binary's bytes; otherwise the value's
    /// share of the array's buffers); 0 for null.
    fn bytes(&self, row: usize) -> usize {
        let row = self.row(row);
        let array = &self.array;
        if array.is_null(row) {
            return 0;
        }
        match array.data_type() {
            DataType::Utf8 => array.as_string::<i32>().value(row).len(),
            DataType::LargeUtf8 => array.as_string::<i64>().value(row).len(),
            DataType::Utf8View => array.as_string_view().value(row).len(),
            DataType::Binary => array.as_binary::<i32>().value(row).len(),
            DataType::LargeBinary => array.as_binary::<i64>().value(row).len(),
            DataType::BinaryView => array.as_binary_view().value(row).len(),
            other => match other.primitive_width() {
                Some(width) => width,
                None => array
                    .slice(row, 1)
                    .to_data()
                    .get_slice_memory_size()
                    .unwrap_or(0),
            },
        }
    }

    /// The string at `row`, if it is one and not null.
    fn text(&self, row: usize) -> Option<&str> {
        let row = self.row(row);
        let array = &self.array;
        if array.is_null(row) {
            return None;
        }
        match array.data_type() {
            DataType::Utf8 => Some(array.as_string::<i32>().value(row)),
            DataType::LargeUtf8 => Some(array.as_string::<i64>().value(row)),
            DataType::Utf8View => Some(array.as_string_view().value(row)),
            _ => None,
        }
    }

    /// The list at `row`: its values, if the argument is a list and the row not null.
    fn list(&self, row: usize) -> Option<ArrayRef> {
        let row = self.row(row);
        let array = &self.array;
        if array.is_null(row) {
            return None;
        }
        match array.data_type() {
            DataType::List(_) => Some(array.as_list::<i32>().value(row)),
            DataType::LargeList(_) => Some(array.as_list::<i64>().value(row)),
            DataType::FixedSizeList(_, _) => Some(array.as_fixed_size_list().value(row)),
            _ => None,
        }
    }
}

/// An argument as 64-bit integers (`n` of `repeat`, the bounds of `range`), or `None`
/// where it is null or not a number.
struct Integers {
    array: Option<ArrayRef>,
    constant: bool,
}

impl Integers {
    fn new(value: &ColumnarValue, as_type: &DataType) -> Self {
        let column = Column::new(value).ok();
        let array = column.as_ref().and_then(|column| {
            let typed = arrow::compute::cast(&column.array, as_type).ok()?;
            arrow::compute::cast(&typed, &DataType::Int64).ok()
        });
        Self {
            array,
            constant: column.is_none_or(|column| column.constant),
        }
    }

    fn at(&self, row: usize) -> Option<i64> {
        let array = self.array.as_ref()?;
        let row = if self.constant { 0 } else { row };
        let values = array.as_primitive::<Int64Type>();
        (!values.is_null(row)).then(|| values.value(row))
    }
}

/// Elements at the bottom of a (possibly nested) list's values.
fn leaves(values: &dyn Array) -> usize {
    match values.data_type() {
        DataType::List(_) => leaves(values.as_list::<i32>().values().as_ref()),
        DataType::LargeList(_) => leaves(values.as_list::<i64>().values().as_ref()),
        DataType::FixedSizeList(_, _) => leaves(values.as_fixed_size_list().values().as_ref()),
        _ => values.len(),
    }
}

fn slice_bytes(values: &dyn Array) -> usize {
    values.to_data().get_slice_memory_size().unwrap_or(0)
}

/// Text of one non-string element in `array_to_string`: a number, date or timestamp.
const ELEMENT_TEXT_BYTES: usize = 40;

/// Per-element overhead of a list or string array (an offset and a validity bit).
const ELEMENT_OVERHEAD: usize = 8;

/// The upper bound of the bytes `growth` makes from `args` over `rows` rows (one row when
/// every argument is a constant, since the result is then one value).
fn estimate(growth: Growth, args: &[ColumnarValue], rows: usize) -> Result<usize> {
    let constant = args
        .iter()
        .all(|arg| matches!(arg, ColumnarValue::Scalar(_)));
    let rows = if constant { 1 } else { rows };
    let columns = args.iter().map(Column::new).collect::<Result<Vec<_>>>()?;
    let integer = |index: usize| {
        args.get(index)
            .map(|arg| Integers::new(arg, &DataType::Int64))
    };
    let bytes = |index: usize, row: usize| columns.get(index).map_or(0, |c| c.bytes(row));
    let mut total: u128 = 0;
    match growth {
        Growth::Repeat => {
            let count = integer(1);
            for row in 0..rows {
                let n = count.as_ref().and_then(|c| c.at(row)).unwrap_or(0).max(0);
                total += bytes(0, row) as u128 * n as u128;
            }
        }
        Growth::Pad => {
            // The result is `s` cut to `n` characters, then the fill's characters up to `n`.
            let length = integer(1);
            for row in 0..rows {
                let n = length.as_ref().and_then(|c| c.at(row)).unwrap_or(0).max(0);
                let fill = columns.get(2).map_or(Some(" "), |c| c.text(row));
                let width = fill.map_or(0, |fill| {
                    fill.chars().map(char::len_utf8).max().unwrap_or(0)
                });
                total += bytes(0, row) as u128 + n as u128 * width as u128;
            }
        }
        Growth::Replace => {
            for row in 0..rows {
                let (s, from, to) = (bytes(0, row), bytes(1, row), bytes(2, row));
                let gaps = s.checked_div(from).unwrap_or(s + 1);
                total += s as u128 + gaps as u128 * to as u128;
            }
        }
        Growth::RegexpReplace => {
            let mut minimum = MinimumMatch::default();
            for row in 0..rows {
                let s = bytes(0, row);
                let replacement = columns.get(2).and_then(|c| c.text(row)).unwrap_or("");
                let flags = columns.get(3).and_then(|c| c.text(row)).unwrap_or("");
                let pattern = columns.get(1).and_then(|c| c.text(row)).unwrap_or("");
                let matches = if flags.contains('g') {
                    s / minimum.of(pattern, flags).max(1) + 1
                } else {
                    1
                };
                // Each `$n` or `\n` in the replacement is a group of the match, and the
                // matches do not overlap: all of them together add at most `s` per group.
                let groups = replacement
                    .bytes()
                    .filter(|b| *b == b'$' || *b == b'\\')
                    .count();
                total += s as u128
                    + matches as u128 * replacement.len() as u128
                    + groups as u128 * s as u128;
            }
        }
        Growth::Concat => {
            for row in 0..rows {
                for index in 0..columns.len() {
                    total += bytes(index, row) as u128;
                }
            }
        }
        Growth::ConcatWs => {
            let separators = columns.len().saturating_sub(2) as u128;
            for row in 0..rows {
                total += bytes(0, row) as u128 * separators;
                for index in 1..columns.len() {
                    total += bytes(index, row) as u128;
                }
            }
        }
        Growth::ArrayRepeat => {
            let count = integer(1);
            for row in 0..rows {
                let n = count.as_ref().and_then(|c| c.at(row)).unwrap_or(0).max(0);
                total += (bytes(0, row) + ELEMENT_OVERHEAD) as u128 * n as u128;
            }
        }
        Growth::Range => total = range_bytes(args, rows),
        Growth::ArrayResize => {
            let length = integer(1);
            for row in 0..rows {
                let n = length.as_ref().and_then(|c| c.at(row)).unwrap_or(0).max(0);
                let element = columns
                    .first()
                    .and_then(|c| c.list(row))
                    .map_or(0, |values| {
                        slice_bytes(values.as_ref()) / values.len().max(1)
                    });
                let element = element.max(bytes(2, row)) + ELEMENT_OVERHEAD;
                total += n as u128 * element as u128;
            }
        }
        Growth::ArrayToString => {
            for row in 0..rows {
                let Some(values) = columns.first().and_then(|c| c.list(row)) else {
                    continue;
                };
                let elements = leaves(values.as_ref());
                let each = ELEMENT_TEXT_BYTES + bytes(1, row) + bytes(2, row);
                total += slice_bytes(values.as_ref()) as u128 + (elements * each) as u128;
            }
        }
        Growth::ArrayReplace => {
            for row in 0..rows {
                let Some(values) = columns.first().and_then(|c| c.list(row)) else {
                    continue;
                };
                let elements = leaves(values.as_ref()) as u128;
                total += slice_bytes(values.as_ref()) as u128
                    + elements * (bytes(2, row) + ELEMENT_OVERHEAD) as u128;
            }
        }
        Growth::StringToArray => {
            for row in 0..rows {
                total += (bytes(0, row) * (1 + ELEMENT_OVERHEAD) + ELEMENT_OVERHEAD) as u128;
            }
        }
        Growth::Encode => {
            for row in 0..rows {
                total += (bytes(0, row) * 2) as u128;
            }
        }
    }
    Ok(usize::try_from(total).unwrap_or(usize::MAX))
}

/// `range`/`generate_series` as list functions: integers, dates (4 bytes) or timestamps.
fn range_bytes(args: &[ColumnarValue], rows: usize) -> u128 {
    let Some(first) = args.first() else {
        return 0;
    };
    let first_type = first.data_type();
    let steps = |start: Option<i64>, stop: Option<i64>, step: Option<i64>| -> u128 {
        match (start, stop, step) {
            (Some(start), Some(stop), Some(step)) if step != 0 => {
                (i128::from(stop) - i128::from(start)).unsigned_abs() / step.unsigned_abs() as u128
                    + 1
            }
            _ => 0,
        }
    };
    let mut total: u128 = 0;
    match first_type {
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _) => {
            let (as_type, unit_ns, width) = match first_type {
                DataType::Timestamp(_, _) => (
                    DataType::Timestamp(TimeUnit::Nanosecond, None),
                    1i128,
                    8u128,
                ),
                _ => (DataType::Date32, 86_400_000_000_000i128, 4u128),
            };
            let start = Integers::new(&args[0], &as_type);
            let Some(stop) = args.get(1).map(|arg| Integers::new(arg, &as_type)) else {
                return 0;
            };
            let step = args.get(2).and_then(|arg| Column::new(arg).ok());
            for row in 0..rows {
                // The shortest a step can be: a month is at least 28 days.
                let step_ns = step.as_ref().and_then(|step| {
                    let row = step.row(row);
                    let array = step.array.as_primitive_opt::<IntervalMonthDayNanoType>()?;
                    if array.is_null(row) {
                        return None;
                    }
                    let value = array.value(row);
                    let ns = i128::from(value.months).abs() * 28 * 86_400_000_000_000
                        + i128::from(value.days).abs() * 86_400_000_000_000
                        + i128::from(value.nanoseconds).abs();
                    Some(ns / unit_ns)
                });
                let step = step_ns.and_then(|ns| i64::try_from(ns).ok());
                total += steps(start.at(row), stop.at(row), step) * width;
            }
        }
        _ => {
            let integers: Vec<Integers> = args
                .iter()
                .map(|arg| Integers::new(arg, &DataType::Int64))
                .collect();
            for row in 0..rows {
                let (start, stop, step) = match integers.as_slice() {
                    [stop] => (Some(0), stop.at(row), Some(1)),
                    [start, stop] => (start.at(row), stop.at(row), Some(1)),
                    [start, stop, step, ..] => (start.at(row), stop.at(row), step.at(row)),
                    [] => (None, None, None),
                };
                total += steps(start, stop, step) * 8;
            }
        }
    }
    total
}

/// The shortest match of a pattern, remembered for the last pattern asked about (a pattern
/// is nearly always a constant).
#[derive(Default)]
struct MinimumMatch {
    last: Option<(String, String, usize)>,
}

impl MinimumMatch {
    fn of(&mut self, pattern: &str, flags: &str) -> usize {
        if let Some((p, f, minimum)) = &self.last
            && p == pattern
            && f == flags
        {
            return *minimum;
        }
        let minimum = regex_syntax::ParserBuilder::new()
            .ignore_whitespace(flags.contains('x'))
            .case_insensitive(flags.contains('i'))
            .build()
            .parse(pattern)
            .ok()
            .and_then(|hir| hir.properties().minimum_len())
            .unwrap_or(0);
        self.last = Some((pattern.to_string(), flags.to_string(), minimum));
        minimum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use datafusion::common::ScalarValue;

    fn text(value: &str) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(value.to_string())))
    }

    fn int(value: i64) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Int64(Some(value)))
    }

    fn check(growth: Growth, args: &[ColumnarValue], rows: usize, expected: usize) {
        let estimate = estimate(growth, args, rows).expect("an estimate");
        assert_eq!(estimate, expected, "{growth:?}");
    }

    #[test]
    fn estimates_bound_what_each_function_makes_from_its_arguments() {
        check(Growth::Repeat, &[text("ab"), int(1 << 30)], 1, 2 << 30);
        check(Growth::Repeat, &[text("ab"), int(-3)], 1, 0);
        // A column argument is counted row by row over the batch.
        let words: ArrayRef = Arc::new(StringArray::from(vec![Some("abc"), None, Some("x")]));
        check(
            Growth::Repeat,
            &[ColumnarValue::Array(words.clone()), int(10)],
            3,
            40,
        );
        let counts: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
        check(
            Growth::Repeat,
            &[ColumnarValue::Array(words), ColumnarValue::Array(counts)],
            3,
            3 + 3,
        );
        check(Growth::Pad, &[text("a"), int(100)], 1, 101);
        check(Growth::Pad, &[text("a"), int(100), text("é")], 1, 201);
        check(
            Growth::Replace,
            &[text("aaaa"), text("a"), text("bbb")],
            1,
            4 + 12,
        );
        check(
            Growth::Replace,
            &[text("ab"), text(""), text("x")],
            1,
            2 + 3,
        );
        // One match without 'g'; with it, as many as the shortest match allows.
        check(
            Growth::RegexpReplace,
            &[text("aaaa"), text("a+"), text("xy")],
            1,
            4 + 2,
        );
        check(
            Growth::RegexpReplace,
            &[text("aaaa"), text("aa"), text("xy"), text("g")],
            1,
            4 + 3 * 2,
        );
        check(
            Growth::RegexpReplace,
            &[text("aaaa"), text("a*"), text(r"<\1>"), text("g")],
            1,
            4 + 5 * 4 + 4,
        );
        check(
            Growth::ConcatWs,
            &[text("--"), text("a"), text("b"), text("c")],
            1,
            3 + 4,
        );
        check(
            Growth::Range,
            &[int(0), int(1_000_000_000)],
            1,
            8 * 1_000_000_001,
        );
        check(Growth::Range, &[int(10)], 1, 8 * 11);
        check(Growth::ArrayRepeat, &[int(7), int(1000)], 1, 16 * 1000);
    }

    #[test]
    fn the_caps_follow_the_sql_memory_and_never_exceed_64_mib() {
        let pool: Arc<dyn MemoryPool> =
            Arc::new(datafusion::execution::memory_pool::UnboundedMemoryPool::default());
        let small = CallLimits::new(pool.clone(), 128 << 20);
        assert_eq!(
            (small.max_call_bytes, small.max_constant_bytes),
            (16 << 20, 2 << 10)
        );
        let large = CallLimits::new(pool, 8 << 30);
        assert_eq!(
            (large.max_call_bytes, large.max_constant_bytes),
            (64 << 20, 8 << 10)
        );
        assert_eq!(size_text(3 << 20), "3 MiB");
        assert_eq!(size_text(2048), "2 KiB");
    }
}
