//! How deeply a JSON text nests, checked before it is parsed: a client must not be able to
//! make the service recurse (or spend effort) without bound. Strings are skipped with
//! `memchr`, so an audio message (a few brackets around kilobytes of base64) costs a few
//! hundred nanoseconds.

/// Whether `json` opens more than `max` arrays or objects inside one another. Malformed text
/// is not judged here (the parser will say what is wrong with it).
pub(crate) fn nests_deeper_than(json: &[u8], max: usize) -> bool {
    let mut depth = 0_usize;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                i += 1;
                loop {
                    // `get`: an escape may be the last byte, leaving `i` past the end.
                    match memchr::memchr2(b'"', b'\\', json.get(i..).unwrap_or_default()) {
                        // An escape takes the next byte with it (it may be a quote).
                        Some(offset) if json[i + offset] == b'\\' => i += offset + 2,
                        Some(offset) => {
                            i += offset + 1;
                            break;
                        }
                        None => return false,
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ => i += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_counted_through_arrays_and_objects() {
        assert!(!nests_deeper_than(br#"{"a":[{"b":[1]}]}"#, 4));
        assert!(nests_deeper_than(br#"{"a":[{"b":[1]}]}"#, 3));
    }

    #[test]
    fn siblings_do_not_add_up() {
        let wide = format!("[{}]", vec!["[]"; 10_000].join(","));
        assert!(!nests_deeper_than(wide.as_bytes(), 2));
    }

    #[test]
    fn brackets_inside_strings_do_not_count_even_after_escaped_quotes() {
        assert!(!nests_deeper_than(br#"{"a":"[[[[ \" {{{{ \\"}"#, 1));
        assert!(nests_deeper_than(br#"{"a":"\\",  "b":[[]]}"#, 2));
    }

    #[test]
    fn ten_thousand_levels_are_found_without_recursion() {
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(nests_deeper_than(deep.as_bytes(), 32));
    }

    #[test]
    fn an_unterminated_string_is_left_to_the_parser() {
        assert!(!nests_deeper_than(br#"{"a":"[[[["#, 1));
    }

    #[test]
    fn a_text_ending_in_an_escape_is_left_to_the_parser() {
        // Found by the fuzzer: the escape's second byte lies past the end.
        for text in [&br#"{"a":""#[..], br#"#""#, br#"""#, br#""\"#] {
            assert!(!nests_deeper_than(text, 1), "{text:?}");
        }
    }
}
