//! How the sled store turns records into bytes. Codes, grants and refresh tokens, the records the
//! token endpoint writes on every request, have a compact binary form; every other record is
//! JSON.
//!
//! Why binary for those three: sled 0.34 copies a leaf on every insert, writes it out whole
//! when it splits (every 8 or so appends) and every 10 changes to it, so the bytes of a record are
//! copied and written many times over. JSON spelled every field name in every record: a grant
//! took about 320 bytes, a refresh token 150, a code 320; the binary form takes about 105, 60 and
//! 115 (`the_binary_form_is_small`; an id shaped like a UUID takes 16 bytes instead of 36).
//!
//! The binary form starts with [`FORMAT`], a byte no JSON record starts with (they all start with
//! `{`), so records written as JSON by earlier releases are still read; they are rewritten in the
//! binary form when next written. Then each field in declaration order: integers as LEB128
//! varints (signed ones zigzag-encoded), booleans as one byte, options as a 0 or 1 byte then the
//! value, lists as a count then the items, strings as `Writer::str` says. Decoding checks every
//! length against what is left and parses scopes and code challenges as they are parsed from a
//! request, so garbage gives an error, never a panic or a record that breaks an invariant.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{StoreError, StoreResult};
use crate::domain::{
    AuthorizationCode, Client, CodeChallenge, Grant, IssuedAccessToken, RefreshToken, Scope, Session, User,
};

/// The first byte of a record in the binary form (version 1).
const FORMAT: u8 = 1;

/// A record or change the store cannot make sense of.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct Corrupt(pub(super) String);

/// A record as the sled store keeps it.
pub(super) trait Stored: Sized {
    fn encode(&self) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> StoreResult<Self>;
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::backend(Corrupt(format!("undecodable record: {what}")))
}

fn encode_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Our records serialize infallibly (no maps with non-string keys, no custom serializers).
    serde_json::to_vec(value).expect("records always serialize to JSON")
}

fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(corrupt)
}

macro_rules! json_records {
    ($($record:ty),*) => {$(
        impl Stored for $record {
            fn encode(&self) -> Vec<u8> {
                encode_json(self)
            }
            fn decode(bytes: &[u8]) -> StoreResult<Self> {
                decode_json(bytes)
            }
        }
    )*};
}

json_records!(Client, User, Session, Scope);

/// Implements [`Stored`] with the binary form, reading JSON too (records of earlier releases).
macro_rules! binary_records {
    ($($record:ty),*) => {$(
        impl Stored for $record {
            fn encode(&self) -> Vec<u8> {
                let mut out = Writer(Vec::with_capacity(160));
                out.0.push(FORMAT);
                self.write(&mut out);
                out.0
            }
            fn decode(bytes: &[u8]) -> StoreResult<Self> {
                match bytes.split_first() {
                    Some((&FORMAT, rest)) => {
                        let mut input = Reader(rest);
                        let record = <$record>::read(&mut input)?;
                        match input.0.is_empty() {
                            true => Ok(record),
                            false => Err(corrupt("bytes left after the record")),
                        }
                    }
                    _ => decode_json(bytes),
                }
            }
        }
    )*};
}

binary_records!(AuthorizationCode, Grant, RefreshToken);

/// What the store's writer reads of a code when it redeems it: the fields before these are
/// skipped, not decoded into strings and sets the writer would drop (the redemption runs on the
/// one writer thread every exchange passes through).
#[derive(Debug, PartialEq, serde::Deserialize)]
pub(super) struct CodeState {
    pub(super) grant_id: String,
    pub(super) expires_at: i64,
    pub(super) used: bool,
}

impl CodeState {
    /// Reads a code stored by [`Stored::encode`] (or as JSON by an earlier release). In the
    /// binary form the fields come in `AuthorizationCode`'s `Fields` order.
    pub(super) fn decode(bytes: &[u8]) -> StoreResult<CodeState> {
        let Some((&FORMAT, rest)) = bytes.split_first() else {
            return decode_json(bytes);
        };
        let mut input = Reader(rest);
        for _ in 0..4 {
            input.skip_str()?; // client_id, redirect_uri, user_id, scope
        }
        input.i64()?; // auth_time
        if input.bool()? {
            input.skip_str()?; // code_challenge
        }
        Ok(CodeState { grant_id: input.str()?, expires_at: input.i64()?, used: input.bool()? })
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u64(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push(value as u8 | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    fn i64(&mut self, value: i64) {
        self.u64(((value << 1) ^ (value >> 63)) as u64);
    }

    fn bool(&mut self, value: bool) {
        self.0.push(value as u8);
    }

    /// A string: a varint of its length times two, then its bytes; or, for the lowercase
    /// hyphenated form of a UUID (the ids this server makes), the varint 1 then its 16 bytes.
    fn str(&mut self, value: &str) {
        if let Some(uuid) = canonical_uuid(value) {
            self.u64(1);
            self.0.extend_from_slice(uuid.as_bytes());
        } else {
            self.u64((value.len() as u64) << 1);
            self.0.extend_from_slice(value.as_bytes());
        }
    }

    fn opt_str(&mut self, value: Option<&str>) {
        self.bool(value.is_some());
        if let Some(value) = value {
            self.str(value);
        }
    }

    fn opt_i64(&mut self, value: Option<i64>) {
        self.bool(value.is_some());
        if let Some(value) = value {
            self.i64(value);
        }
    }

    fn scope(&mut self, scope: &Scope) {
        self.str(&scope.to_string());
    }
}

/// `value` as a UUID if it is one written the way `Uuid::to_string` writes it (lowercase,
/// hyphenated), the only form the 16 bytes give back.
fn canonical_uuid(value: &str) -> Option<uuid::Uuid> {
    if value.len() != 36 || value.bytes().any(|byte| byte.is_ascii_uppercase()) {
        return None;
    }
    uuid::Uuid::try_parse(value).ok()
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, length: usize) -> StoreResult<&[u8]> {
        let (head, rest) = self.0.split_at_checked(length).ok_or_else(|| corrupt("record cut short"))?;
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> StoreResult<u8> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> StoreResult<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(corrupt("a varint longer than 64 bits"))
    }

    fn i64(&mut self) -> StoreResult<i64> {
        let value = self.u64()?;
        Ok((value >> 1) as i64 ^ -((value & 1) as i64))
    }

    fn bool(&mut self) -> StoreResult<bool> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(corrupt(format!("{other} is not a boolean"))),
        }
    }

    /// A string as `Writer::str` wrote it: `(true, its 16 bytes)` for a UUID, `(false, its bytes)`
    /// otherwise.
    fn raw_str(&mut self) -> StoreResult<(bool, &[u8])> {
        let head = self.u64()?;
        if head == 1 {
            return Ok((true, self.take(16)?));
        }
        if head & 1 == 1 {
            return Err(corrupt("an unknown string form"));
        }
        let length = usize::try_from(head >> 1).map_err(|_| corrupt("a string longer than memory"))?;
        Ok((false, self.take(length)?))
    }

    fn str(&mut self) -> StoreResult<String> {
        match self.raw_str()? {
            (true, bytes) => Ok(uuid::Uuid::from_bytes(bytes.try_into().expect("took 16 bytes")).to_string()),
            (false, bytes) => String::from_utf8(bytes.to_vec()).map_err(corrupt),
        }
    }

    fn skip_str(&mut self) -> StoreResult<()> {
        self.raw_str().map(|_| ())
    }

    fn opt_str(&mut self) -> StoreResult<Option<String>> {
        match self.bool()? {
            true => self.str().map(Some),
            false => Ok(None),
        }
    }

    fn opt_i64(&mut self) -> StoreResult<Option<i64>> {
        match self.bool()? {
            true => self.i64().map(Some),
            false => Ok(None),
        }
    }

    fn scope(&mut self) -> StoreResult<Scope> {
        Scope::parse(&self.str()?).map_err(corrupt)
    }
}

/// One record's fields, in declaration order.
trait Fields: Sized {
    fn write(&self, out: &mut Writer);
    fn read(input: &mut Reader) -> StoreResult<Self>;
}

impl Fields for AuthorizationCode {
    fn write(&self, out: &mut Writer) {
        out.str(&self.client_id);
        out.str(&self.redirect_uri);
        out.str(&self.user_id);
        out.scope(&self.scope);
        out.i64(self.auth_time);
        out.opt_str(self.code_challenge.as_ref().map(CodeChallenge::as_str));
        out.str(&self.grant_id);
        out.i64(self.expires_at);
        out.bool(self.used);
        out.i64(self.purge_at);
        out.opt_str(self.nonce.as_deref());
        // Last, and only when known: a code of an earlier release ends before it. As its distance
        // to the expiry (the code lifetime: one byte for the default 60 s) rather than a second
        // full timestamp.
        if let Some(issued_at) = self.issued_at {
            out.i64(self.expires_at.wrapping_sub(issued_at));
        }
    }

    fn read(input: &mut Reader) -> StoreResult<AuthorizationCode> {
        let mut code = AuthorizationCode {
            client_id: input.str()?,
            redirect_uri: input.str()?,
            user_id: input.str()?,
            scope: input.scope()?,
            auth_time: input.i64()?,
            code_challenge: match input.opt_str()? {
                Some(challenge) => Some(CodeChallenge::parse(&challenge, Some("S256")).map_err(corrupt)?),
                None => None,
            },
            grant_id: input.str()?,
            expires_at: input.i64()?,
            used: input.bool()?,
            purge_at: input.i64()?,
            nonce: input.opt_str()?,
            issued_at: None,
        };
        if !input.0.is_empty() {
            code.issued_at = Some(code.expires_at.wrapping_sub(input.i64()?));
        }
        Ok(code)
    }
}

impl Fields for Grant {
    fn write(&self, out: &mut Writer) {
        out.str(&self.id);
        out.str(&self.client_id);
        out.str(&self.user_id);
        out.scope(&self.scope);
        out.i64(self.auth_time);
        out.i64(self.created_at);
        out.opt_i64(self.revoked_at);
        out.u64(self.access_tokens.len() as u64);
        for token in &self.access_tokens {
            out.str(&token.jti);
            out.i64(token.expires_at);
        }
        out.i64(self.expires_at);
    }

    fn read(input: &mut Reader) -> StoreResult<Grant> {
        let (id, client_id, user_id, scope) = (input.str()?, input.str()?, input.str()?, input.scope()?);
        let (auth_time, created_at, revoked_at) = (input.i64()?, input.i64()?, input.opt_i64()?);
        // Every token takes at least two bytes: a count beyond that is garbage, not an allocation.
        let count = usize::try_from(input.u64()?).ok().filter(|count| *count <= input.0.len() / 2);
        let count = count.ok_or_else(|| corrupt("more access tokens than bytes"))?;
        let mut access_tokens = Vec::with_capacity(count);
        for _ in 0..count {
            access_tokens.push(IssuedAccessToken { jti: input.str()?, expires_at: input.i64()? });
        }
        let expires_at = input.i64()?;
        Ok(Grant {
            id,
            client_id,
            user_id,
            scope,
            auth_time,
            created_at,
            revoked_at,
            access_tokens,
            expires_at,
        })
    }
}

impl Fields for RefreshToken {
    fn write(&self, out: &mut Writer) {
        out.str(&self.grant_id);
        out.str(&self.client_id);
        out.scope(&self.scope);
        out.i64(self.expires_at);
        out.bool(self.rotated);
    }

    fn read(input: &mut Reader) -> StoreResult<RefreshToken> {
        Ok(RefreshToken {
            grant_id: input.str()?,
            client_id: input.str()?,
            scope: input.scope()?,
            expires_at: input.i64()?,
            rotated: input.bool()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn code(challenge: Option<&str>, nonce: Option<&str>) -> AuthorizationCode {
        AuthorizationCode {
            client_id: "9KNW4Lu1x7NSogA2OMwgU3yl".into(),
            redirect_uri: "https://app.example/cb".into(),
            user_id: "0b8f3bde-5a8e-4b9b-9c1e-3f1f0c6c1a2d".into(),
            scope: Scope::parse("openid read").unwrap(),
            auth_time: 1_764_800_000,
            code_challenge: challenge.map(|challenge| CodeChallenge::parse(challenge, Some("S256")).unwrap()),
            grant_id: "019ae5a1-7c3e-7f00-8a1b-2c3d4e5f6a7b".into(),
            expires_at: 1_764_800_060,
            used: false,
            purge_at: 1_764_800_660,
            nonce: nonce.map(Into::into),
            issued_at: Some(1_764_800_000),
        }
    }

    fn grant(revoked_at: Option<i64>, tokens: usize) -> Grant {
        Grant {
            id: "019ae5a1-7c3e-7f00-8a1b-2c3d4e5f6a7b".into(),
            client_id: "9KNW4Lu1x7NSogA2OMwgU3yl".into(),
            // Not a UUID in canonical form (uppercase): kept as written.
            user_id: "0B8F3BDE-5A8E-4B9B-9C1E-3F1F0C6C1A2D".into(),
            scope: Scope::parse("read write").unwrap(),
            auth_time: -5,
            created_at: 1_764_800_000,
            revoked_at,
            access_tokens: (0..tokens)
                .map(|n| IssuedAccessToken {
                    jti: uuid::Uuid::new_v4().to_string(),
                    expires_at: 1000 + n as i64,
                })
                .collect(),
            expires_at: i64::MAX,
        }
    }

    fn refresh(rotated: bool) -> RefreshToken {
        RefreshToken {
            grant_id: "019ae5a1-7c3e-7f00-8a1b-2c3d4e5f6a7b".into(),
            client_id: "c".into(),
            scope: Scope::default(),
            expires_at: i64::MIN,
            rotated,
        }
    }

    fn round_trip<T: Stored + Fields + Serialize + PartialEq + std::fmt::Debug>(record: T) {
        let encoded = record.encode();
        assert_eq!(encoded[0], FORMAT);
        assert_eq!(T::decode(&encoded).unwrap(), record);
        // Records written as JSON by earlier releases read the same, and are larger.
        let json = encode_json(&record);
        assert_eq!(T::decode(&json).unwrap(), record);
        assert!(encoded.len() < json.len() / 2, "{} bytes against {} as JSON", encoded.len(), json.len());
    }

    #[test]
    fn records_survive_their_binary_form_and_json_ones_still_read() {
        round_trip(code(None, None));
        round_trip(code(Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"), Some("n-0S6_WzA2Mj")));
        round_trip(grant(None, 0));
        round_trip(grant(Some(1_764_800_100), 3));
        round_trip(refresh(false));
        round_trip(refresh(true));
    }

    #[test]
    fn a_code_of_an_earlier_release_reads_without_an_issue_time() {
        let earlier = AuthorizationCode { issued_at: None, ..code(None, None) };
        // Its binary form ended at the nonce: the issue time is appended, nothing else moves.
        assert!(code(None, None).encode().starts_with(&earlier.encode()));
        assert_eq!(AuthorizationCode::decode(&earlier.encode()).unwrap(), earlier);
        let mut json = serde_json::to_value(&earlier).unwrap();
        json.as_object_mut().unwrap().remove("issued_at");
        assert_eq!(AuthorizationCode::decode(&serde_json::to_vec(&json).unwrap()).unwrap(), earlier);
    }

    #[test]
    fn the_writers_view_of_a_code_reads_what_the_code_holds() {
        let challenge = Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        for mut record in [code(None, None), code(challenge, Some("n-0S6_WzA2Mj"))] {
            for used in [false, true] {
                record.used = used;
                let state =
                    CodeState { grant_id: record.grant_id.clone(), expires_at: record.expires_at, used };
                assert_eq!(CodeState::decode(&record.encode()).unwrap(), state);
                assert_eq!(CodeState::decode(&encode_json(&record)).unwrap(), state);
            }
        }
        assert!(CodeState::decode(&code(None, None).encode()[..40]).is_err());
    }

    #[test]
    fn the_binary_form_is_small() {
        // What the token endpoint writes, with this server's ids (see the module comment).
        let mut grant = grant(None, 1);
        grant.user_id = grant.user_id.to_lowercase();
        grant.expires_at = 1_764_900_000;
        let refresh = RefreshToken {
            client_id: "9KNW4Lu1x7NSogA2OMwgU3yl".into(),
            scope: Scope::parse("read write").unwrap(),
            expires_at: 1_764_900_000,
            ..refresh(false)
        };
        let sizes = [
            (grant.encode().len(), encode_json(&grant).len()),
            (refresh.encode().len(), encode_json(&refresh).len()),
            (code(None, None).encode().len(), encode_json(&code(None, None)).len()),
        ];
        assert!(sizes.iter().all(|(binary, json)| binary * 5 <= json * 2), "{sizes:?}");
        assert!(sizes[0].0 <= 112 && sizes[1].0 <= 60 && sizes[2].0 <= 115, "{sizes:?}");
    }

    #[test]
    fn a_record_with_bytes_left_or_cut_short_is_refused() {
        let mut encoded = refresh(false).encode();
        encoded.push(0);
        assert!(RefreshToken::decode(&encoded).is_err());
        let encoded = grant(None, 2).encode();
        for cut in 0..encoded.len() {
            assert!(Grant::decode(&encoded[..cut]).is_err(), "decoded {cut} bytes of {}", encoded.len());
        }
    }

    #[test]
    fn a_stored_scope_or_challenge_is_checked_as_a_request_one_is() {
        let mut bad_scope = Writer(vec![FORMAT]);
        bad_scope.str("g");
        bad_scope.str("c");
        bad_scope.str("read \"write\"");
        bad_scope.i64(0);
        bad_scope.bool(false);
        assert!(RefreshToken::decode(&bad_scope.0).is_err());
        let mut record = code(None, None);
        record.code_challenge = Some(CodeChallenge::parse(&"a".repeat(43), Some("S256")).unwrap());
        let mut encoded = record.encode();
        let at = encoded.windows(43).position(|window| window == "a".repeat(43).as_bytes()).unwrap();
        encoded[at] = b'*';
        assert!(AuthorizationCode::decode(&encoded).is_err());
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let with_format = [&[FORMAT][..], &bytes].concat();
            let _ = Grant::decode(&with_format);
            let _ = AuthorizationCode::decode(&with_format);
            let _ = RefreshToken::decode(&with_format);
            let _ = Grant::decode(&bytes);
        }

        #[test]
        fn any_string_survives(value in ".*", id in any::<u128>()) {
            for value in [value, uuid::Uuid::from_u128(id).to_string()] {
                let mut out = Writer(vec![]);
                out.str(&value);
                let mut input = Reader(&out.0);
                prop_assert_eq!(input.str().unwrap(), value);
                prop_assert!(input.0.is_empty());
            }
        }

        #[test]
        fn any_integer_survives(value in any::<i64>()) {
            let mut out = Writer(vec![]);
            out.i64(value);
            out.opt_i64(Some(value));
            let mut input = Reader(&out.0);
            prop_assert_eq!(input.i64().unwrap(), value);
            prop_assert_eq!(input.opt_i64().unwrap(), Some(value));
        }
    }
}
