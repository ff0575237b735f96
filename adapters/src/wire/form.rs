//! `application/x-www-form-urlencoded` bodies as the original service's
//! `express.urlencoded({ extended: true })` read them. Express 4.21.2 hands the body to
//! body-parser 1.20.3, which counts the `&`s and calls qs 6.13 with `{ allowPrototypes: true,
//! arrayLimit: max(100, count), depth: 32, strictDepth: true, parameterLimit: 1000 }`. The chat
//! endpoint echoes the parsed `context` back, so qs's quirks (bracket nesting, sparse arrays
//! compacted at the end, `true` leaves from merging a plain value into an object, dropped
//! `__proto__` keys, JavaScript key order) are reproduced here, not tidied up.
//!
//! Work is bounded for hostile bodies: at most 1000 parameters reach the parser, bracket
//! nesting stops at 32 levels (so recursion never goes much deeper than that), scanning is
//! linear in the body, and arrays only store the indices that hold a value, so `a[999]=x`
//! costs one entry.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::{Map, Value};

use super::js::{LARGEST_ARRAY_INDEX, array_index};

/// body-parser's `parameterLimit`: a body with this many `&`s is refused before qs runs.
const PARAMETER_LIMIT: usize = 1000;
/// qs's `depth` as body-parser sets it; with `strictDepth` a deeper key is an error.
const DEPTH_LIMIT: usize = 32;
/// body-parser's floor for qs's `arrayLimit`, which is otherwise the `&` count.
const MIN_ARRAY_LIMIT: usize = 100;

/// Why a form body was refused; the original service answered both with an error status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FormError {
    /// A key nests more than 32 bracket levels (body-parser answered 400).
    TooDeep,
    /// The body has more than 1000 parameters, i.e. 1000 or more `&` (body-parser answered 413).
    TooManyParameters,
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooDeep => write!(
                f,
                "form body key nests brackets deeper than the limit of {DEPTH_LIMIT} levels"
            ),
            Self::TooManyParameters => write!(
                f,
                "form body has more than the limit of {PARAMETER_LIMIT} parameters"
            ),
        }
    }
}

impl std::error::Error for FormError {}

/// Parses a form body exactly as `express.urlencoded({ extended: true })` did; the result is
/// always a JSON object whose leaves are strings, or `true` where qs merged a plain value
/// into an object (see `merge`).
///
/// `body` is the request body as UTF-8 text, invalid bytes replaced by U+FFFD (as
/// `String::from_utf8_lossy` does). body-parser's decoder drops one leading byte-order mark,
/// so this does too.
pub(crate) fn parse_urlencoded(body: &str) -> Result<Value, FormError> {
    let body = body.strip_prefix('\u{FEFF}').unwrap_or(body);
    let ampersands = count_ampersands(body)?;
    if body.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let array_limit = ampersands.max(MIN_ARRAY_LIMIT);

    let mut result = Node::Object(Object::default());
    for (key, value) in parse_pairs(body).into_entries() {
        let key = key.into_string();
        let Some(chain) = split_key(&key)? else {
            continue;
        };
        let parsed = build_from_chain(&chain, value, array_limit);
        result = merge(result, parsed);
    }
    Ok(result.into_value())
}

/// body-parser's `parameterCount`: the number of `&`, refused once it reaches the limit.
fn count_ampersands(body: &str) -> Result<usize, FormError> {
    let mut count = 0;
    for _ in body.bytes().filter(|byte| *byte == b'&') {
        count += 1;
        if count == PARAMETER_LIMIT {
            return Err(FormError::TooManyParameters);
        }
    }
    Ok(count)
}

/// A value while qs builds it; arrays may still have holes until the final compaction.
#[derive(Debug)]
enum Node {
    /// A decoded string.
    Text(String),
    /// The `true` qs stores when a plain value is merged into an object.
    True,
    /// A JavaScript array, possibly sparse.
    List(List),
    /// A plain JavaScript object.
    Object(Object),
}

impl Node {
    /// Whether JavaScript's `typeof` says "object" (arrays included).
    fn is_object(&self) -> bool {
        matches!(self, Self::List(_) | Self::Object(_))
    }

    /// The final JSON value, with every array compacted as qs's `compact` does.
    fn into_value(self) -> Value {
        match self {
            Self::Text(text) => Value::String(text),
            Self::True => Value::Bool(true),
            Self::List(list) => {
                Value::Array(list.items.into_values().map(Self::into_value).collect())
            }
            Self::Object(object) => Value::Object(
                object
                    .into_entries()
                    .map(|(key, node)| (key.into_string(), node.into_value()))
                    .collect(),
            ),
        }
    }
}

/// A JavaScript array that stores only its defined indices, so holes cost nothing.
#[derive(Debug, Default)]
struct List {
    /// JavaScript's `length`: one past the highest index ever set.
    len: usize,
    /// The defined elements by index.
    items: BTreeMap<usize, Node>,
}

impl List {
    /// An array whose only element is `node` at `index`, like `obj = []; obj[index] = node`.
    fn with(index: usize, node: Node) -> Self {
        let mut list = Self::default();
        list.set(index, node);
        list
    }

    /// `array[index] = node`.
    fn set(&mut self, index: usize, node: Node) {
        self.items.insert(index, node);
        self.len = self.len.max(index + 1);
    }

    /// `array.push(node)`: appends after the length, holes included.
    fn push(&mut self, node: Node) {
        self.items.insert(self.len, node);
        self.len += 1;
    }

    /// `[first].concat(self)`: every index, holes included, moves up by one.
    fn prepend(self, first: Node) -> Self {
        let mut items = BTreeMap::new();
        items.insert(0, first);
        items.extend(
            self.items
                .into_iter()
                .map(|(index, node)| (index + 1, node)),
        );
        Self {
            len: self.len + 1,
            items,
        }
    }

    /// qs's `arrayToObject`: the defined elements keyed by their index.
    fn into_object(self) -> Object {
        let mut object = Object::default();
        for (index, node) in self.items {
            object.set(Key::from_index(index), node);
        }
        object
    }
}

/// A JavaScript property key, split the way objects order their keys.
#[derive(Debug)]
enum Key {
    /// An array index ("0" to "4294967294"); these come first, in numeric order.
    Index(u32),
    /// Any other string; these follow in insertion order.
    Name(String),
}

impl Key {
    /// Classifies a property name as JavaScript does.
    fn from_name(name: String) -> Self {
        match array_index(&name) {
            Some(index) => Self::Index(index),
            None => Self::Name(name),
        }
    }

    /// The key an array element's index becomes when an array turns into an object.
    fn from_index(index: usize) -> Self {
        match u32::try_from(index) {
            Ok(small) if u64::from(small) <= LARGEST_ARRAY_INDEX => Self::Index(small),
            _ => Self::Name(index.to_string()),
        }
    }

    /// The key as a string.
    fn into_string(self) -> String {
        match self {
            Self::Index(index) => index.to_string(),
            Self::Name(name) => name,
        }
    }
}

/// A plain JavaScript object whose keys iterate in JavaScript's order.
#[derive(Debug, Default)]
struct Object {
    /// Array-index keys, iterated first in ascending order.
    indexed: BTreeMap<u32, Node>,
    /// Other keys in insertion order.
    named: Vec<(String, Node)>,
    /// Where each named key sits in `named`, so lookups stay cheap with many keys.
    positions: HashMap<String, usize>,
}

impl Object {
    /// The value under `key`, if the object has that own key.
    fn get_mut(&mut self, key: &Key) -> Option<&mut Node> {
        match key {
            Key::Index(index) => self.indexed.get_mut(index),
            Key::Name(name) => {
                let position = *self.positions.get(name)?;
                self.named.get_mut(position).map(|(_, node)| node)
            }
        }
    }

    /// `object[key] = node`: an existing key keeps its place.
    fn set(&mut self, key: Key, node: Node) {
        match key {
            Key::Index(index) => {
                self.indexed.insert(index, node);
            }
            Key::Name(name) => match self.positions.get(&name) {
                Some(&position) => {
                    if let Some(slot) = self.named.get_mut(position) {
                        slot.1 = node;
                    }
                }
                None => {
                    self.positions.insert(name.clone(), self.named.len());
                    self.named.push((name, node));
                }
            },
        }
    }

    /// The entries in `Object.keys` order.
    fn into_entries(self) -> impl Iterator<Item = (Key, Node)> {
        self.indexed
            .into_iter()
            .map(|(index, node)| (Key::Index(index), node))
            .chain(
                self.named
                    .into_iter()
                    .map(|(name, node)| (Key::Name(name), node)),
            )
    }
}

/// qs's `parseValues`: splits the body into decoded key/value pairs, repeated keys gathering
/// their values into an array. Keys keep JavaScript object order, which decides the order in
/// which they are merged later (`1=a&[1]=b` merges `1` first). qs collects them in an object
/// without a prototype, so even `__proto__` is an ordinary key at this stage.
fn parse_pairs(body: &str) -> Object {
    let body = unescape_brackets(body);
    let mut pairs = Object::default();
    for part in body.split('&') {
        // A `]=` wins over an earlier `=`, so `a[b=c]=d` has the key `a[b=c]`.
        let split_at = match part.find("]=") {
            Some(position) => Some(position + 1),
            None => part.find('='),
        };
        let (key, value) = match split_at {
            Some(position) => (decode(&part[..position]), decode(&part[position + 1..])),
            None => (decode(part), String::new()),
        };
        let key = Key::from_name(key);
        match pairs.get_mut(&key) {
            Some(Node::List(values)) => values.push(Node::Text(value)),
            Some(existing) => {
                let first = std::mem::replace(existing, Node::True);
                let mut values = List::with(0, first);
                values.push(Node::Text(value));
                *existing = Node::List(values);
            }
            None => pairs.set(key, Node::Text(value)),
        }
    }
    pairs
}

/// qs turns every `%5B`/`%5D` (any case) into a bracket before splitting, so encoded brackets
/// still nest (`a%5Bb%5D=c` is `a[b]=c`).
fn unescape_brackets(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let bracket = match tail.as_bytes().get(1..3) {
            Some([b'5', b'B' | b'b']) => Some('['),
            Some([b'5', b'D' | b'd']) => Some(']'),
            _ => None,
        };
        match bracket {
            Some(bracket) => {
                out.push(bracket);
                rest = &tail[3..];
            }
            None => {
                out.push('%');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// qs's `decode`: `+` is a space, then `decodeURIComponent`; if any escape is malformed the
/// whole text stays as it is (with its `+` already turned into spaces).
fn decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    decode_uri_component(&spaced).unwrap_or(spaced)
}

/// `decodeURIComponent`, or `None` where JavaScript throws URIError: a `%` without two hex
/// digits, or escapes that are not one well-formed UTF-8 sequence (overlong forms, surrogates
/// and code points above U+10FFFF included).
fn decode_uri_component(text: &str) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        if byte != b'%' {
            out.push(byte);
            at += 1;
            continue;
        }
        let lead = escaped_byte(bytes, at)?;
        at += 3;
        let width = match lead {
            0x00..=0x7F => 1,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return None,
        };
        let mut sequence = [lead, 0, 0, 0];
        for slot in sequence.iter_mut().take(width).skip(1) {
            let continuation = escaped_byte(bytes, at)?;
            if continuation & 0xC0 != 0x80 {
                return None;
            }
            *slot = continuation;
            at += 3;
        }
        let sequence = sequence.get(..width)?;
        std::str::from_utf8(sequence).ok()?;
        out.extend_from_slice(sequence);
    }
    String::from_utf8(out).ok()
}

/// The byte a `%XX` escape at `at` encodes, if there is a well-formed one.
fn escaped_byte(bytes: &[u8], at: usize) -> Option<u8> {
    match bytes.get(at..at + 3)? {
        [b'%', high, low] => {
            let high = char::from(*high).to_digit(16)?;
            let low = char::from(*low).to_digit(16)?;
            u8::try_from(high * 16 + low).ok()
        }
        _ => None,
    }
}

/// qs's `parseKeys`: the key's parent (text before the first `[...]`) and each `[...]`
/// segment, or `None` for an empty key, which qs skips. Text between or after segments that
/// is not itself a segment is dropped, as qs's regular expression drops it.
fn split_key(key: &str) -> Result<Option<Vec<&str>>, FormError> {
    if key.is_empty() {
        return Ok(None);
    }
    let first = find_segment(key, 0);
    let parent = first.map_or(key, |(start, _)| &key[..start]);
    let mut chain = Vec::new();
    if !parent.is_empty() {
        chain.push(parent);
    }
    let mut from = 0;
    let mut segments = 0;
    while let Some((start, end)) = find_segment(key, from) {
        if segments == DEPTH_LIMIT {
            return Err(FormError::TooDeep);
        }
        chain.push(&key[start..end]);
        segments += 1;
        from = end;
    }
    Ok(Some(chain))
}

/// The next match of qs's `/\[[^[\]]*]/` at or after `from`: a `[`, no brackets, then `]`.
/// Linear overall: a failed candidate resumes at the `[` that ended it.
fn find_segment(key: &str, from: usize) -> Option<(usize, usize)> {
    let bytes = key.as_bytes();
    let mut start = from + bytes.get(from..)?.iter().position(|b| *b == b'[')?;
    loop {
        let after = start + 1;
        let offset = bytes
            .get(after..)?
            .iter()
            .position(|b| *b == b'[' || *b == b']')?;
        let end = after + offset;
        if bytes.get(end) == Some(&b']') {
            return Some((start, end + 1));
        }
        start = end;
    }
}

/// qs's `parseObject`: wraps `leaf` in one array or object per key segment, innermost first.
fn build_from_chain(chain: &[&str], leaf: Node, array_limit: usize) -> Node {
    let mut node = leaf;
    for root in chain.iter().rev() {
        node = if *root == "[]" {
            // `[].concat(leaf)`: an array leaf is spread, holes kept, rather than nested.
            match node {
                Node::List(list) => Node::List(list),
                other => Node::List(List::with(0, other)),
            }
        } else {
            let name = root
                .strip_prefix('[')
                .and_then(|inner| inner.strip_suffix(']'));
            let bracketed = name.is_some();
            let name = name.unwrap_or(root);
            match list_index(name, array_limit) {
                Some(index) if bracketed => Node::List(List::with(index, node)),
                _ => {
                    let mut object = Object::default();
                    // qs refuses to assign `__proto__` and leaves the object empty instead.
                    if name != "__proto__" {
                        object.set(Key::from_name(name.to_owned()), node);
                    }
                    Node::Object(object)
                }
            }
        };
    }
    node
}

/// The array index a bracketed segment names for qs: the canonical decimal form of an
/// integer no larger than `array_limit` (larger or non-canonical ones become object keys).
fn list_index(name: &str, array_limit: usize) -> Option<usize> {
    let index = usize::try_from(array_index(name)?).ok()?;
    (index <= array_limit).then_some(index)
}

/// qs's `utils.merge(target, source)`, step for step.
///
/// Its quirks: an empty-string source leaves the target alone; a plain value merged into an
/// object becomes a key set to `true` (`__proto__` excepted, as JavaScript's setter ignores
/// it); merged into an array it is pushed; two plain values become a two-element array; an
/// array merged with an object turns into an object keyed by index. Recursion follows the
/// source, which is at most 33 levels deep.
fn merge(target: Node, source: Node) -> Node {
    match source {
        Node::Text(text) if text.is_empty() => target,
        Node::Text(_) | Node::True => merge_plain(target, source),
        Node::List(source) => match target {
            Node::List(target) => Node::List(merge_lists(target, source)),
            Node::Object(target) => Node::Object(merge_into_object(
                target,
                source.into_object().into_entries(),
            )),
            plain => Node::List(source.prepend(plain)),
        },
        Node::Object(source) => match target {
            Node::List(target) => Node::Object(merge_into_object(
                target.into_object(),
                source.into_entries(),
            )),
            Node::Object(target) => Node::Object(merge_into_object(target, source.into_entries())),
            plain => {
                let mut list = List::with(0, plain);
                list.push(Node::Object(source));
                Node::List(list)
            }
        },
    }
}

/// The part of [`merge`] where the source is a plain (non-empty) value.
fn merge_plain(target: Node, source: Node) -> Node {
    match target {
        Node::List(mut list) => {
            list.push(source);
            Node::List(list)
        }
        Node::Object(mut object) => {
            let name = match source {
                Node::Text(text) => text,
                _ => "true".to_owned(),
            };
            if name != "__proto__" {
                object.set(Key::from_name(name), Node::True);
            }
            Node::Object(object)
        }
        plain => {
            let mut list = List::with(0, plain);
            list.push(source);
            Node::List(list)
        }
    }
}

/// The array-into-array part of [`merge`]: an element whose index is free takes it, two
/// objects at one index merge, anything else at a taken index is pushed on the end.
fn merge_lists(mut target: List, source: List) -> List {
    for (index, item) in source.items {
        match target.items.get_mut(&index) {
            Some(slot) if slot.is_object() && item.is_object() => {
                let existing = std::mem::replace(slot, Node::True);
                *slot = merge(existing, item);
            }
            Some(_) => target.push(item),
            None => target.set(index, item),
        }
    }
    target
}

/// The object part of [`merge`]: new keys are added, existing ones merged recursively.
fn merge_into_object(mut target: Object, entries: impl Iterator<Item = (Key, Node)>) -> Object {
    for (key, item) in entries {
        match target.get_mut(&key) {
            Some(slot) => {
                let existing = std::mem::replace(slot, Node::True);
                *slot = merge(existing, item);
            }
            None => target.set(key, item),
        }
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a table of bodies against expected results produced by Node 20 through
    /// `express.urlencoded({ extended: true })`; successes compare as serde_json text, which
    /// keeps the map's own order, so key order is checked too.
    fn check(cases: &[(&str, Result<&str, FormError>)]) {
        for (body, expected) in cases {
            let parsed = parse_urlencoded(body).map(|value| value.to_string());
            assert_eq!(
                parsed.as_deref().map_err(Clone::clone),
                *expected,
                "body {body:?}"
            );
        }
    }
    #[test]
    fn pairs_split_on_ampersands_and_decode_like_qs() {
        // Plus signs, keys without =, empty parts and repeated keys.
        check(&[
            ("", Ok("{}")),
            ("a", Ok(r#"{"a":""}"#)),
            ("a=", Ok(r#"{"a":""}"#)),
            ("=", Ok("{}")),
            ("=x", Ok("{}")),
            ("&", Ok("{}")),
            ("&&a=1&&", Ok(r#"{"a":"1"}"#)),
            ("a=1&b=2", Ok(r#"{"a":"1","b":"2"}"#)),
            ("a=1&a=2&a=3", Ok(r#"{"a":["1","2","3"]}"#)),
            ("a=1&a=&a", Ok(r#"{"a":["1","",""]}"#)),
            ("a+b=c+d", Ok(r#"{"a b":"c d"}"#)),
            ("a%20b=c%2Bd", Ok(r#"{"a b":"c+d"}"#)),
            ("a=%26&b=%3D", Ok(r#"{"a":"&","b":"="}"#)),
            ("a=b=c", Ok(r#"{"a":"b=c"}"#)),
            ("a==b", Ok(r#"{"a":"=b"}"#)),
            ("a.b=c", Ok(r#"{"a.b":"c"}"#)),
            ("a=é😀", Ok(r#"{"a":"é😀"}"#)),
            ("\u{feff}a=1", Ok(r#"{"a":"1"}"#)),
        ]);
    }

    #[test]
    fn a_malformed_escape_leaves_the_whole_text_undecoded() {
        // DecodeURIComponent succeeds or the text stays as it is.
        check(&[
            ("a=%", Ok(r#"{"a":"%"}"#)),
            ("a=%2", Ok(r#"{"a":"%2"}"#)),
            ("a=%ZZ+x", Ok(r#"{"a":"%ZZ x"}"#)),
            ("a=%41%", Ok(r#"{"a":"%41%"}"#)),
            ("a=100%25", Ok(r#"{"a":"100%"}"#)),
            ("a=%E2%9C%93", Ok(r#"{"a":"✓"}"#)),
            ("a=%e2%9c%93", Ok(r#"{"a":"✓"}"#)),
            ("a=%C0%80", Ok(r#"{"a":"%C0%80"}"#)),
            ("a=%ED%A0%80", Ok(r#"{"a":"%ED%A0%80"}"#)),
            ("a=%F4%90%80%80", Ok(r#"{"a":"%F4%90%80%80"}"#)),
            ("a=%F0%9F%98%80", Ok(r#"{"a":"😀"}"#)),
            ("a=%80", Ok(r#"{"a":"%80"}"#)),
            ("a=%C3", Ok(r#"{"a":"%C3"}"#)),
            ("a=%C3%28", Ok(r#"{"a":"%C3%28"}"#)),
            ("a=%F8%80%80%80%80", Ok(r#"{"a":"%F8%80%80%80%80"}"#)),
            ("a%41%=1", Ok(r#"{"a%41%":"1"}"#)),
            ("%%5B=1", Ok(r#"{"%[":"1"}"#)),
            ("a=%5B%5D", Ok(r#"{"a":"[]"}"#)),
        ]);
    }

    #[test]
    fn brackets_nest_like_qs_segments() {
        // Encoded brackets, stray brackets and text outside segments.
        check(&[
            ("a[b][c]=v", Ok(r#"{"a":{"b":{"c":"v"}}}"#)),
            ("a[]=1&a[]=2", Ok(r#"{"a":["1","2"]}"#)),
            ("a[][]=x", Ok(r#"{"a":["x"]}"#)),
            ("a[][0]=x", Ok(r#"{"a":["x"]}"#)),
            ("a[][b]=x", Ok(r#"{"a":[{"b":"x"}]}"#)),
            ("a%5Bb%5D=c", Ok(r#"{"a":{"b":"c"}}"#)),
            ("a%5bb%5d=c", Ok(r#"{"a":{"b":"c"}}"#)),
            ("a%255Bb%255D=c", Ok(r#"{"a%5Bb%5D":"c"}"#)),
            ("[]=x", Ok(r#"{"0":"x"}"#)),
            ("[0]=x", Ok(r#"{"0":"x"}"#)),
            ("[a]=x", Ok(r#"{"a":"x"}"#)),
            ("a[b]c[d]=1", Ok(r#"{"a":{"b":{"d":"1"}}}"#)),
            ("a[[b]]=1", Ok(r#"{"a[":{"b":"1"}}"#)),
            ("a]=1", Ok(r#"{"a]":"1"}"#)),
            ("a[=1", Ok(r#"{"a[":"1"}"#)),
            ("a[b]]=1", Ok(r#"{"a":{"b":"1"}}"#)),
            ("a=b]=c", Ok(r#"{"a=b]":"c"}"#)),
            ("a[b=c]=d", Ok(r#"{"a":{"b=c":"d"}}"#)),
            ("a[ 1]=x", Ok(r#"{"a":{" 1":"x"}}"#)),
            ("a[01]=x", Ok(r#"{"a":{"01":"x"}}"#)),
            ("a[-1]=x", Ok(r#"{"a":{"-1":"x"}}"#)),
        ]);
    }

    #[test]
    fn indexed_arrays_are_compacted_and_capped_by_the_array_limit() {
        // Sparse arrays close their holes; indices above 100 become keys.
        check(&[
            ("a[0]=x&a[2]=y", Ok(r#"{"a":["x","y"]}"#)),
            ("a[1]=x&a[0]=y", Ok(r#"{"a":["y","x"]}"#)),
            ("a[100]=x", Ok(r#"{"a":["x"]}"#)),
            ("a[101]=x", Ok(r#"{"a":{"101":"x"}}"#)),
            ("a[999999999]=x", Ok(r#"{"a":{"999999999":"x"}}"#)),
            ("a[0]=x&a[0]=y", Ok(r#"{"a":[["x","y"]]}"#)),
            ("a[1]=x&a[1][b]=y", Ok(r#"{"a":["x",{"b":"y"}]}"#)),
            (
                "a[0][b]=1&a[0][c]=2&a[1][b]=3",
                Ok(r#"{"a":[{"b":"1","c":"2"},{"b":"3"}]}"#),
            ),
        ]);
    }

    #[test]
    fn values_of_different_shapes_merge_like_qs_utils_merge() {
        // Plain into object gives a true key, array and object give an object.
        check(&[
            ("a[0]=x&a[b]=y", Ok(r#"{"a":{"0":"x","b":"y"}}"#)),
            ("a[b]=y&a[0]=x", Ok(r#"{"a":{"0":"x","b":"y"}}"#)),
            ("a=1&a[b]=2", Ok(r#"{"a":["1",{"b":"2"}]}"#)),
            ("a[b]=2&a=1", Ok(r#"{"a":{"1":true,"b":"2"}}"#)),
            ("a[b]=1&a=", Ok(r#"{"a":{"b":"1"}}"#)),
            (
                "a[b]=1&a=toString",
                Ok(r#"{"a":{"b":"1","toString":true}}"#),
            ),
            ("a[]=1&a=2", Ok(r#"{"a":["1","2"]}"#)),
            ("a=2&a[]=1", Ok(r#"{"a":["2","1"]}"#)),
            ("a=x&a[]=y", Ok(r#"{"a":["x","y"]}"#)),
            ("a=x&a[][b]=y", Ok(r#"{"a":["x",{"b":"y"}]}"#)),
            ("a=&a[b]=1", Ok(r#"{"a":["",{"b":"1"}]}"#)),
            ("a=1&a=2&a[b]=3", Ok(r#"{"a":{"0":"1","1":"2","b":"3"}}"#)),
            (
                "x=1&x[y]=2&x[z][w]=3",
                Ok(r#"{"x":{"0":"1","1":{"y":"2"},"z":{"w":"3"}}}"#),
            ),
            ("a[]=x&a[0][b]=y", Ok(r#"{"a":["x",{"b":"y"}]}"#)),
        ]);
    }

    #[test]
    fn prototype_named_keys_are_plain_keys_except_proto() {
        // AllowPrototypes keeps them; __proto__ is always dropped.
        check(&[
            ("__proto__=x", Ok("{}")),
            ("__proto__[a]=x", Ok("{}")),
            ("a[__proto__]=x", Ok(r#"{"a":{}}"#)),
            ("a[__proto__][b]=x", Ok(r#"{"a":{}}"#)),
            ("a[b]=1&a=__proto__", Ok(r#"{"a":{"b":"1"}}"#)),
            ("toString=x", Ok(r#"{"toString":"x"}"#)),
            ("a[toString]=x", Ok(r#"{"a":{"toString":"x"}}"#)),
            ("hasOwnProperty=x", Ok(r#"{"hasOwnProperty":"x"}"#)),
            (
                "constructor[prototype]=x",
                Ok(r#"{"constructor":{"prototype":"x"}}"#),
            ),
            ("message[toString]=1", Ok(r#"{"message":{"toString":"1"}}"#)),
        ]);
    }

    #[test]
    fn integer_like_keys_come_first_as_in_javascript_objects() {
        // Also decides merge order: key 1 merges before [1].
        check(&[
            (
                "b=1&0=x&a=2&1=y",
                Ok(r#"{"0":"x","1":"y","b":"1","a":"2"}"#),
            ),
            ("[1]=b&1=a", Ok(r#"{"1":["a","b"]}"#)),
            (
                "4294967294=a&4294967295=b&x=c",
                Ok(r#"{"4294967294":"a","4294967295":"b","x":"c"}"#),
            ),
            (
                "a[b]=1&a[1]=2&a[0]=3",
                Ok(r#"{"a":{"0":"3","1":"2","b":"1"}}"#),
            ),
        ]);
    }

    #[test]
    fn a_chat_request_reads_message_and_nested_context() {
        // The shape the service actually receives.
        check(&[(
            "message=hi&context[user]=bob&context[tags][]=x&context[tags][]=y",
            Ok(r#"{"message":"hi","context":{"user":"bob","tags":["x","y"]}}"#),
        )]);
    }

    /// `{"a":{"b":{...{"b":"1"}}}}` with `levels` nested `b` keys.
    fn nested_b(levels: usize) -> String {
        format!(
            r#"{{"a":{}"1"{}}}"#,
            r#"{"b":"#.repeat(levels),
            "}".repeat(levels)
        )
    }

    #[test]
    fn thirty_two_bracket_levels_are_accepted() {
        let body = format!("a{}=1", "[b]".repeat(32));
        let expected = nested_b(32);
        check(&[
            (&body, Ok(&expected)),
            (&format!("a{}=1", "[]".repeat(32)), Ok(r#"{"a":["1"]}"#)),
        ]);
    }

    #[test]
    fn a_thirty_third_bracket_level_is_too_deep() {
        // Encoded brackets, a missing parent and text between segments all still count.
        check(&[
            (&format!("a{}=1", "[b]".repeat(33)), Err(FormError::TooDeep)),
            (&format!("{}=1", "[b]".repeat(33)), Err(FormError::TooDeep)),
            (
                &format!("a{}c[d]=1", "[b]".repeat(32)),
                Err(FormError::TooDeep),
            ),
            (
                &format!("a{}=1", "%5Bb%5D".repeat(33)),
                Err(FormError::TooDeep),
            ),
            (
                &format!("ok=1&a{}", "[b]".repeat(33)),
                Err(FormError::TooDeep),
            ),
        ]);
    }

    #[test]
    fn a_thousand_ampersands_are_too_many_parameters() {
        check(&[
            (&format!("{}a=1", "&".repeat(999)), Ok(r#"{"a":"1"}"#)),
            (
                &format!("{}a=1", "&".repeat(1000)),
                Err(FormError::TooManyParameters),
            ),
        ]);
    }

    #[test]
    fn the_array_limit_grows_with_the_ampersand_count() {
        check(&[
            (
                &format!("a[150]=x{}", "&".repeat(150)),
                Ok(r#"{"a":["x"]}"#),
            ),
            (
                &format!("a[151]=x{}", "&".repeat(150)),
                Ok(r#"{"a":{"151":"x"}}"#),
            ),
            (
                &format!("a[150]=x{}", "&".repeat(149)),
                Ok(r#"{"a":{"150":"x"}}"#),
            ),
        ]);
    }

    #[test]
    fn the_errors_name_their_limits() {
        assert_eq!(
            FormError::TooDeep.to_string(),
            "form body key nests brackets deeper than the limit of 32 levels"
        );
        assert_eq!(
            FormError::TooManyParameters.to_string(),
            "form body has more than the limit of 1000 parameters"
        );
    }

    #[test]
    fn a_megabyte_of_open_brackets_is_one_long_key() {
        let body = format!("a{}=x", "[".repeat(1 << 20));
        let parsed = parse_urlencoded(&body).expect("no segment, so no error");
        let object = parsed.as_object().expect("an object");
        assert_eq!(object.len(), 1);
        assert!(object.keys().all(|key| key.len() == (1 << 20) + 1));
    }

    #[test]
    fn a_megabyte_of_bracket_segments_is_refused_as_too_deep() {
        let body = format!("a{}=x", "[b]".repeat(350_000));
        assert_eq!(parse_urlencoded(&body), Err(FormError::TooDeep));
    }

    #[test]
    fn a_hundred_thousand_ampersands_are_refused_without_parsing() {
        let body = "&".repeat(100_000);
        assert_eq!(parse_urlencoded(&body), Err(FormError::TooManyParameters));
    }

    #[test]
    fn a_huge_index_becomes_an_object_key_without_allocating_an_array() {
        let parsed = parse_urlencoded("a[999999999]=x&a[4294967296]=y").map(|v| v.to_string());
        assert_eq!(
            parsed.as_deref(),
            Ok(r#"{"a":{"999999999":"x","4294967296":"y"}}"#)
        );
    }

    #[test]
    fn many_arrays_at_the_array_limit_store_only_their_defined_elements() {
        // 999 sparse arrays of length 1000 each: holes must not be materialised.
        let body: Vec<String> = (0..999).map(|i| format!("k{i}[998]=v")).collect();
        let parsed = parse_urlencoded(&body.join("&")).expect("within limits");
        let object = parsed.as_object().expect("an object");
        assert_eq!(object.len(), 999);
        assert!(
            object
                .values()
                .all(|list| list == &serde_json::json!(["v"]))
        );
    }

    #[test]
    fn a_megabyte_of_percent_signs_stays_as_text() {
        let body = format!("a={}", "%".repeat(1 << 20));
        let parsed = parse_urlencoded(&body).expect("no limit applies");
        let text = parsed.get("a").and_then(Value::as_str).map(str::len);
        assert_eq!(text, Some(1 << 20));
    }

    #[test]
    fn one_key_repeated_a_thousand_times_collects_every_value() {
        let body = vec!["a[]=x"; 1000].join("&");
        let parsed = parse_urlencoded(&body).expect("999 ampersands are allowed");
        let count = parsed.get("a").and_then(Value::as_array).map(Vec::len);
        assert_eq!(count, Some(1000));
    }
}
