//! Tenant ids: validated so that a tenant id can never escape its storage prefix.

use std::fmt;

/// The tenant used when multi-tenancy is off (Tempo's name for it).
pub const SINGLE_TENANT: &str = "single-tenant";

/// Longest accepted tenant id, in bytes.
pub const MAX_TENANT_LEN: usize = 150;

/// Why a tenant id was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TenantError {
    #[error("missing X-Scope-OrgID header: multi-tenancy is on, every request must name its tenant")]
    MissingHeader,
    #[error("X-Scope-OrgID is not valid UTF-8")]
    NotUtf8,
    #[error("invalid tenant id (X-Scope-OrgID): it is empty")]
    Empty,
    #[error("invalid tenant id (X-Scope-OrgID): it is {len} characters long, the limit is {MAX_TENANT_LEN}")]
    TooLong { len: usize },
    #[error("invalid tenant id (X-Scope-OrgID): it may not be '.' or '..'")]
    DotPath,
    #[error("tenant id contains {found:?} at byte {position}; allowed characters are A-Z a-z 0-9 ! - _ . * ' ( )")]
    InvalidCharacter { found: char, position: usize },
}

/// A validated tenant id: charset `[A-Za-z0-9!._*'()-]`, 1 to 150 characters, not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    /// Validates `id` (as taken from `X-Scope-OrgID`).
    pub fn new(id: &str) -> Result<Self, TenantError> {
        if id.is_empty() {
            return Err(TenantError::Empty);
        }
        if let Some((position, found)) = id.char_indices().find(|(_, c)| !is_allowed(*c)) {
            return Err(TenantError::InvalidCharacter { found, position });
        }
        if id.len() > MAX_TENANT_LEN {
            return Err(TenantError::TooLong { len: id.len() });
        }
        if id == "." || id == ".." {
            return Err(TenantError::DotPath);
        }
        Ok(Self(id.to_owned()))
    }

    /// The tenant of a request from its `X-Scope-OrgID` header: the header
    /// when multi-tenancy is on, [`SINGLE_TENANT`] (header ignored) when off.
    pub fn from_header(multi_tenant: bool, header: Option<&[u8]>) -> Result<Self, TenantError> {
        if !multi_tenant {
            return Ok(Self::single());
        }
        let header = header.ok_or(TenantError::MissingHeader)?;
        Self::new(std::str::from_utf8(header).map_err(|_| TenantError::NotUtf8)?)
    }

    /// The tenant of a single-tenant installation.
    pub fn single() -> Self {
        Self(SINGLE_TENANT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '!' | '-' | '_' | '.' | '*' | '\'' | '(' | ')')
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_charset() {
        for ok in ["single-tenant", "a", "Team_1.prod", "x!*'()-", &"a".repeat(150)] {
            assert_eq!(TenantId::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn header_is_required_only_with_multi_tenancy() {
        assert_eq!(TenantId::from_header(false, None).unwrap().as_str(), SINGLE_TENANT);
        assert_eq!(TenantId::from_header(false, Some(b"..")).unwrap().as_str(), SINGLE_TENANT);
        assert_eq!(TenantId::from_header(true, None), Err(TenantError::MissingHeader));
        assert_eq!(TenantId::from_header(true, Some(b"\xff")), Err(TenantError::NotUtf8));
        assert_eq!(TenantId::from_header(true, Some(b"team-a")).unwrap().as_str(), "team-a");
    }

    #[test]
    fn refuses_hostile_ids() {
        assert_eq!(TenantId::new(""), Err(TenantError::Empty));
        assert_eq!(TenantId::new(".."), Err(TenantError::DotPath));
        assert_eq!(TenantId::new("."), Err(TenantError::DotPath));
        assert_eq!(TenantId::new("a/b"), Err(TenantError::InvalidCharacter { found: '/', position: 1 }));
        assert!(matches!(TenantId::new("é"), Err(TenantError::InvalidCharacter { .. })));
        assert!(matches!(TenantId::new("a b"), Err(TenantError::InvalidCharacter { .. })));
        assert_eq!(TenantId::new(&"a".repeat(151)), Err(TenantError::TooLong { len: 151 }));
    }
}
