//! JSON values as the original Node.js service turned them into text. The chat endpoint
//! answers `"Echo: " + String(message)` and sends bodies through `JSON.stringify`, so clients
//! see JavaScript's conversions (number formatting, array joining, the order of integer-like
//! keys), which differ from serde_json's; this module reproduces them exactly.
//!
//! Known differences come from serde_json's parser, not from the conversions here, and are
//! accepted rather than worked around: `JSON.parse` accepts lone surrogate escapes
//! (`"\ud800"`), numbers that overflow a double (`1e400` becomes `Infinity`) and nesting
//! deeper than 128 levels, all of which serde_json rejects.

use std::fmt;

use serde_json::{Map, Number, Value};

/// Largest JavaScript array index; integer-like keys up to it are listed first, in numeric order.
pub(crate) const LARGEST_ARRAY_INDEX: u64 = 4_294_967_294;

/// `String(value)` is impossible: an object has its own `toString` key, which `JSON.parse`
/// can only set to a non-function, so JavaScript throws
/// `TypeError: Cannot convert object to primitive value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotConvertible;

impl fmt::Display for NotConvertible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "message cannot be converted to text: an object with its own toString key has no string form",
        )
    }
}

impl std::error::Error for NotConvertible {}

/// JavaScript truthiness of a `JSON.parse` result: only `null`, `false`, `0` and `""` are falsy.
pub(crate) fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(flag) => *flag,
        Value::Number(number) => {
            let x = number_value(number);
            x != 0.0 && !x.is_nan()
        }
        Value::String(text) => !text.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// `String(value)` for a value `JSON.parse` produced.
pub(crate) fn to_js_string(value: &Value) -> Result<String, NotConvertible> {
    let mut out = String::new();
    push_js_string(value, &mut out)?;
    Ok(out)
}

/// `Number.prototype.toString()` in base 10, as ECMAScript's Number::toString defines it.
#[cfg(test)]
pub(crate) fn number_to_js_string(x: f64) -> String {
    let mut out = String::new();
    push_number(x, &mut out);
    out
}

/// Appends `JSON.stringify(value)` (no indentation) to `out`.
pub(crate) fn write_js_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::Number(number) => {
            let x = number_value(number);
            // JSON.stringify writes null for NaN and the infinities; serde_json numbers are
            // always finite, so this only keeps the function total.
            if x.is_finite() {
                push_number(x, out);
            } else {
                out.push_str("null");
            }
        }
        Value::String(text) => write_json_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                write_js_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => write_js_object(map, out),
    }
}

/// `JSON.stringify(JSON.parse(text))`.
pub(crate) fn normalize_json_text(text: &str) -> Result<String, serde_json::Error> {
    let value: Value = serde_json::from_str(text)?;
    let mut out = String::with_capacity(text.len());
    write_js_json(&value, &mut out);
    Ok(out)
}

/// The number a JSON number denotes in JavaScript: `JSON.parse` reads every number, integers
/// beyond 2^53 included, as a double, so integers go through `f64` too.
fn number_value(number: &Number) -> f64 {
    // Always `Some` without serde_json's arbitrary_precision feature.
    number.as_f64().unwrap_or(f64::NAN)
}

/// Appends `String(value)`; `null` inside an array joins as nothing, unlike a top-level `null`.
fn push_js_string(value: &Value, out: &mut String) -> Result<(), NotConvertible> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::Number(number) => push_number(number_value(number), out),
        Value::String(text) => out.push_str(text),
        Value::Array(items) => {
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                if !item.is_null() {
                    push_js_string(item, out)?;
                }
            }
        }
        Value::Object(map) => {
            // An own `toString` shadows Object.prototype.toString and is never callable, so
            // ToPrimitive falls back to valueOf, which returns the object itself: a TypeError.
            // An own `valueOf` alone changes nothing, because toString is tried first.
            if map.contains_key("toString") {
                return Err(NotConvertible);
            }
            out.push_str("[object Object]");
        }
    }
    Ok(())
}

/// Appends Number::toString(x): shortest round-trip digits, plain notation for decimal
/// exponents in -6 < n <= 21 and exponent notation otherwise.
fn push_number(x: f64, out: &mut String) {
    if x.is_nan() {
        out.push_str("NaN");
        return;
    }
    if x.is_infinite() {
        out.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    // Covers -0 too, which JavaScript prints without a sign.
    if x == 0.0 {
        out.push('0');
        return;
    }
    if x < 0.0 {
        out.push('-');
    }
    // Rust's `{:e}` finds how few digits round-trip ("1.2345e30", "5e-324"). When two
    // candidates of that length are equally close, ECMAScript wants the even one while `{:e}`
    // may pick the other (770361437462270.25 must print as ...270.2), so the digits come from
    // `{:.N e}`, which rounds the exact value to that length with ties to even.
    let shortest = format!("{:e}", x.abs());
    let length = shortest.split_once('e').map_or(1, |(mantissa, _)| {
        mantissa.bytes().filter(u8::is_ascii_digit).count()
    });
    let rounded = format!("{:.*e}", length.saturating_sub(1), x.abs());
    let (mantissa, exponent) = rounded.split_once('e').unwrap_or((rounded.as_str(), "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = match digits.trim_end_matches('0') {
        "" => "0",
        trimmed => trimmed,
    };
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let k = i64::try_from(digits.len()).unwrap_or(i64::MAX);
    // ECMAScript's n: the value is 0.d1d2...dk × 10^n.
    let n = exponent + 1;

    if k <= n && n <= 21 {
        out.push_str(digits);
        push_zeros(n - k, out);
    } else if 0 < n && n <= 21 {
        let (whole, fraction) = digits.split_at(usize::try_from(n).unwrap_or(0));
        out.push_str(whole);
        out.push('.');
        out.push_str(fraction);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        push_zeros(-n, out);
        out.push_str(digits);
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if n - 1 < 0 { '-' } else { '+' });
        out.push_str(&(n - 1).abs().to_string());
    }
}

/// Appends `count` zeros.
fn push_zeros(count: i64, out: &mut String) {
    for _ in 0..count {
        out.push('0');
    }
}

/// Appends `JSON.stringify(text)` for a string: `"`, `\\` and control characters escaped
/// (`\b \f \n \r \t`, others as lowercase `\u00xx`), everything else raw.
pub(crate) fn write_json_string(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                out.push_str("\\u00");
                out.push(hex_digit(u32::from(c) >> 4));
                out.push(hex_digit(u32::from(c) & 0xF));
            }
            // DEL, non-ASCII and U+2028/U+2029 stay raw, as JSON.stringify leaves them.
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The lowercase hexadecimal digit for `nibble` (0..=15).
fn hex_digit(nibble: u32) -> char {
    char::from_digit(nibble, 16).unwrap_or('0')
}

/// Appends an object in JavaScript's own-key order: array-index keys ("0", "7", up to
/// 4294967294) first in ascending numeric order, then the other keys in insertion order.
/// `JSON.parse` builds objects that follow this order, whatever order the text had.
fn write_js_object(map: &Map<String, Value>, out: &mut String) {
    let mut indexed: Vec<(u32, &String, &Value)> = map
        .iter()
        .filter_map(|(key, value)| array_index(key).map(|index| (index, key, value)))
        .collect();
    indexed.sort_unstable_by_key(|(index, _, _)| *index);
    let named = map.iter().filter(|(key, _)| array_index(key).is_none());

    out.push('{');
    let entries = indexed
        .into_iter()
        .map(|(_, key, value)| (key, value))
        .chain(named);
    for (position, (key, value)) in entries.enumerate() {
        if position > 0 {
            out.push(',');
        }
        write_json_string(key, out);
        out.push(':');
        write_js_json(value, out);
    }
    out.push('}');
}

/// The array index `key` denotes, if it is one: the canonical decimal form of an integer in
/// 0..=4294967294 ("01" and "-1" are ordinary keys).
pub(crate) fn array_index(key: &str) -> Option<u32> {
    let bytes = key.as_bytes();
    let canonical = match bytes {
        [] => false,
        [b'0'] => true,
        [b'0', ..] => false,
        _ => bytes.len() <= 10 && bytes.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return None;
    }
    let index: u64 = key.parse().ok()?;
    if index > LARGEST_ARRAY_INDEX {
        return None;
    }
    u32::try_from(index).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses test JSON, which is always valid.
    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("test JSON is valid")
    }

    #[test]
    fn numbers_print_like_number_prototype_to_string() {
        // Expected values produced by Node 20: String(Number(input)).
        let cases = [
            ("0", "0"),
            ("-0", "0"),
            ("1", "1"),
            ("-1", "-1"),
            ("100", "100"),
            ("1.5", "1.5"),
            ("-1.5", "-1.5"),
            ("0.1", "0.1"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("1e21", "1e+21"),
            ("1e-7", "1e-7"),
            ("1e-6", "0.000001"),
            ("1.5e-7", "1.5e-7"),
            ("0.000001234", "0.000001234"),
            ("123456789012345680000", "123456789012345680000"),
            ("1e20", "100000000000000000000"),
            ("999999999999999900000", "999999999999999900000"),
            ("5e-324", "5e-324"),
            ("-5e-324", "-5e-324"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("2.2250738585072014e-308", "2.2250738585072014e-308"),
            ("1.2345e30", "1.2345e+30"),
            ("-1.2345e30", "-1.2345e+30"),
            ("4.35", "4.35"),
            ("0.3333333333333333", "0.3333333333333333"),
            ("9007199254740993", "9007199254740992"),
            ("18446744073709551616", "18446744073709552000"),
            ("12345678901234567890", "12345678901234567000"),
            ("770361437462270.25", "770361437462270.2"),
            ("70773269352503.125", "70773269352503.12"),
            ("1e100", "1e+100"),
            ("123e-20", "1.23e-18"),
            ("100.25", "100.25"),
            ("NaN", "NaN"),
            ("Infinity", "Infinity"),
            ("-Infinity", "-Infinity"),
        ];
        for (input, expected) in cases {
            let x: f64 = input.parse().expect("test literal is a number");
            assert_eq!(number_to_js_string(x), expected, "String({input})");
        }
    }

    #[test]
    fn a_number_above_1e21_uses_exponent_notation() {
        assert_eq!(number_to_js_string(1e21), "1e+21");
        assert_eq!(
            number_to_js_string(999_999_999_999_999_900_000.0),
            "999999999999999900000"
        );
    }

    #[test]
    fn a_sum_with_rounding_error_prints_all_its_digits() {
        assert_eq!(number_to_js_string(0.1 + 0.2), "0.30000000000000004");
    }

    #[test]
    fn negative_zero_prints_without_a_sign() {
        assert_eq!(number_to_js_string(-0.0), "0");
    }

    #[test]
    fn two_equally_short_candidates_resolve_to_the_even_digit() {
        // 770361437462270.25 is exactly representable and lies halfway between the 16-digit
        // candidates ...270.2 and ...270.3 (built by addition: a literal would need more
        // digits than the shortest form).
        assert_eq!(
            number_to_js_string(770_361_437_462_270.0 + 0.25),
            "770361437462270.2"
        );
        assert_eq!(
            number_to_js_string(-(1_757_073_641_360_194.0 + 0.25)),
            "-1757073641360194.2"
        );
        assert_eq!(
            number_to_js_string(70_773_269_352_503.0 + 0.125),
            "70773269352503.12"
        );
    }

    #[test]
    fn values_convert_like_the_string_function() {
        // Expected values produced by Node 20: String(JSON.parse(input)); None where it throws.
        let cases = [
            ("null", Some("null")),
            ("true", Some("true")),
            ("false", Some("false")),
            ("0", Some("0")),
            ("-0", Some("0")),
            ("1e21", Some("1e+21")),
            ("12345678901234567890", Some("12345678901234567000")),
            (r#""""#, Some("")),
            (r#""héllo\n""#, Some("héllo\n")),
            ("[]", Some("")),
            ("[null]", Some("")),
            ("[null,null]", Some(",")),
            ("[1,null,2]", Some("1,,2")),
            ("[[]]", Some("")),
            ("[[1,2],[3,[4,null]]]", Some("1,2,3,4,")),
            (r#"["a",true,1.5,null]"#, Some("a,true,1.5,")),
            ("{}", Some("[object Object]")),
            (r#"{"a":1}"#, Some("[object Object]")),
            (r#"{"valueOf":1}"#, Some("[object Object]")),
            (r#"{"toString":1}"#, None),
            (r#"{"toString":null}"#, None),
            (r#"{"a":{"toString":1}}"#, Some("[object Object]")),
            (r#"[{"toString":1}]"#, None),
            (r#"[1,[{"toString":"x"}]]"#, None),
            (
                r#"[{},{"valueOf":2}]"#,
                Some("[object Object],[object Object]"),
            ),
            (r#"{"__proto__":{"toString":1}}"#, Some("[object Object]")),
            ("[1e-7,1e21,-0]", Some("1e-7,1e+21,0")),
        ];
        for (input, expected) in cases {
            let converted = to_js_string(&parse(input));
            assert_eq!(converted.ok().as_deref(), expected, "String({input})");
        }
    }

    #[test]
    fn an_object_with_its_own_to_string_key_is_not_convertible() {
        let result = to_js_string(&parse(r#"[1,{"toString":"x"}]"#));
        assert_eq!(result, Err(NotConvertible));
    }

    #[test]
    fn the_not_convertible_error_explains_itself() {
        assert_eq!(
            NotConvertible.to_string(),
            "message cannot be converted to text: an object with its own toString key has no string form"
        );
    }

    #[test]
    fn truthiness_follows_javascript() {
        // Expected values produced by Node 20: !!JSON.parse(input).
        let cases = [
            ("null", false),
            ("false", false),
            ("true", true),
            ("0", false),
            ("-0", false),
            ("0.0", false),
            ("0e5", false),
            ("1", true),
            ("-1", true),
            ("5e-324", true),
            (r#""""#, false),
            (r#"" ""#, true),
            (r#""0""#, true),
            (r#""false""#, true),
            ("[]", true),
            ("{}", true),
            ("[0]", true),
            (r#"{"a":null}"#, true),
        ];
        for (input, expected) in cases {
            assert_eq!(is_truthy(&parse(input)), expected, "!!{input}");
        }
    }

    #[test]
    fn normalized_text_matches_json_stringify_of_json_parse() {
        // Expected values produced by Node 20: JSON.stringify(JSON.parse(input)).
        let cases = [
            ("null", "null"),
            ("-0", "0"),
            ("1E21", "1e+21"),
            ("1e20", "100000000000000000000"),
            ("0.000001", "0.000001"),
            ("1e-7", "1e-7"),
            ("12345678901234567890", "12345678901234567000"),
            ("-9223372036854775809", "-9223372036854776000"),
            ("18446744073709551615", "18446744073709552000"),
            ("1.0", "1"),
            ("[1.50, 2e0]", "[1.5,2]"),
            (r#" { "a" : [ 1 , 2 ] } "#, r#"{"a":[1,2]}"#),
            (r#"{"b":1,"a":2,"b":3}"#, r#"{"b":3,"a":2}"#),
            (
                r#"{"b":1,"10":2,"2":3,"01":4,"-1":5,"4294967294":6,"4294967295":7,"a":8}"#,
                r#"{"2":3,"10":2,"4294967294":6,"b":1,"01":4,"-1":5,"4294967295":7,"a":8}"#,
            ),
            (r#"{"a":{"1":1,"0":0}}"#, r#"{"a":{"0":0,"1":1}}"#),
            (
                r#""\u0000\u0001\u001f\u007f\b\f\n\r\t\"\\\/""#,
                "\"\\u0000\\u0001\\u001f\u{7f}\\b\\f\\n\\r\\t\\\"\\\\/\"",
            ),
            (
                r#""\u2028\u2029é😀\ud83d\ude00""#,
                "\"\u{2028}\u{2029}é😀😀\"",
            ),
            (
                r#"{"__proto__":1,"toString":2}"#,
                r#"{"__proto__":1,"toString":2}"#,
            ),
            (
                r#"[{}, [], "", null, true, false]"#,
                r#"[{},[],"",null,true,false]"#,
            ),
        ];
        for (input, expected) in cases {
            let normalized = normalize_json_text(input).expect("test JSON is valid");
            assert_eq!(normalized, expected, "JSON.stringify(JSON.parse({input}))");
        }
    }

    #[test]
    fn a_string_is_escaped_like_json_stringify() {
        // Expected value produced by Node 20: JSON.stringify(input).
        let mut out = String::new();
        write_json_string(
            "a\"b\\c\u{0}\u{1f}\u{7f}\u{8}\u{c}\n\r\t\u{2028}é😀/",
            &mut out,
        );
        assert_eq!(
            out,
            "\"a\\\"b\\\\c\\u0000\\u001f\u{7f}\\b\\f\\n\\r\\t\u{2028}é😀/\""
        );
    }

    #[test]
    fn text_that_json_parse_rejects_is_an_error() {
        assert!(normalize_json_text("{").is_err());
        assert!(normalize_json_text("[1,]").is_err());
        assert!(normalize_json_text("\u{feff}{}").is_err());
    }

    #[test]
    fn inputs_serde_json_rejects_but_json_parse_accepts_are_errors() {
        // Known, accepted differences: JSON.parse gives "\ud800", Infinity and a deep array.
        assert!(normalize_json_text(r#""\ud800""#).is_err());
        assert!(normalize_json_text("1e400").is_err());
        let deep = format!("{}{}", "[".repeat(128), "]".repeat(128));
        assert!(normalize_json_text(&deep).is_err());
    }
}
