//! Reading request bodies within the size limit, and parsing them into typed requests
//! in the forms Kimchi's clients send (numbers as strings of digits, extra fields).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::num::ParseIntError;
use std::pin::{pin, Pin};
use std::str::FromStr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body;
use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, Unexpected, Visitor};
use serde::Deserialize;

use crate::error::{bounded, quote, Error};

/// How much of an unwanted body (too big, or refused before it was read) is still read
/// and thrown away before answering. Clients that cannot take an answer before they have
/// sent their whole request (curl 7 over HTTP/2 reports a reset stream instead of the
/// answer) then see the error document; anything bigger or slower is cut off.
const DISCARD_BYTES: u64 = 16 * 1024 * 1024;
const DISCARD_TIME: Duration = Duration::from_secs(5);

/// The whole body, refused with 413 once it is known to exceed `limit` bytes (from
/// `Content-Length` before reading anything, else while reading).
pub async fn read<B>(body: B, limit: u64) -> Result<Bytes, Error>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut body = pin!(body);
    if body.size_hint().lower() > limit {
        drain(body).await;
        return Err(Error::BodyTooLarge { limit });
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| Error::InvalidBody(format!("could not read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                drain(body).await;
                return Err(Error::BodyTooLarge { limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Reads and drops a body nobody needs, as far as [`DISCARD_BYTES`] and
/// [`DISCARD_TIME`] allow, before an early answer goes out.
pub async fn discard<B: Body<Data = Bytes>>(body: B) {
    drain(pin!(body)).await;
}

async fn drain<B: Body<Data = Bytes>>(mut body: Pin<&mut B>) {
    if body.is_end_stream() || body.size_hint().lower() > DISCARD_BYTES {
        return;
    }
    let drain = async {
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > DISCARD_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
}

/// Parses a JSON object request body into `T`; serde's message says what is wrong
/// and where. Whether fields `T` does not know are refused is `T`'s to say
/// (`deny_unknown_fields`); those it ignores are logged.
pub fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    // serde would also take an array for a struct; the API only ever takes objects.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Error::InvalidBody(
            "this request needs a JSON object as its body".into(),
        ));
    }
    let parsed = serde_json::from_slice(body).map_err(|e| {
        Error::InvalidBody(format!("invalid JSON request body: {}", serde_message(&e)))
    })?;
    log_ignored_fields::<T>(body);
    Ok(parsed)
}

/// serde's message, with what it quotes of the body (an unknown field's name, a
/// string of the wrong type) cut to a short prefix, and its position.
fn serde_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    let (message, position) = match full.strip_suffix(&position) {
        Some(message) => (message, position.as_str()),
        None => (full.as_str(), ""),
    };
    format!("{}{position}", shorten_quoted(message))
}

/// `message` with each part between backquotes or double quotes cut as [`quote`]
/// cuts it, and the whole cut to [`MAX_MESSAGE_CHARS`].
fn shorten_quoted(message: &str) -> String {
    const MAX_MESSAGE_CHARS: usize = 512;
    let mut out = String::new();
    let mut rest = message;
    while let Some(open) = rest.find(['`', '"']) {
        let delimiter = &rest[open..open + 1];
        let Some(length) = rest[open + 1..].find(delimiter) else {
            break;
        };
        out.push_str(&rest[..=open]);
        out.push_str(&quote(&rest[open + 1..open + 1 + length]));
        out.push_str(delimiter);
        rest = &rest[open + 2 + length..];
    }
    out.push_str(rest);
    bounded(&out, MAX_MESSAGE_CHARS).into_owned()
}

/// The body of an action (`POST …/start`, `…/resize`, …): none at all or any JSON
/// object, of which only the fields `T` knows are used. Kimchi never read action
/// bodies but resize's, and its clients send whatever they have (its tests send the
/// pool's own JSON to `activate`).
pub fn action<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        json(b"{}")
    } else {
        json(body)
    }
}

/// The body of an action that takes no parameters: none, or any JSON object.
pub fn action_without_parameters(body: &[u8]) -> Result<(), Error> {
    #[derive(Deserialize)]
    struct Unused {}
    action::<Unused>(body).map(drop)
}

/// The body of a request that takes no parameters: none at all, or `{}`. Anything
/// else is refused, so that a misspelt option is never silently ignored.
pub fn no_parameters(body: &[u8]) -> Result<(), Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NoParameters {}
    json::<NoParameters>(body).map(drop)
}

/// Logs, at debug, the top-level fields of a parsed `body` that `T` ignored (only a
/// `T` without `deny_unknown_fields` gets this far with any).
fn log_ignored_fields<T: DeserializeOwned>(body: &[u8]) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let Ok(given) = serde_json::from_slice::<BTreeMap<String, IgnoredAny>>(body) else {
        return;
    };
    let known = known_fields::<T>();
    for field in given.keys().filter(|f| !known.contains(&f.as_str())) {
        tracing::debug!(field = %field, "ignored a field the request does not use");
    }
}

/// The field names (aliases included) of a struct deriving `Deserialize`: serde
/// passes them to [`Deserializer::deserialize_struct`], where this probe notes them
/// and stops.
fn known_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a Cell<&'static [&'static str]>);

    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.set(fields);
            Err(de::Error::custom("fields noted"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }

    let fields = Cell::new(&[][..]);
    let _ = T::deserialize(Probe(&fields));
    fields.get()
}

/// An integer from a request body: a JSON integer, or a string of ASCII decimal
/// digits, as Kimchi's UI sends the numbers of its HTML forms (`"cpus": "2"`). A
/// sign, a space, a fraction or an empty string is refused like any wrong type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Integer<T>(T);

impl<T> Integer<T> {
    pub fn get(self) -> T {
        self.0
    }
}

impl<'de, T: FromStr<Err = ParseIntError>> Deserialize<'de> for Integer<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IntegerVisitor(PhantomData))
    }
}

struct IntegerVisitor<T>(PhantomData<T>);

impl<T: FromStr<Err = ParseIntError>> IntegerVisitor<T> {
    /// `digits` are ASCII decimal digits; `T` says whether their value fits (a
    /// `NonZeroU32` refuses 0).
    fn parse<E: de::Error>(digits: &str) -> Result<Integer<T>, E> {
        digits
            .parse()
            .map(Integer)
            .map_err(|e| E::custom(format_args!("invalid value {}: {e}", quote(digits))))
    }
}

impl<T: FromStr<Err = ParseIntError>> Visitor<'_> for IntegerVisitor<T> {
    type Value = Integer<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a non-negative integer, or a string of its decimal digits")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Self::parse(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(E::invalid_value(Unexpected::Str(&quote(v)), &self));
        }
        Self::parse(v)
    }
}

/// Text a client may also send as a JSON number, kept as the number's JSON text
/// (`1.0` → "1.0", `12` → "12"): Kimchi's tests send `"os_version": 1.0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextOrNumber(Text);

impl<'de> Deserialize<'de> for TextOrNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextOrNumberVisitor)
    }
}

struct TextOrNumberVisitor;

impl Visitor<'_> for TextOrNumberVisitor {
    type Value = TextOrNumber;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a number")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Text::try_from(v.to_owned())
            .map(TextOrNumber)
            .map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(TextOrNumber(Text(v.to_string())))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(TextOrNumber(Text(v.to_string())))
    }

    /// As serde_json writes the number, which keeps a fraction (`1.0`, not Rust's
    /// `1`): without its `arbitrary_precision` feature the request's own digits are
    /// gone by now, and this is their shortest faithful form.
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        serde_json::Number::from_f64(v)
            .map(|n| TextOrNumber(Text(n.to_string())))
            .ok_or_else(|| E::invalid_value(Unexpected::Float(v), &self))
    }
}

impl From<TextOrNumber> for String {
    fn from(text: TextOrNumber) -> String {
        text.0.into()
    }
}

/// A string from a request body that can be passed to kimchid: D-Bus strings cannot
/// hold NUL characters, so they are refused here (400) rather than failing on the bus.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Text(String);

impl TryFrom<String> for Text {
    type Error = &'static str;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.contains('\0') {
            Err("strings cannot contain NUL characters (\\u0000)")
        } else {
            Ok(Text(s))
        }
    }
}

impl From<Text> for String {
    fn from(text: Text) -> String {
        text.0
    }
}

/// A request body's list of at most `L::MAX` entries: longer ones are refused while
/// parsing (400 naming the field and the limit), before they take any more memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List<T, L>(Vec<T>, PhantomData<L>);

/// The longest list a request body field takes; the limits are documented in the
/// README and the OpenAPI document.
pub trait ListLimit {
    /// The field, as the client names it.
    const FIELD: &'static str;
    const MAX: usize;
}

/// Declares list limits: `Name: "field", max;`.
macro_rules! list_limits {
    ($($(#[$doc:meta])* $name:ident: $field:literal, $max:literal;)+) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $name {}

        impl ListLimit for $name {
            const FIELD: &'static str = $field;
            const MAX: usize = $max;
        }
    )+};
}

list_limits! {
    /// A template's folders (Kimchi's UI shows them as a path).
    Folders: "folder", 64;
    /// A template's disks: more than a guest's buses take.
    Disks: "disks", 32;
    /// The physical volumes of a logical pool.
    Devices: "source.devices", 64;
    /// The host interfaces of a network (bridge and macvtap networks use one).
    Interfaces: "interfaces", 32;
}

impl<T, L> List<T, L> {
    pub fn into_vec(self) -> Vec<T> {
        self.0
    }
}

impl<T, L> Default for List<T, L> {
    fn default() -> Self {
        List(Vec::new(), PhantomData)
    }
}

impl<'de, T: Deserialize<'de>, L: ListLimit> Deserialize<'de> for List<T, L> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor<T, L>(PhantomData<(T, L)>);

        impl<'de, T: Deserialize<'de>, L: ListLimit> Visitor<'de> for ListVisitor<T, L> {
            type Value = List<T, L>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a list of at most {} entries", L::MAX)
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(L::MAX));
                while let Some(entry) = seq.next_element()? {
                    if list.len() == L::MAX {
                        return Err(de::Error::custom(format_args!(
                            "{} takes at most {} entries",
                            L::FIELD,
                            L::MAX
                        )));
                    }
                    list.push(entry);
                }
                Ok(List(list, PhantomData))
            }
        }

        deserializer.deserialize_seq(ListVisitor(PhantomData))
    }
}

pub use schemas::{PositiveU32, PositiveU64};

/// The JSON schemas of the body types above, for the OpenAPI document.
mod schemas {
    use std::num::{NonZeroU32, NonZeroU64};

    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
    // The derive composes the schemas of generic types through this trait, which
    // utoipa does not document.
    use utoipa::__dev::ComposeSchema;
    use utoipa::openapi::RefOr;
    use utoipa::{PartialSchema, ToSchema};

    use super::{Integer, List, ListLimit, Text, TextOrNumber};

    /// The range of an [`Integer`]'s type.
    pub trait Range {
        const MIN: u64;
        const MAX: u64;
    }

    macro_rules! range {
        ($($t:ty: $min:expr, $max:expr;)+) => {$(
            impl Range for $t {
                const MIN: u64 = $min;
                const MAX: u64 = $max as u64;
            }
        )+};
    }

    range! {
        u32: 0, u32::MAX;
        u64: 0, u64::MAX;
        NonZeroU32: 1, u32::MAX;
        NonZeroU64: 1, u64::MAX;
    }

    impl<T: Range> ComposeSchema for Integer<T> {
        fn compose(_: Vec<RefOr<Schema>>) -> RefOr<Schema> {
            OneOfBuilder::new()
                .item(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(T::MIN))
                        .maximum(Some(T::MAX)),
                )
                .item(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some("^[0-9]+$")),
                )
                .description(Some(
                    "A non-negative integer, or a string of its decimal digits",
                ))
                .into()
        }
    }

    /// `Integer<NonZeroU32>` and `Integer<NonZeroU64>` for the derive, which asks
    /// the type parameter for a schema too (and std's types cannot have one here):
    /// fields of those types name these with `#[schema(value_type = …)]`.
    pub struct PositiveU32;
    pub struct PositiveU64;

    impl PartialSchema for PositiveU32 {
        fn schema() -> RefOr<Schema> {
            Integer::<NonZeroU32>::schema()
        }
    }

    impl ToSchema for PositiveU32 {}

    impl PartialSchema for PositiveU64 {
        fn schema() -> RefOr<Schema> {
            Integer::<NonZeroU64>::schema()
        }
    }

    impl ToSchema for PositiveU64 {}

    // Named `Integer_u32`, … in the document: utoipa adds the type parameters.
    impl<T: Range> ToSchema for Integer<T> {}

    impl PartialSchema for Text {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("Text without NUL characters"))
                .into()
        }
    }

    impl ToSchema for Text {}

    impl PartialSchema for TextOrNumber {
        fn schema() -> RefOr<Schema> {
            OneOfBuilder::new()
                .item(ObjectBuilder::new().schema_type(Type::String))
                .item(ObjectBuilder::new().schema_type(Type::Number))
                .description(Some("A string, or a number taken as its JSON text"))
                .into()
        }
    }

    impl ToSchema for TextOrNumber {}

    /// The limits are type parameters of [`List`]; the derive asks for their schemas,
    /// which the list's schema does not use.
    macro_rules! no_schema {
        ($($limit:ty),+) => {$(
            impl PartialSchema for $limit {
                fn schema() -> RefOr<Schema> {
                    ObjectBuilder::new().into()
                }
            }

            impl ToSchema for $limit {}
        )+};
    }

    no_schema!(
        super::Folders,
        super::Disks,
        super::Devices,
        super::Interfaces
    );

    impl<T: ToSchema, L: ListLimit> ComposeSchema for List<T, L> {
        fn compose(_: Vec<RefOr<Schema>>) -> RefOr<Schema> {
            ArrayBuilder::new()
                .items(T::schema())
                .max_items(Some(L::MAX))
                .into()
        }
    }

    impl<T: ToSchema, L: ListLimit> ToSchema for List<T, L> {
        fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
            T::schemas(schemas);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http_body_util::Full;
    use hyper::body::Frame;
    use serde::Deserialize;

    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn body_within_the_limit_is_read() {
        let body = Full::new(Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(block_on(read(body, 7)).unwrap(), "{\"a\":1}");
    }

    #[test]
    fn declared_length_over_the_limit_is_413_before_reading() {
        let body = Full::new(Bytes::from(vec![b'x'; 11]));
        let err = block_on(read(body, 10)).unwrap_err();
        assert_eq!(err.status().as_u16(), 413);
    }

    /// Chunks with no size hint, as chunked transfer encoding delivers them.
    struct Chunks(std::vec::IntoIter<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.next().map(|b| Ok(Frame::data(b))))
        }
    }

    #[test]
    fn streamed_body_over_the_limit_is_413() {
        let body = Chunks(vec![Bytes::from(vec![b'x'; 4]); 4].into_iter());
        assert_eq!(body.size_hint().lower(), 0);
        let err = block_on(read(body, 10)).unwrap_err();
        assert!(matches!(err, Error::BodyTooLarge { limit: 10 }), "{err:?}");
    }

    #[test]
    fn streamed_body_exactly_at_the_limit_is_read() {
        let body = Chunks(vec![Bytes::from(vec![b'x'; 5]); 2].into_iter());
        assert_eq!(block_on(read(body, 10)).unwrap().len(), 10);
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
    }

    #[test]
    fn json_body_is_parsed() {
        assert_eq!(json::<Sample>(b"{\"name\": \"a\"}").unwrap().name, "a");
    }

    #[test]
    fn malformed_json_is_400_with_serde_message() {
        let err = json::<Sample>(b"{\"name\": ").unwrap_err();
        assert_eq!(err.status().as_u16(), 400);
        assert!(err.to_string().contains("EOF"), "{err}");
        let err = json::<Sample>(b"{\"name\": \"a\", \"x\": 1}").unwrap_err();
        assert!(err.to_string().contains("unknown field `x`"), "{err}");
    }

    #[test]
    fn no_parameters_means_no_body_or_an_empty_object() {
        for body in [&b""[..], b" \n", b"{}", b" { } "] {
            no_parameters(body).unwrap();
        }
        for body in [&b"{\"force\": true}"[..], b"[]", b"null", b"{"] {
            let err = no_parameters(body).unwrap_err();
            assert_eq!(err.status().as_u16(), 400, "{body:?}");
        }
    }

    #[derive(Debug, Deserialize)]
    struct Named {
        name: Text,
    }

    #[test]
    fn text_refuses_nul() {
        let ok: Named = json(br#"{"name": "caf\u00e9"}"#).unwrap();
        assert_eq!(String::from(ok.name), "café");
        let err = json::<Named>(br#"{"name": "a\u0000b"}"#).unwrap_err();
        assert_eq!(err.status().as_u16(), 400);
        assert!(err.to_string().contains("NUL"), "{err}");
    }

    #[test]
    fn action_body_may_be_empty_or_any_object() {
        for body in [
            &b""[..],
            b" \n",
            b"{}",
            br#"{"name": "p", "capacity": 1024, "allocated": 512}"#,
        ] {
            action_without_parameters(body).unwrap();
        }
    }

    #[test]
    fn action_body_that_is_not_an_object_is_400() {
        for body in [&b"[1]"[..], b"\"x\"", b"null", b"{", b"{\"a\": }"] {
            let err = action_without_parameters(body).unwrap_err();
            assert_eq!(err.status().as_u16(), 400, "{body:?}");
        }
    }

    #[derive(Debug, Deserialize)]
    struct Size {
        size: u64,
    }

    #[test]
    fn action_takes_the_fields_it_uses_and_ignores_the_rest() {
        let s: Size = action(br#"{"size": 768, "name": "v", "format": "raw"}"#).unwrap();
        assert_eq!(s.size, 768);
        let err = action::<Size>(b"").unwrap_err();
        assert_eq!(err.status().as_u16(), 400);
        assert_eq!(
            err.to_string(),
            "invalid JSON request body: missing field `size` at line 1 column 2"
        );
    }

    #[test]
    fn known_fields_are_the_names_in_the_json_with_aliases() {
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Renamed {
            #[serde(rename = "type")]
            kind: String,
            #[serde(alias = "userid")]
            username: String,
        }
        let mut known = known_fields::<Renamed>().to_vec();
        known.sort_unstable();
        assert_eq!(known, ["type", "userid", "username"]);
        assert!(known_fields::<u64>().is_empty());
    }

    /// What a debug-level subscriber writes while `f` runs.
    fn debug_log(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Log(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Log {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            // Another test may have hit the callsite first, on its thread, while this
            // subscriber was being registered, and left it cached as never enabled.
            tracing::callsite::rebuild_interest_cache();
            f()
        });
        let bytes = log.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn ignored_fields_are_logged_at_debug_by_name() {
        let log = debug_log(|| {
            let s: Size = json(br#"{"size": 1, "allocated": 512, "capacity": 1024}"#).unwrap();
            assert_eq!(s.size, 1);
        });
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 2, "{log}");
        assert!(lines[0].contains("DEBUG"), "{log}");
        assert!(
            lines[0].ends_with("ignored a field the request does not use field=allocated"),
            "{log}"
        );
        assert!(lines[1].ends_with("field=capacity"), "{log}");
        // A strict type logs nothing: it refuses instead.
        let log = debug_log(|| {
            json::<Sample>(br#"{"name": "a", "x": 1}"#).unwrap_err();
        });
        assert_eq!(log, "");
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Form {
        count: Option<Integer<u64>>,
        cpus: Option<Integer<std::num::NonZeroU32>>,
        index: Option<Integer<u32>>,
        version: Option<TextOrNumber>,
    }

    fn form(body: &str) -> Result<Form, Error> {
        json(body.as_bytes())
    }

    #[test]
    fn integer_is_a_json_integer_or_a_string_of_decimal_digits() {
        for (given, expected) in [
            ("2048", 2048),
            ("\"2048\"", 2048),
            ("\"007\"", 7),
            ("0", 0),
            ("\"18446744073709551615\"", u64::MAX),
        ] {
            let f = form(&format!(r#"{{"count": {given}}}"#)).unwrap();
            assert_eq!(f.count.map(Integer::get), Some(expected), "{given}");
        }
        let f = form(r#"{"cpus": "2", "index": 3}"#).unwrap();
        assert_eq!(f.cpus.map(|c| c.get().get()), Some(2));
        assert_eq!(f.index.map(Integer::get), Some(3));
    }

    #[test]
    fn integer_refuses_anything_else_like_a_wrong_type() {
        for (given, what) in [
            ("\"2.5\"", "invalid value: string \"2.5\""),
            ("\"-1\"", "invalid value: string \"-1\""),
            ("\"+1\"", "invalid value: string \"+1\""),
            ("\" 2\"", "invalid value: string \" 2\""),
            ("\"2 \"", "invalid value: string \"2 \""),
            ("\"two\"", "invalid value: string \"two\""),
            ("\"\"", "invalid value: string \"\""),
            ("-1", "invalid value: integer `-1`"),
            ("2.5", "invalid type: floating point `2.5`"),
            ("2.0", "invalid type: floating point `2.0`"),
            ("true", "invalid type: boolean `true`"),
            ("[2]", "invalid type: sequence"),
        ] {
            let err = form(&format!(r#"{{"count": {given}}}"#)).unwrap_err();
            assert_eq!(err.status().as_u16(), 400, "{given}");
            assert_eq!(err.name(), "kimchi.gateway.InvalidBody", "{given}");
            let message = err.to_string();
            assert!(
                message.starts_with(&format!(
                    "invalid JSON request body: {what}, expected a non-negative integer, \
                     or a string of its decimal digits at line 1 column"
                )),
                "{given}: {message}"
            );
        }
    }

    #[test]
    fn integer_out_of_the_types_range_is_400() {
        for (body, message) in [
            (
                r#"{"cpus": "0"}"#,
                "invalid value 0: number would be zero for non-zero type",
            ),
            (
                r#"{"cpus": 0}"#,
                "invalid value 0: number would be zero for non-zero type",
            ),
            (
                r#"{"index": "4294967296"}"#,
                "invalid value 4294967296: number too large to fit in target type",
            ),
            (
                r#"{"count": "18446744073709551616"}"#,
                "invalid value 18446744073709551616: number too large to fit in target type",
            ),
        ] {
            let err = form(body).unwrap_err();
            assert_eq!(err.status().as_u16(), 400, "{body}");
            assert!(err.to_string().contains(message), "{body}: {err}");
        }
    }

    #[test]
    fn number_given_for_text_keeps_its_json_text() {
        for (given, expected) in [
            ("1.0", "1.0"),
            ("12", "12"),
            ("22.04", "22.04"),
            ("-3", "-3"),
            ("\"1.0\"", "1.0"),
            ("\"ImagineOS\"", "ImagineOS"),
        ] {
            let f = form(&format!(r#"{{"version": {given}}}"#)).unwrap();
            assert_eq!(f.version.map(String::from).as_deref(), Some(expected));
        }
    }

    #[test]
    fn text_or_number_refuses_other_types_and_nul() {
        for (given, message) in [
            (
                "true",
                "invalid type: boolean `true`, expected a string or a number",
            ),
            (
                "[1]",
                "invalid type: sequence, expected a string or a number",
            ),
            ("\"a\\u0000\"", "NUL"),
        ] {
            let err = form(&format!(r#"{{"version": {given}}}"#)).unwrap_err();
            assert_eq!(err.status().as_u16(), 400, "{given}");
            assert!(err.to_string().contains(message), "{given}: {err}");
        }
    }

    #[test]
    fn list_takes_up_to_its_limit() {
        #[derive(Debug, Deserialize)]
        struct Folder {
            folder: List<u8, Folders>,
        }
        let body = |n: usize| format!(r#"{{"folder": [{}]}}"#, vec!["1"; n].join(","));
        let f: Folder = json(body(64).as_bytes()).unwrap();
        assert_eq!(f.folder.into_vec(), vec![1; 64]);
        let f: Folder = json(b"{\"folder\": []}").unwrap();
        assert!(f.folder.into_vec().is_empty());
        let err = json::<Folder>(body(65).as_bytes()).unwrap_err();
        assert_eq!(err.status().as_u16(), 400);
        assert!(
            err.to_string().starts_with(
                "invalid JSON request body: folder takes at most 64 entries at line 1"
            ),
            "{err}"
        );
        let err = json::<Folder>(br#"{"folder": "a"}"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("expected a list of at most 64 entries"),
            "{err}"
        );
    }

    #[test]
    fn messages_quote_only_a_prefix_of_the_input() {
        let long = "x".repeat(100_000);
        let err =
            json::<Sample>(format!(r#"{{"name": "a", "{long}": 1}}"#).as_bytes()).unwrap_err();
        let message = err.to_string();
        assert!(message.len() < 600, "{}", message.len());
        assert!(
            message.starts_with(&format!(
                "invalid JSON request body: unknown field `{}…`",
                "x".repeat(64)
            )),
            "{message}"
        );
        assert!(message.ends_with(" at line 1 column 100016"), "{message}");
        let digits = "9".repeat(10_000);
        // (A bare number too long for u64 is "number out of range", quoting nothing.)
        for given in [format!("\"{digits}\""), format!("\"{long}\"")] {
            let err = form(&format!(r#"{{"count": {given}}}"#)).unwrap_err();
            assert!(err.to_string().len() < 600, "{}", err.to_string().len());
            assert!(err.to_string().contains("…"), "{err}");
        }
    }

    #[test]
    fn quoted_parts_are_cut_one_by_one() {
        let a = "a".repeat(70);
        assert_eq!(
            shorten_quoted(&format!("x `{a}` and \"b\" and `c")),
            format!("x `{}…` and \"b\" and `c", "a".repeat(64))
        );
        assert_eq!(shorten_quoted("no quotes"), "no quotes");
        let many = "\"a\" ".repeat(1000);
        assert_eq!(shorten_quoted(&many).chars().count(), 513);
    }

    #[test]
    fn empty_or_non_object_body_is_400() {
        for body in [&b" \n"[..], b"[\"a\"]", b"\"a\"", b"null"] {
            let err = json::<Sample>(body).unwrap_err();
            assert_eq!(err.status().as_u16(), 400);
            assert!(err.to_string().contains("JSON object"), "{err}");
        }
    }
}
