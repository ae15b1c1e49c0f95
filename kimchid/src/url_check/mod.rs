//! Whether a template's http(s)/ftp ISO URL answers, asked outside kimchid: kimchid has
//! no IP (kimchid.service), so it sends the URL over a Unix socket
//! (kimchi-url-check.socket, root only) to `kimchid check-url`, which runs once per
//! connection as kimchi-url-check@.service — no privileges, IP only — checks the URL
//! again, asks the server with curl and answers. One JSON line each way.

pub mod client;
pub mod helper;

use serde::{Deserialize, Serialize};

/// What kimchid sends: the URL as the caller gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlCheckRequest {
    pub url: String,
}

/// What the helper answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum UrlCheckAnswer {
    /// The server answered for the image.
    Answers,
    /// The caller's mistake: a URL that may not be checked, or whose server does not
    /// answer for it. The reason is the sentence the caller gets.
    Refused { reason: String },
    /// The check could not be made (curl could not run).
    Failed { reason: String },
}

#[cfg(test)]
pub mod tests;
