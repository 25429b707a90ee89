//! Scopes (RFC 6749 §3.3): a space-delimited list of scope tokens, each
//! `1*( %x21 / %x23-5B / %x5D-7E )`. Kept as an ordered set so that equal grants compare equal.

use std::collections::BTreeSet;
use std::fmt;

/// A parsed, non-empty-token set of scopes. May be empty (a request with no `scope`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Scope(BTreeSet<String>);

/// The most scope tokens one scope may hold.
pub const MAX_SCOPES: usize = 50;

/// Why a scope string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidScope {
    #[error(
        "scope token {token:?} contains a character RFC 6749 §3.3 forbids (space, '\"', '\\\\' or a control character)"
    )]
    Character { token: String },
    #[error("a scope may hold at most {MAX_SCOPES} tokens")]
    TooMany,
}

impl Scope {
    /// Parses a `scope` parameter. Tokens are separated by spaces; repeated spaces are tolerated,
    /// duplicates collapse.
    pub fn parse(input: &str) -> Result<Scope, InvalidScope> {
        let mut tokens = BTreeSet::new();
        for token in input.split(' ').filter(|token| !token.is_empty()) {
            if !token.bytes().all(is_scope_char) {
                return Err(InvalidScope::Character { token: token.to_owned() });
            }
            tokens.insert(token.to_owned());
            if tokens.len() > MAX_SCOPES {
                return Err(InvalidScope::TooMany);
            }
        }
        Ok(Scope(tokens))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, token: &str) -> bool {
        self.0.contains(token)
    }

    /// True when every token of `self` is also in `allowed`.
    pub fn is_subset_of(&self, allowed: &Scope) -> bool {
        self.0.is_subset(&allowed.0)
    }

    /// The tokens of `self` that `allowed` lacks, space-separated (for error messages).
    pub fn missing_from(&self, allowed: &Scope) -> String {
        self.0.difference(&allowed.0).cloned().collect::<Vec<_>>().join(" ")
    }

    /// Every token of `self` and of `other`.
    pub fn union(&self, other: &Scope) -> Scope {
        Scope(self.0.union(&other.0).cloned().collect())
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
fn is_scope_char(byte: u8) -> bool {
    byte == 0x21 || (0x23..=0x5B).contains(&byte) || (0x5D..=0x7E).contains(&byte)
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for token in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(token)?;
            first = false;
        }
        Ok(())
    }
}

impl TryFrom<String> for Scope {
    type Error = InvalidScope;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Scope::parse(&value)
    }
}

impl From<Scope> for String {
    fn from(scope: Scope) -> String {
        scope.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_normalises() {
        let scope = Scope::parse("write  read read").unwrap();
        assert_eq!(scope.to_string(), "read write");
        assert!(Scope::parse("").unwrap().is_empty());
    }

    #[test]
    fn rejects_forbidden_characters() {
        assert!(Scope::parse("read \"x\"").is_err());
        assert!(Scope::parse("a\\b").is_err());
        assert!(Scope::parse("tab\there").is_err());
        assert!(Scope::parse("caf\u{e9}").is_err());
    }

    #[test]
    fn at_most_fifty_tokens() {
        let fifty: Vec<String> = (0..MAX_SCOPES).map(|i| format!("s{i}")).collect();
        assert!(Scope::parse(&fifty.join(" ")).is_ok());
        assert_eq!(Scope::parse(&format!("{} one-more", fifty.join(" "))), Err(InvalidScope::TooMany));
    }

    #[test]
    fn subset() {
        let allowed = Scope::parse("read write").unwrap();
        assert!(Scope::parse("read").unwrap().is_subset_of(&allowed));
        assert!(!Scope::parse("read admin").unwrap().is_subset_of(&allowed));
        assert_eq!(Scope::parse("read admin").unwrap().missing_from(&allowed), "admin");
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(tokens in proptest::collection::vec("[!#-\\[\\]-~]{1,12}", 0..6)) {
            let scope = Scope::parse(&tokens.join(" ")).unwrap();
            prop_assert_eq!(Scope::parse(&scope.to_string()).unwrap(), scope.clone());
            for token in &tokens {
                prop_assert!(scope.contains(token));
            }
        }

        #[test]
        fn never_panics_and_never_accepts_forbidden_bytes(input in "\\PC*") {
            if let Ok(scope) = Scope::parse(&input) {
                for token in scope.iter() {
                    prop_assert!(token.bytes().all(is_scope_char));
                }
            }
        }

        #[test]
        fn every_set_is_a_subset_of_its_union(a in "[a-z ]{0,30}", b in "[a-z ]{0,30}") {
            let a = Scope::parse(&a).unwrap();
            let b = Scope::parse(&b).unwrap();
            let union = Scope::parse(&format!("{a} {b}")).unwrap();
            prop_assert!(a.is_subset_of(&union));
            prop_assert!(b.is_subset_of(&union));
        }
    }
}
