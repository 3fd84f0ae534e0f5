//! Typed process exits (sysexits.h): each failure says which code it means.

use std::fmt;

pub const OK: i32 = 0;
/// Bad usage or config (EX_USAGE).
pub const USAGE: i32 = 64;
/// A port, file or directory the appliance needs is unavailable (EX_UNAVAILABLE).
pub const UNAVAILABLE: i32 = 69;
/// Anything else (EX_SOFTWARE).
pub const SOFTWARE: i32 = 70;

/// A failure that ends the process with a specific code and one message line.
#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

impl Exit {
    pub fn usage(message: impl fmt::Display) -> Self {
        Self {
            code: USAGE,
            message: message.to_string(),
        }
    }
    pub fn unavailable(message: impl fmt::Display) -> Self {
        Self {
            code: UNAVAILABLE,
            message: message.to_string(),
        }
    }
    pub fn software(message: impl fmt::Display) -> Self {
        Self {
            code: SOFTWARE,
            message: message.to_string(),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

impl From<crate::config::ConfigError> for Exit {
    fn from(e: crate::config::ConfigError) -> Self {
        Self::usage(e)
    }
}
