//! The `a{sv}` dictionaries of the contract (call options, template and network
//! changes): adding plain values, and reading one back as a type, with the caller's
//! sentence when it has another.

use std::collections::HashMap;

use zbus::{OwnedVariant, Variant};

use crate::Error;

pub type Dict = HashMap<String, OwnedVariant>;

/// Adds `value` under `key`; the contract's values are plain (no file descriptors).
pub fn put(dict: &mut Dict, key: &str, value: Variant<'_>) {
    let owned = OwnedVariant::try_from(value).expect("plain values carry no fds");
    dict.insert(key.to_owned(), owned);
}

/// `value` as a `T`, or `wrong()` when it is of another type.
pub fn read<'v, T>(value: &'v Variant<'v>, wrong: impl FnOnce() -> Error) -> Result<T, Error>
where
    T: TryFrom<&'v Variant<'v>>,
{
    T::try_from(value).map_err(|_| wrong())
}
