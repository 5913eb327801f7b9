//! Trace search as SQL over `spans`: the attribute expression's parser, the literals' escaping
//! and the one query a search runs (and shows, so the user can continue in the console).
//!
//! ```text
//!  service, operation, status, attributes ──> one span of the trace matches them all (`matched`)
//!  from, to                                ──> that span started in the window
//!  min/max_duration                        ──> the trace's duration (first start to last end)
//! ```
//!
//! Nothing a user typed reaches the SQL text except through [`sql_string`] (text, single
//! quotes doubled) or as a number the server parsed and printed itself.

use std::fmt::Write as _;

/// Builds a condition's test from the value after its operator.
type MakeTest = fn(String) -> Result<Test, String>;

/// Longest attribute expression accepted: a search box, not a program.
pub const MAX_EXPRESSION: usize = 4096;
/// Most attribute conditions in one search.
pub const MAX_CONDITIONS: usize = 32;
/// Longest regular expression; its compiled form is also capped ([`REGEX_SIZE_LIMIT`]).
const MAX_PATTERN: usize = 1024;
/// Bytes a compiled pattern may take, well under the engine's own (10 MiB) default.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// How far outside the window a matched trace's other spans are counted: a trace that
/// started in the window usually ends within minutes, and an unbounded scan would read the
/// whole store.
pub const TRACE_SPREAD_NS: i64 = 15 * 60 * 1_000_000_000;

/// One attribute condition, `key op value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub key: String,
    pub test: Test,
}

/// What a condition asks of the attribute's value (attribute values are stored as text).
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    /// `key`: the attribute is present.
    Present,
    /// `key=value`: the text equals.
    Equals(String),
    /// `key!=value`: present with another text.
    NotEquals(String),
    /// `key~regex`: the text matches (Rust `regex` syntax, unanchored).
    Matches(String),
    /// `key!~regex`: present and does not match.
    NotMatches(String),
    /// `key>5` and the others: the value read as a number compares so.
    Compare(Comparison, f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Comparison {
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

impl Comparison {
    fn sql(self) -> &'static str {
        match self {
            Self::Greater => ">",
            Self::GreaterOrEqual => ">=",
            Self::Less => "<",
            Self::LessOrEqual => "<=",
        }
    }
}

/// A span's status as the search names it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Status {
    Ok,
    Error,
    Unset,
}

impl Status {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "ok" => Ok(Self::Ok),
            "error" => Ok(Self::Error),
            "unset" => Ok(Self::Unset),
            _ => Err(format!(
                "`status` must be ok, error or unset, not `{}`",
                text.chars().take(40).collect::<String>()
            )),
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Self::Ok => "'OK'",
            Self::Error => "'ERROR'",
            Self::Unset => "'UNSET'",
        }
    }
}

/// How results are ordered before the limit applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Order {
    Recent,
    Longest,
    Shortest,
    MostSpans,
}

impl Order {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "recent" => Ok(Self::Recent),
            "longest" => Ok(Self::Longest),
            "shortest" => Ok(Self::Shortest),
            "most_spans" => Ok(Self::MostSpans),
            other => Err(format!(
                "`order` must be recent, longest, shortest or most_spans, not `{}`",
                other.chars().take(40).collect::<String>()
            )),
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Self::Recent => "start_time DESC, trace_id",
            Self::Longest => "duration_ns DESC, trace_id",
            Self::Shortest => "duration_ns ASC, trace_id",
            Self::MostSpans => "spans DESC, trace_id",
        }
    }
}

/// A validated search.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    pub from_ns: i64,
    pub to_ns: i64,
    pub service: Option<String>,
    pub operation: Option<String>,
    pub conditions: Vec<Condition>,
    pub status: Option<Status>,
    pub min_duration_ns: Option<i64>,
    pub max_duration_ns: Option<i64>,
    pub order: Order,
    pub limit: usize,
}

/// A SQL string literal holding exactly `text`: wrapped in single quotes, each single quote
/// doubled. DataFusion's dialect (generic) gives backslashes no meaning inside a literal, so
/// this is the only character that needs escaping; the tests run every tricky string
/// through the real engine and read it back.
pub fn sql_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        if c == '\'' {
            out.push('\'');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// A timestamp literal for nanoseconds since the epoch (UTC).
fn sql_time(ns: i64) -> String {
    match arrow::temporal_conversions::timestamp_ns_to_datetime(ns) {
        Some(time) => format!("TIMESTAMP '{}'", time.format("%Y-%m-%dT%H:%M:%S%.9fZ")),
        // Out of chrono's range: the epoch offset as a number is as exact.
        None => format!("to_timestamp_nanos({ns})"),
    }
}

/// The attribute's value on a span: its own attribute, else its resource's.
fn attribute(key: &str) -> String {
    let key = sql_string(key);
    format!("coalesce(attributes[{key}], resource_attributes[{key}])")
}

impl Condition {
    /// The condition as a SQL predicate on one `spans` row.
    pub fn sql(&self) -> String {
        let value = attribute(&self.key);
        match &self.test {
            Test::Present => format!("{value} IS NOT NULL"),
            Test::Equals(text) => format!("{value} = {}", sql_string(text)),
            Test::NotEquals(text) => format!("{value} <> {}", sql_string(text)),
            Test::Matches(pattern) => format!("{value} ~ {}", sql_string(pattern)),
            Test::NotMatches(pattern) => format!("{value} !~ {}", sql_string(pattern)),
            // Printed from the parsed number, never from the user's text.
            Test::Compare(comparison, number) => format!(
                "TRY_CAST({value} AS DOUBLE) {} {}",
                comparison.sql(),
                number_literal(*number)
            ),
        }
    }
}

/// A finite number as SQL: Rust prints `f64` without exponent, which every SQL reads.
fn number_literal(number: f64) -> String {
    let text = format!("{number}");
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

impl Search {
    /// The query this search runs: one row per trace, the columns the answer lists.
    pub fn sql(&self) -> String {
        let mut span_filter = vec![
            format!("start_time >= {}", sql_time(self.from_ns)),
            format!("start_time < {}", sql_time(self.to_ns)),
        ];
        if let Some(service) = &self.service {
            span_filter.push(format!("service_name = {}", sql_string(service)));
        }
        if let Some(operation) = &self.operation {
            span_filter.push(format!("name = {}", sql_string(operation)));
        }
        if let Some(status) = self.status {
            span_filter.push(format!("status_code = {}", status.sql()));
        }
        span_filter.extend(self.conditions.iter().map(Condition::sql));
        let mut trace_filter = Vec::new();
        if let Some(min) = self.min_duration_ns {
            trace_filter.push(format!("duration_ns >= {min}"));
        }
        if let Some(max) = self.max_duration_ns {
            trace_filter.push(format!("duration_ns <= {max}"));
        }
        let mut sql = String::new();
        // Writing to a String cannot fail.
        let _ = write!(
            sql,
            "-- traces with a span that matches the search (flowscope trace search)\n\
             WITH matched AS (\n  SELECT DISTINCT trace_id FROM spans\n  WHERE {}\n),\n\
             traces AS (\n  SELECT trace_id,\n    \
             first_value(service_name ORDER BY parent_span_id IS NOT NULL, start_time) AS root_service,\n    \
             first_value(name ORDER BY parent_span_id IS NOT NULL, start_time) AS root_operation,\n    \
             min(start_time) AS start_time,\n    \
             CAST(max(end_time) AS BIGINT) - CAST(min(start_time) AS BIGINT) AS duration_ns,\n    \
             count(*) AS spans,\n    \
             count(*) FILTER (WHERE status_code = 'ERROR') AS errors,\n    \
             array_agg(DISTINCT service_name) AS services\n  \
             FROM spans\n  WHERE start_time >= {} AND start_time < {}\n    \
             AND trace_id IN (SELECT trace_id FROM matched)\n  GROUP BY trace_id\n)\n\
             SELECT trace_id, root_service, root_operation, start_time, duration_ns, spans, errors, services\n\
             FROM traces\n",
            span_filter.join("\n    AND "),
            sql_time(self.from_ns.saturating_sub(TRACE_SPREAD_NS)),
            sql_time(self.to_ns.saturating_add(TRACE_SPREAD_NS)),
        );
        if !trace_filter.is_empty() {
            let _ = writeln!(sql, "WHERE {}", trace_filter.join(" AND "));
        }
        let _ = write!(sql, "ORDER BY {}\nLIMIT {}", self.order.sql(), self.limit);
        sql
    }
}

/// Parses the attribute expression: conditions separated by white space, all of which one
/// span must meet. `key=value`, `key!=value`, `key~regex`, `key!~regex`, `key>5`, `key>=5`,
/// `key<5`, `key<=5`, or a bare `key` (present). A key or value with spaces or operator
/// characters is written in double quotes, with `\"` and `\\` inside.
pub fn parse_conditions(text: &str) -> Result<Vec<Condition>, String> {
    if text.len() > MAX_EXPRESSION {
        return Err(format!(
            "`attributes` is {} bytes long; at most {MAX_EXPRESSION} are accepted",
            text.len()
        ));
    }
    let mut reader = Reader {
        chars: text.chars().collect(),
        at: 0,
    };
    let mut conditions = Vec::new();
    loop {
        reader.skip_space();
        if reader.done() {
            break;
        }
        let start = reader.at;
        let condition = reader.condition().map_err(|why| {
            let shown: String = reader.chars[start..].iter().take(60).collect();
            format!("attribute condition `{}` {why}", shown.trim_end())
        })?;
        conditions.push(condition);
        if conditions.len() > MAX_CONDITIONS {
            return Err(format!(
                "more than {MAX_CONDITIONS} attribute conditions; narrow the search with fewer"
            ));
        }
    }
    Ok(conditions)
}

struct Reader {
    chars: Vec<char>,
    at: usize,
}

/// Characters that end an unquoted key.
fn ends_key(c: char) -> bool {
    c.is_whitespace() || matches!(c, '=' | '!' | '~' | '<' | '>' | '"')
}

impl Reader {
    fn done(&self) -> bool {
        self.at >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    fn eat(&mut self, text: &str) -> bool {
        let wanted: Vec<char> = text.chars().collect();
        if self.chars[self.at..].starts_with(&wanted) {
            self.at += wanted.len();
            true
        } else {
            false
        }
    }

    fn condition(&mut self) -> Result<Condition, String> {
        let key = if self.peek() == Some('"') {
            self.quoted()?
        } else {
            let start = self.at;
            while self.peek().is_some_and(|c| !ends_key(c)) {
                self.at += 1;
            }
            self.chars[start..self.at].iter().collect()
        };
        if key.is_empty() {
            return Err("has no key; write it as key=value, key~regex or key>5".into());
        }
        if self.done() || self.peek().is_some_and(char::is_whitespace) {
            return Ok(Condition {
                key,
                test: Test::Present,
            });
        }
        // Longest operators first.
        let operators: [(&str, MakeTest); 9] = [
            ("!=", |v| Ok(Test::NotEquals(v))),
            ("!~", |v| regex(&v).map(|()| Test::NotMatches(v))),
            (">=", |v| {
                number(&v).map(|n| Test::Compare(Comparison::GreaterOrEqual, n))
            }),
            ("<=", |v| {
                number(&v).map(|n| Test::Compare(Comparison::LessOrEqual, n))
            }),
            ("==", |v| Ok(Test::Equals(v))),
            ("=", |v| Ok(Test::Equals(v))),
            ("~", |v| regex(&v).map(|()| Test::Matches(v))),
            (">", |v| {
                number(&v).map(|n| Test::Compare(Comparison::Greater, n))
            }),
            ("<", |v| {
                number(&v).map(|n| Test::Compare(Comparison::Less, n))
            }),
        ];
        let Some(make) = operators
            .iter()
            .find(|(operator, _)| self.eat(operator))
            .map(|(_, make)| make)
        else {
            return Err(
                "has no operator; use =, !=, ~, !~, >, >=, < or <= (quote keys that contain them)"
                    .into(),
            );
        };
        let value = match self.peek() {
            Some('"') => self.quoted()?,
            None => return Err("has no value; write key=\"\" to ask for an empty value".into()),
            Some(c) if c.is_whitespace() => {
                return Err("has no value; write key=\"\" to ask for an empty value".into());
            }
            Some(_) => {
                let start = self.at;
                while self.peek().is_some_and(|c| !c.is_whitespace()) {
                    self.at += 1;
                }
                self.chars[start..self.at].iter().collect()
            }
        };
        if self.peek().is_some_and(|c| !c.is_whitespace()) {
            return Err(
                "has text right after its closing quote; separate conditions with a space".into(),
            );
        }
        Ok(Condition {
            key,
            test: make(value)?,
        })
    }

    /// A double-quoted string: `\"` and `\\` stand for themselves, `\n` and `\t` for a new
    /// line and a tab; any other backslash is kept, so `"\d+"` stays a regex.
    fn quoted(&mut self) -> Result<String, String> {
        self.at += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "has an unterminated quote; close it with \" (write \\\" for a quote inside)"
                            .into(),
                    );
                }
                Some('"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some('\\') => {
                    self.at += 1;
                    match self.peek() {
                        Some('"') => out.push('"'),
                        Some('\\') => out.push('\\'),
                        Some('n') => out.push('\n'),
                        Some('t') => out.push('\t'),
                        Some(other) => {
                            out.push('\\');
                            out.push(other);
                        }
                        None => continue,
                    }
                    self.at += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.at += 1;
                }
            }
        }
    }
}

/// A number the comparison operators accept: finite, decimal (`5`, `-0.25`, `1e3`).
fn number(text: &str) -> Result<f64, String> {
    let plain = text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
    match text.parse::<f64>() {
        Ok(value) if plain && value.is_finite() => Ok(value),
        _ => Err(format!(
            "compares with `{}`, which is not a number; use = or ~ to compare text",
            text.chars().take(40).collect::<String>()
        )),
    }
}

/// The pattern compiles, within the size cap, as the SQL engine (Rust `regex`) will read it.
fn regex(pattern: &str) -> Result<(), String> {
    if pattern.len() > MAX_PATTERN {
        return Err(format!(
            "has a regular expression of {} bytes; at most {MAX_PATTERN} are accepted",
            pattern.len()
        ));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(|_| ())
        .map_err(|error| {
            let why = error.to_string();
            let first = why.lines().last().unwrap_or("").trim().to_string();
            format!(
                "has an invalid regular expression ({}); fix the pattern (Rust regex syntax), or use = to compare exact text",
                if first.is_empty() { why } else { first }
            )
        })
}

/// A duration such as `250ms`, `1.5s`, `2m`, `300us` or `10ns`, in nanoseconds.
pub fn parse_duration_ns(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: f64 = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => {
            return Err(format!(
                "duration `{}` needs a unit: ns, us, ms, s, m or h (e.g. 250ms, 1.5s)",
                text.chars().take(40).collect::<String>()
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("duration `{text}` must start with a number, e.g. 250ms or 1.5s"))?;
    let ns = (value * scale).round();
    if !(0.0..=i64::MAX as f64 / 2.0).contains(&ns) {
        return Err(format!("duration `{text}` is out of range"));
    }
    Ok(ns as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: &[(&str, Test)]) {
        let parsed = parse_conditions(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let expected: Vec<Condition> = expected
            .iter()
            .map(|(key, test)| Condition {
                key: key.to_string(),
                test: test.clone(),
            })
            .collect();
        assert_eq!(parsed, expected, "{text}");
    }

    fn refused(text: &str, says: &str) {
        match parse_conditions(text) {
            Ok(parsed) => panic!("{text} was accepted as {parsed:?}"),
            Err(message) => assert!(message.contains(says), "{text}: {message}"),
        }
    }

    #[test]
    fn every_operator_parses() {
        use Comparison::*;
        check("", &[]);
        check("  \n ", &[]);
        check(
            "http.route=/checkout",
            &[("http.route", Test::Equals("/checkout".into()))],
        );
        check("a==b", &[("a", Test::Equals("b".into()))]);
        check("a!=b", &[("a", Test::NotEquals("b".into()))]);
        check("a~^GET.*$", &[("a", Test::Matches("^GET.*$".into()))]);
        check("a!~x|y", &[("a", Test::NotMatches("x|y".into()))]);
        check("code>5", &[("code", Test::Compare(Greater, 5.0))]);
        check(
            "code>=500",
            &[("code", Test::Compare(GreaterOrEqual, 500.0))],
        );
        check("lag<-0.5", &[("lag", Test::Compare(Less, -0.5))]);
        check("lag<=1e3", &[("lag", Test::Compare(LessOrEqual, 1000.0))]);
        check("error", &[("error", Test::Present)]);
        check(
            "a=1  b~x\tc>2 d",
            &[
                ("a", Test::Equals("1".into())),
                ("b", Test::Matches("x".into())),
                ("c", Test::Compare(Greater, 2.0)),
                ("d", Test::Present),
            ],
        );
    }

    #[test]
    fn quotes_hold_spaces_operators_and_escapes() {
        check(
            r#"user.name="Ann O'Neil""#,
            &[("user.name", Test::Equals("Ann O'Neil".into()))],
        );
        check(r#""a=b"=c"#, &[("a=b", Test::Equals("c".into()))]);
        check(
            r#"msg="say \"hi\" \\ now\nthen""#,
            &[("msg", Test::Equals("say \"hi\" \\ now\nthen".into()))],
        );
        check(r#"id~"\d+""#, &[("id", Test::Matches(r"\d+".into()))]);
        check(r#"empty="""#, &[("empty", Test::Equals(String::new()))]);
        check("ünï=çödé", &[("ünï", Test::Equals("çödé".into()))]);
    }

    #[test]
    fn bad_input_is_refused_with_what_to_do() {
        refused("a~(", "invalid regular expression");
        refused("a!~[z-a]", "invalid regular expression");
        refused("a>fast", "not a number");
        refused("a>inf", "not a number");
        refused("a<NaN", "not a number");
        refused("a>0x10", "not a number");
        refused("a=", "has no value");
        refused("a= b", "has no value");
        refused("=b", "has no key");
        refused(r#"a="open"#, "unterminated quote");
        refused(r#"a="x"y"#, "right after its closing quote");
        refused("a!b", "has no operator");
        refused(&"a=b ".repeat(MAX_CONDITIONS + 1), "more than");
        refused(&"x".repeat(MAX_EXPRESSION + 1), "at most");
        refused(&format!("a~{}", "a".repeat(MAX_PATTERN + 1)), "at most");
        // Compiles to far more than the size cap.
        refused(r"a~\w{1000}\w{1000}", "invalid regular expression");
    }

    #[test]
    fn status_and_order_are_closed_lists() {
        assert_eq!(Status::parse("ERROR"), Ok(Status::Error));
        assert_eq!(Status::parse("ok"), Ok(Status::Ok));
        assert_eq!(Status::parse("unset"), Ok(Status::Unset));
        assert!(
            Status::parse("failed")
                .unwrap_err()
                .contains("ok, error or unset")
        );
        assert_eq!(Order::parse("longest"), Ok(Order::Longest));
        assert!(Order::parse("random").is_err());
    }

    #[test]
    fn durations_take_units_and_decimals() {
        assert_eq!(parse_duration_ns("250ms"), Ok(250_000_000));
        assert_eq!(parse_duration_ns("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration_ns("300us"), Ok(300_000));
        assert_eq!(parse_duration_ns("300µs"), Ok(300_000));
        assert_eq!(parse_duration_ns("2m"), Ok(120_000_000_000));
        assert_eq!(parse_duration_ns("7ns"), Ok(7));
        assert!(
            parse_duration_ns("250")
                .unwrap_err()
                .contains("needs a unit")
        );
        assert!(parse_duration_ns("fast").is_err());
        assert!(parse_duration_ns("1e30h").is_err());
        assert!(parse_duration_ns("-5ms").is_err());
    }

    #[test]
    fn literals_double_quotes_and_nothing_else() {
        assert_eq!(sql_string("plain"), "'plain'");
        assert_eq!(sql_string("O'Neil"), "'O''Neil'");
        assert_eq!(sql_string("''"), "''''''");
        assert_eq!(sql_string(r"\'"), r"'\'''");
        assert_eq!(sql_string(""), "''");
    }

    #[test]
    fn numbers_are_printed_by_the_server_not_copied() {
        assert_eq!(number_literal(5.0), "5.0");
        assert_eq!(number_literal(-0.25), "-0.25");
        assert_eq!(number_literal(1e21), "1000000000000000000000.0");
        let condition = parse_conditions("n>+5.0e0").unwrap().remove(0);
        assert_eq!(
            condition.sql(),
            "TRY_CAST(coalesce(attributes['n'], resource_attributes['n']) AS DOUBLE) > 5.0"
        );
    }

    fn search() -> Search {
        Search {
            from_ns: 1_764_396_000_000_000_000,
            to_ns: 1_764_399_600_000_000_000,
            service: None,
            operation: None,
            conditions: Vec::new(),
            status: None,
            min_duration_ns: None,
            max_duration_ns: None,
            order: Order::Recent,
            limit: 20,
        }
    }

    #[test]
    fn a_search_becomes_one_readable_query() {
        let mut s = search();
        s.service = Some("checkout".into());
        s.operation = Some("GET /cart".into());
        s.status = Some(Status::Error);
        s.conditions = parse_conditions("http.status_code>=500 region~^eu-").unwrap();
        s.min_duration_ns = Some(100_000_000);
        s.max_duration_ns = Some(2_000_000_000);
        s.order = Order::Longest;
        let sql = s.sql();
        for part in [
            "WHERE start_time >= TIMESTAMP '2025-11-29T06:00:00.000000000Z'",
            "AND start_time < TIMESTAMP '2025-11-29T07:00:00.000000000Z'",
            "AND service_name = 'checkout'",
            "AND name = 'GET /cart'",
            "AND status_code = 'ERROR'",
            "AND TRY_CAST(coalesce(attributes['http.status_code'], resource_attributes['http.status_code']) AS DOUBLE) >= 500.0",
            "AND coalesce(attributes['region'], resource_attributes['region']) ~ '^eu-'",
            "WHERE start_time >= TIMESTAMP '2025-11-29T05:45:00.000000000Z' AND start_time < TIMESTAMP '2025-11-29T07:15:00.000000000Z'",
            "WHERE duration_ns >= 100000000 AND duration_ns <= 2000000000",
            "ORDER BY duration_ns DESC, trace_id\nLIMIT 20",
        ] {
            assert!(sql.contains(part), "{part}\nnot in\n{sql}");
        }
        // Without duration bounds there is no outer WHERE.
        let plain = search().sql();
        assert!(!plain.contains("duration_ns >="), "{plain}");
        assert!(
            plain.ends_with("ORDER BY start_time DESC, trace_id\nLIMIT 20"),
            "{plain}"
        );
    }

    /// Every user string appears in the SQL only inside a literal: after removing the
    /// literals, what is left is the same skeleton whatever the strings were.
    #[test]
    fn user_text_never_leaves_its_literal() {
        let nasty = [
            "x' OR '1'='1",
            "x'; DROP TABLE spans; --",
            "x\\'; SELECT 1; --",
            "' UNION SELECT * FROM spans --",
            "/* comment */ '",
            "\u{0}'\u{2028}\r\n'",
            "$$ $tag$ E'\\x27'",
            "''''",
        ];
        let skeleton = |sql: &str| strip_literals(sql);
        let mut base = search();
        base.service = Some("s".into());
        base.operation = Some("o".into());
        base.conditions = vec![Condition {
            key: "k".into(),
            test: Test::Equals("v".into()),
        }];
        let expected = skeleton(&base.sql());
        for text in nasty {
            let mut s = base.clone();
            s.service = Some(text.into());
            s.operation = Some(text.into());
            s.conditions = vec![Condition {
                key: text.into(),
                test: Test::Equals(text.into()),
            }];
            assert_eq!(skeleton(&s.sql()), expected, "{text}");
        }
    }

    /// The SQL with every single-quoted literal replaced by `?` (a quote inside a literal is
    /// doubled, as in the SQL standard).
    fn strip_literals(sql: &str) -> String {
        let mut out = String::new();
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '\'' {
                out.push(c);
                continue;
            }
            loop {
                match chars.next() {
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                    }
                    Some('\'') | None => break,
                    Some(_) => {}
                }
            }
            out.push('?');
        }
        out
    }
}
