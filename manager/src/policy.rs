//! Bucket policies (S3 PutBucketPolicy), the common subset of the IAM policy language, as the
//! catalog keeps them and every gateway evaluates them: statements that `Allow` or `Deny`
//! S3 actions (with `*` and `?` wildcards) on the bucket and its keys (resource prefixes with
//! wildcards) to anyone (`*`) or to users, under conditions on `s3:prefix`, `s3:delimiter`,
//! `aws:SourceIp`, `aws:SecureTransport`, `aws:Referer` and `aws:UserAgent`.
//!
//! A policy is parsed and checked whole when it is put: anything this module cannot evaluate
//! exactly (`NotPrincipal`, `NotAction`, `NotResource`, a condition operator or key outside the
//! subset, a principal that is not `*` or a user) is refused then ([`PolicyError::Unsupported`]),
//! never skipped later. The catalog keeps the document as it was sent (GetBucketPolicy returns
//! it) and every node parses it again when it reads the catalog.

use std::net::IpAddr;

/// Largest policy document, in bytes (S3's limit: 20 KB).
pub const POLICY_BYTES_MAX: usize = 20 * 1024;

/// The ARN prefix of S3 resources.
const S3_ARN_PREFIX: &str = "arn:aws:s3:::";

/// Why a policy document was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not a policy (S3's `MalformedPolicy`).
    #[error("{0}")]
    Malformed(String),
    /// A policy, but one that uses something leofs does not evaluate (refused rather than
    /// ignored).
    #[error("{0}")]
    Unsupported(String),
}

fn malformed(message: impl Into<String>) -> PolicyError {
    PolicyError::Malformed(message.into())
}

fn unsupported(message: impl Into<String>) -> PolicyError {
    PolicyError::Unsupported(message.into())
}

/// Whether an S3 action applies to a bucket or to the objects in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionLevel {
    /// Its resource is `arn:aws:s3:::bucket`.
    Bucket,
    /// Its resource is `arn:aws:s3:::bucket/key`.
    Object,
}

/// The S3 actions a bucket policy may name, each with the resource it applies to. A policy
/// naming an action leofs has no operation for is taken (it matches no request), as S3 takes
/// it; a name that is no S3 action is refused.
pub const S3_ACTIONS: &[(&str, ActionLevel)] = &[
    ("s3:AbortMultipartUpload", ActionLevel::Object),
    ("s3:BypassGovernanceRetention", ActionLevel::Object),
    ("s3:CreateBucket", ActionLevel::Bucket),
    ("s3:DeleteBucket", ActionLevel::Bucket),
    ("s3:DeleteBucketOwnershipControls", ActionLevel::Bucket),
    ("s3:DeleteBucketPolicy", ActionLevel::Bucket),
    ("s3:DeleteBucketWebsite", ActionLevel::Bucket),
    ("s3:DeleteObject", ActionLevel::Object),
    ("s3:DeleteObjectTagging", ActionLevel::Object),
    ("s3:DeleteObjectVersion", ActionLevel::Object),
    ("s3:DeleteObjectVersionTagging", ActionLevel::Object),
    ("s3:GetAccelerateConfiguration", ActionLevel::Bucket),
    ("s3:GetBucketAcl", ActionLevel::Bucket),
    ("s3:GetBucketCORS", ActionLevel::Bucket),
    ("s3:GetBucketLocation", ActionLevel::Bucket),
    ("s3:GetBucketLogging", ActionLevel::Bucket),
    ("s3:GetBucketNotification", ActionLevel::Bucket),
    ("s3:GetBucketObjectLockConfiguration", ActionLevel::Bucket),
    ("s3:GetBucketOwnershipControls", ActionLevel::Bucket),
    ("s3:GetBucketPolicy", ActionLevel::Bucket),
    ("s3:GetBucketPolicyStatus", ActionLevel::Bucket),
    ("s3:GetBucketPublicAccessBlock", ActionLevel::Bucket),
    ("s3:GetBucketRequestPayment", ActionLevel::Bucket),
    ("s3:GetBucketTagging", ActionLevel::Bucket),
    ("s3:GetBucketVersioning", ActionLevel::Bucket),
    ("s3:GetBucketWebsite", ActionLevel::Bucket),
    ("s3:GetEncryptionConfiguration", ActionLevel::Bucket),
    ("s3:GetLifecycleConfiguration", ActionLevel::Bucket),
    ("s3:GetObject", ActionLevel::Object),
    ("s3:GetObjectAcl", ActionLevel::Object),
    ("s3:GetObjectAttributes", ActionLevel::Object),
    ("s3:GetObjectLegalHold", ActionLevel::Object),
    ("s3:GetObjectRetention", ActionLevel::Object),
    ("s3:GetObjectTagging", ActionLevel::Object),
    ("s3:GetObjectTorrent", ActionLevel::Object),
    ("s3:GetObjectVersion", ActionLevel::Object),
    ("s3:GetObjectVersionAcl", ActionLevel::Object),
    ("s3:GetObjectVersionAttributes", ActionLevel::Object),
    ("s3:GetObjectVersionTagging", ActionLevel::Object),
    ("s3:GetObjectVersionTorrent", ActionLevel::Object),
    ("s3:GetReplicationConfiguration", ActionLevel::Bucket),
    ("s3:ListBucket", ActionLevel::Bucket),
    ("s3:ListBucketMultipartUploads", ActionLevel::Bucket),
    ("s3:ListBucketVersions", ActionLevel::Bucket),
    ("s3:ListMultipartUploadParts", ActionLevel::Object),
    ("s3:ObjectOwnerOverrideToBucketOwner", ActionLevel::Object),
    ("s3:PutAccelerateConfiguration", ActionLevel::Bucket),
    ("s3:PutBucketAcl", ActionLevel::Bucket),
    ("s3:PutBucketCORS", ActionLevel::Bucket),
    ("s3:PutBucketLogging", ActionLevel::Bucket),
    ("s3:PutBucketNotification", ActionLevel::Bucket),
    ("s3:PutBucketObjectLockConfiguration", ActionLevel::Bucket),
    ("s3:PutBucketOwnershipControls", ActionLevel::Bucket),
    ("s3:PutBucketPolicy", ActionLevel::Bucket),
    ("s3:PutBucketPublicAccessBlock", ActionLevel::Bucket),
    ("s3:PutBucketRequestPayment", ActionLevel::Bucket),
    ("s3:PutBucketTagging", ActionLevel::Bucket),
    ("s3:PutBucketVersioning", ActionLevel::Bucket),
    ("s3:PutBucketWebsite", ActionLevel::Bucket),
    ("s3:PutEncryptionConfiguration", ActionLevel::Bucket),
    ("s3:PutLifecycleConfiguration", ActionLevel::Bucket),
    ("s3:PutObject", ActionLevel::Object),
    ("s3:PutObjectAcl", ActionLevel::Object),
    ("s3:PutObjectLegalHold", ActionLevel::Object),
    ("s3:PutObjectRetention", ActionLevel::Object),
    ("s3:PutObjectTagging", ActionLevel::Object),
    ("s3:PutObjectVersionAcl", ActionLevel::Object),
    ("s3:PutObjectVersionTagging", ActionLevel::Object),
    ("s3:PutReplicationConfiguration", ActionLevel::Bucket),
    ("s3:ReplicateDelete", ActionLevel::Object),
    ("s3:ReplicateObject", ActionLevel::Object),
    ("s3:ReplicateTags", ActionLevel::Object),
    ("s3:RestoreObject", ActionLevel::Object),
];

/// The level of a known S3 action (exact name, any case).
pub fn action_level(action: &str) -> Option<ActionLevel> {
    S3_ACTIONS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(action))
        .map(|(_, level)| *level)
}

/// What one statement does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

/// Whom a statement is about.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Principals {
    /// `*`: everyone, anonymous requests included.
    Anyone,
    /// These user ids (a signed request's user).
    Users(Vec<String>),
}

/// A condition operator of the subset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    IpAddress,
    NotIpAddress,
    Bool,
}

impl Operator {
    fn parse(name: &str) -> Option<Operator> {
        Some(match name {
            "StringEquals" => Operator::StringEquals,
            "StringNotEquals" => Operator::StringNotEquals,
            "StringEqualsIgnoreCase" => Operator::StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => Operator::StringNotEqualsIgnoreCase,
            "StringLike" => Operator::StringLike,
            "StringNotLike" => Operator::StringNotLike,
            "IpAddress" => Operator::IpAddress,
            "NotIpAddress" => Operator::NotIpAddress,
            "Bool" => Operator::Bool,
            _ => return None,
        })
    }

    /// Whether the operator holds when none of its values match (and when the request has no
    /// value for the key), as IAM's negated operators do.
    fn negated(self) -> bool {
        matches!(
            self,
            Operator::StringNotEquals
                | Operator::StringNotEqualsIgnoreCase
                | Operator::StringNotLike
                | Operator::NotIpAddress
        )
    }
}

/// A condition key of the subset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionKey {
    /// `s3:prefix`: the `prefix` of a listing.
    Prefix,
    /// `s3:delimiter`: the `delimiter` of a listing.
    Delimiter,
    /// `aws:SourceIp`: the address the request came from.
    SourceIp,
    /// `aws:SecureTransport`: whether the request came over TLS.
    SecureTransport,
    /// `aws:Referer`: the `Referer` header.
    Referer,
    /// `aws:UserAgent`: the `User-Agent` header.
    UserAgent,
}

impl ConditionKey {
    fn parse(name: &str) -> Option<ConditionKey> {
        let lower = name.to_ascii_lowercase();
        Some(match lower.as_str() {
            "s3:prefix" => ConditionKey::Prefix,
            "s3:delimiter" => ConditionKey::Delimiter,
            "aws:sourceip" => ConditionKey::SourceIp,
            "aws:securetransport" => ConditionKey::SecureTransport,
            "aws:referer" => ConditionKey::Referer,
            "aws:useragent" => ConditionKey::UserAgent,
            _ => return None,
        })
    }
}

/// An address range of `aws:SourceIp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cidr {
    network: IpAddr,
    prefix_bits: u8,
}

impl Cidr {
    fn parse(text: &str) -> Option<Cidr> {
        let (address, bits) = match text.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix_bits = match bits {
            Some(b) => b.trim().parse::<u8>().ok().filter(|b| *b <= max)?,
            None => max,
        };
        Some(Cidr {
            network,
            prefix_bits,
        })
    }

    fn contains(&self, address: IpAddr) -> bool {
        // An IPv4 client reaching an IPv6 listener shows as `::ffff:a.b.c.d`.
        let address = match address {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        let (a, n, width) = match (address, self.network) {
            (IpAddr::V4(a), IpAddr::V4(n)) => {
                (u128::from(u32::from(a)), u128::from(u32::from(n)), 32)
            }
            (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a), u128::from(n), 128),
            _ => return false,
        };
        let host_bits = width - u32::from(self.prefix_bits);
        if host_bits >= 128 {
            return true;
        }
        (a >> host_bits) == (n >> host_bits)
    }
}

/// The values a condition compares against.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Values {
    Strings(Vec<String>),
    Ranges(Vec<Cidr>),
    Bools(Vec<bool>),
}

/// One `operator: { key: values }` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Condition {
    operator: Operator,
    key: ConditionKey,
    values: Values,
}

/// One statement.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Statement {
    effect: Effect,
    principals: Principals,
    /// Action patterns (`s3:Get*`), matched without regard to case.
    actions: Vec<String>,
    /// Resource patterns without the ARN prefix (`bucket`, `bucket/photos/*`).
    resources: Vec<String>,
    conditions: Vec<Condition>,
}

/// A parsed bucket policy, with the document it came from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BucketPolicy {
    document: String,
    statements: Vec<Statement>,
}

impl TryFrom<String> for BucketPolicy {
    type Error = PolicyError;

    fn try_from(document: String) -> Result<Self, PolicyError> {
        BucketPolicy::parse(&document)
    }
}

impl From<BucketPolicy> for String {
    fn from(policy: BucketPolicy) -> String {
        policy.document
    }
}

/// One request as a policy judges it.
#[derive(Clone, Copy, Debug)]
pub struct PolicyRequest<'a> {
    /// The signed request's user id; None for an anonymous request.
    pub user: Option<&'a str>,
    /// The S3 action the request is (`s3:GetObject`).
    pub action: &'a str,
    /// The bucket.
    pub bucket: &'a str,
    /// The key, for an object-level action.
    pub key: Option<&'a str>,
    /// The address the request came from.
    pub source_ip: Option<IpAddr>,
    /// Whether it came over TLS.
    pub secure_transport: bool,
    /// The listing's `prefix`, if given.
    pub prefix: Option<&'a str>,
    /// The listing's `delimiter`, if given.
    pub delimiter: Option<&'a str>,
    /// The `Referer` header, if any.
    pub referer: Option<&'a str>,
    /// The `User-Agent` header, if any.
    pub user_agent: Option<&'a str>,
}

/// What a policy says about a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A matching statement denies it (this wins over everything).
    Deny,
    /// A matching statement allows it, none denies it.
    Allow,
    /// No statement matches: the ACLs decide.
    NotApplicable,
}

/// A JSON value in which no object repeats a key (serde_json would keep the last of them, and a
/// policy whose `Effect` or condition is written twice would be half ignored).
struct UniqueKeys(serde_json::Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor).map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(serde_json::Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(serde_json::Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(serde_json::Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(serde_json::Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(serde_json::Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some((key, UniqueKeys(value))) = map.next_entry::<String, UniqueKeys>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
            }
            out.insert(key, value);
        }
        Ok(serde_json::Value::Object(out))
    }
}

/// Longest `Referer` or `User-Agent` a condition compares, in bytes: a request with a longer
/// one, to a bucket whose policy has a condition on it, is denied (matching cost is bounded).
pub const CONDITION_VALUE_BYTES_MAX: usize = 8 * 1024;

/// Takes a JSON value that may be one string or an array of strings.
fn strings(value: &serde_json::Value, field: &str) -> Result<Vec<String>, PolicyError> {
    let list = match value {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| malformed(format!("{field} must hold strings")))
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(malformed(format!(
                "{field} must be a string or a list of strings"
            )));
        }
    };
    if list.is_empty() {
        return Err(malformed(format!("{field} must not be empty")));
    }
    Ok(list)
}

/// Whether `value` matches `pattern`, where `*` stands for any run of characters and `?` for
/// one (IAM's wildcards); `fold` compares ASCII letters without regard to case.
pub fn glob_match(pattern: &str, value: &str, fold: bool) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    let same = |a: char, b: char| {
        if fold {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && same(p[pi], v[vi]))) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, vi));
            pi += 1;
        } else if let Some((star_pi, star_vi)) = star {
            pi = star_pi + 1;
            vi = star_vi + 1;
            star = Some((star_pi, star_vi + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn parse_principals(value: &serde_json::Value) -> Result<Principals, PolicyError> {
    let invalid = || malformed("Invalid principal in policy");
    match value {
        serde_json::Value::String(s) if s == "*" => Ok(Principals::Anyone),
        serde_json::Value::Object(map) => {
            let mut users = Vec::new();
            for (kind, ids) in map {
                let ids = strings(ids, "Principal").map_err(|_| invalid())?;
                match kind.as_str() {
                    "AWS" => {
                        for id in ids {
                            if id == "*" {
                                return Ok(Principals::Anyone);
                            }
                            users.push(user_of_aws_principal(&id).ok_or_else(invalid)?);
                        }
                    }
                    "CanonicalUser" => users.extend(ids),
                    other => {
                        return Err(unsupported(format!(
                            "Principals of type {other} are not supported; name users \
                             (\"AWS\" or \"CanonicalUser\") or \"*\""
                        )));
                    }
                }
            }
            if users.is_empty() {
                return Err(invalid());
            }
            Ok(Principals::Users(users))
        }
        _ => Err(invalid()),
    }
}

/// The user id an `"AWS"` principal names: a bare user id, `arn:aws:iam::<id>:root` (the
/// account, which in leofs is the user) or `arn:aws:iam::<any>:user/<id>`.
fn user_of_aws_principal(text: &str) -> Option<String> {
    let Some(rest) = text.strip_prefix("arn:aws:iam::") else {
        return (!text.is_empty() && !text.contains(':') && !text.contains('*'))
            .then(|| text.to_owned());
    };
    let (account, resource) = rest.split_once(':')?;
    let id = if resource == "root" {
        account
    } else {
        resource.strip_prefix("user/")?
    };
    (!id.is_empty() && !id.contains('*')).then(|| id.to_owned())
}

fn parse_conditions(value: &serde_json::Value) -> Result<Vec<Condition>, PolicyError> {
    let serde_json::Value::Object(operators) = value else {
        return Err(malformed("Condition must be an object"));
    };
    let mut out = Vec::new();
    for (operator_name, keys) in operators {
        let operator = Operator::parse(operator_name).ok_or_else(|| {
            unsupported(format!(
                "Condition operator {operator_name} is not supported (supported: StringEquals, \
                 StringNotEquals, StringEqualsIgnoreCase, StringNotEqualsIgnoreCase, StringLike, \
                 StringNotLike, IpAddress, NotIpAddress, Bool)"
            ))
        })?;
        let serde_json::Value::Object(keys) = keys else {
            return Err(malformed(format!(
                "Condition {operator_name} must be an object"
            )));
        };
        for (key_name, raw) in keys {
            let key = ConditionKey::parse(key_name).ok_or_else(|| {
                unsupported(format!(
                    "Condition key {key_name} is not supported (supported: s3:prefix, \
                     s3:delimiter, aws:SourceIp, aws:SecureTransport, aws:Referer, aws:UserAgent)"
                ))
            })?;
            let values = condition_values(operator, key, key_name, raw)?;
            out.push(Condition {
                operator,
                key,
                values,
            });
        }
    }
    Ok(out)
}

fn condition_values(
    operator: Operator,
    key: ConditionKey,
    key_name: &str,
    raw: &serde_json::Value,
) -> Result<Values, PolicyError> {
    let mismatch = || {
        malformed(format!(
            "Condition key {key_name} cannot be compared with {operator:?}"
        ))
    };
    match (operator, key) {
        (Operator::IpAddress | Operator::NotIpAddress, ConditionKey::SourceIp) => {
            let ranges = strings(raw, key_name)?
                .iter()
                .map(|t| Cidr::parse(t).ok_or_else(|| malformed(format!("Invalid IP range {t:?}"))))
                .collect::<Result<_, _>>()?;
            Ok(Values::Ranges(ranges))
        }
        (Operator::Bool, ConditionKey::SecureTransport) => {
            let items: Vec<serde_json::Value> = match raw {
                serde_json::Value::Array(items) => items.clone(),
                one => vec![one.clone()],
            };
            let bools = items
                .iter()
                .map(|v| match v {
                    serde_json::Value::Bool(b) => Some(*b),
                    serde_json::Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
                    serde_json::Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
                    _ => None,
                })
                .collect::<Option<Vec<bool>>>()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| malformed(format!("{key_name} takes true or false")))?;
            Ok(Values::Bools(bools))
        }
        (Operator::IpAddress | Operator::NotIpAddress | Operator::Bool, _)
        | (_, ConditionKey::SourceIp | ConditionKey::SecureTransport) => Err(mismatch()),
        _ => Ok(Values::Strings(strings(raw, key_name)?)),
    }
}

fn parse_statement(value: &serde_json::Value) -> Result<Statement, PolicyError> {
    let serde_json::Value::Object(fields) = value else {
        return Err(malformed("A Statement must be an object"));
    };
    for name in fields.keys() {
        match name.as_str() {
            "Sid" | "Effect" | "Principal" | "Action" | "Resource" | "Condition" => {}
            "NotPrincipal" | "NotAction" | "NotResource" => {
                return Err(unsupported(format!(
                    "{name} is not supported; write the statement with Principal, Action and \
                     Resource"
                )));
            }
            other => return Err(malformed(format!("Unknown field {other}"))),
        }
    }
    let effect = match fields.get("Effect").and_then(|e| e.as_str()) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        Some(other) => return Err(malformed(format!("Invalid effect: {other}"))),
        None => return Err(malformed("Missing required field Effect")),
    };
    let principals = parse_principals(
        fields
            .get("Principal")
            .ok_or_else(|| malformed("Missing required field Principal"))?,
    )?;
    let actions = strings(
        fields
            .get("Action")
            .ok_or_else(|| malformed("Missing required field Action"))?,
        "Action",
    )?;
    for action in &actions {
        let valid = action == "*"
            || (action
                .get(..3)
                .is_some_and(|p| p.eq_ignore_ascii_case("s3:"))
                && S3_ACTIONS
                    .iter()
                    .any(|(name, _)| glob_match(action, name, true)));
        if !valid {
            return Err(malformed("Policy has invalid action"));
        }
    }
    let mut resources = Vec::new();
    for resource in strings(
        fields
            .get("Resource")
            .ok_or_else(|| malformed("Missing required field Resource"))?,
        "Resource",
    )? {
        let path = resource
            .strip_prefix(S3_ARN_PREFIX)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| malformed("Policy has invalid resource"))?;
        resources.push(path.to_owned());
    }
    let conditions = match fields.get("Condition") {
        Some(c) => parse_conditions(c)?,
        None => Vec::new(),
    };
    Ok(Statement {
        effect,
        principals,
        actions,
        resources,
        conditions,
    })
}

impl BucketPolicy {
    /// Parses a policy document; what it cannot evaluate is an error.
    pub fn parse(document: &str) -> Result<BucketPolicy, PolicyError> {
        if document.len() > POLICY_BYTES_MAX {
            return Err(malformed(
                "Policy exceeds the maximum allowed document size (20 KB)",
            ));
        }
        if document.contains("${") {
            return Err(unsupported(
                "Policy variables (${...}) are not supported; write the values out",
            ));
        }
        let value = serde_json::from_str::<UniqueKeys>(document)
            .map_err(|e| malformed(format!("This policy contains invalid Json: {e}")))?
            .0;
        let serde_json::Value::Object(top) = &value else {
            return Err(malformed("A policy must be a JSON object"));
        };
        for (name, field) in top {
            match name.as_str() {
                "Version" => match field.as_str() {
                    Some("2012-10-17" | "2008-10-17") => {}
                    _ => return Err(malformed("The policy must contain a valid version string")),
                },
                "Id" | "Statement" => {}
                other => return Err(malformed(format!("Unknown field {other}"))),
            }
        }
        let statements = match top.get("Statement") {
            Some(serde_json::Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(parse_statement)
                .collect::<Result<Vec<_>, _>>()?,
            Some(one @ serde_json::Value::Object(_)) => vec![parse_statement(one)?],
            _ => return Err(malformed("Missing required field Statement")),
        };
        Ok(BucketPolicy {
            document: document.to_owned(),
            statements,
        })
    }

    /// Whether a statement names user `id` as a principal.
    pub fn names_user(&self, id: &str) -> bool {
        self.statements.iter().any(
            |s| matches!(&s.principals, Principals::Users(users) if users.iter().any(|u| u == id)),
        )
    }

    /// The document as it was put.
    pub fn document(&self) -> &str {
        &self.document
    }

    /// Checks the policy against the bucket it is put on and the users that exist: every
    /// resource is the bucket or under it, every user principal exists, and in every statement
    /// some action applies to some resource (S3's checks).
    pub fn check_for(
        &self,
        bucket: &str,
        user_exists: impl Fn(&str) -> bool,
    ) -> Result<(), PolicyError> {
        for statement in &self.statements {
            let mut levels = Vec::new();
            for resource in &statement.resources {
                let level = if resource == bucket {
                    ActionLevel::Bucket
                } else if resource
                    .strip_prefix(bucket)
                    .is_some_and(|rest| rest.starts_with('/'))
                {
                    ActionLevel::Object
                } else {
                    return Err(malformed("Policy has invalid resource"));
                };
                levels.push(level);
            }
            if let Principals::Users(users) = &statement.principals
                && users.iter().any(|u| !user_exists(u))
            {
                return Err(malformed("Invalid principal in policy"));
            }
            let applies = S3_ACTIONS.iter().any(|(name, level)| {
                levels.contains(level)
                    && statement
                        .actions
                        .iter()
                        .any(|pattern| glob_match(pattern, name, true))
            });
            if !applies {
                return Err(malformed(
                    "Action does not apply to any resource(s) in statement",
                ));
            }
        }
        Ok(())
    }

    /// What the policy says about `request`: an explicit deny wins, then an allow.
    pub fn evaluate(&self, request: &PolicyRequest<'_>) -> Decision {
        let too_long =
            |value: Option<&str>| value.is_some_and(|v| v.len() > CONDITION_VALUE_BYTES_MAX);
        let compared = |key: ConditionKey| {
            self.statements
                .iter()
                .any(|s| s.conditions.iter().any(|c| c.key == key))
        };
        if (too_long(request.referer) && compared(ConditionKey::Referer))
            || (too_long(request.user_agent) && compared(ConditionKey::UserAgent))
        {
            return Decision::Deny;
        }
        let resource_owned;
        let resource = match request.key {
            Some(key) => {
                resource_owned = format!("{}/{key}", request.bucket);
                resource_owned.as_str()
            }
            None => request.bucket,
        };
        let mut decision = Decision::NotApplicable;
        for statement in &self.statements {
            if statement.matches(request, resource) {
                match statement.effect {
                    Effect::Deny => return Decision::Deny,
                    Effect::Allow => decision = Decision::Allow,
                }
            }
        }
        decision
    }

    /// Whether the policy grants anything to everyone (S3's GetBucketPolicyStatus): an
    /// `Allow` to `*` not confined to source addresses.
    pub fn is_public(&self) -> bool {
        self.statements.iter().any(|s| {
            s.effect == Effect::Allow
                && s.principals == Principals::Anyone
                && !s.conditions.iter().any(Condition::confines_addresses)
        })
    }
}

impl Statement {
    fn matches(&self, request: &PolicyRequest<'_>, resource: &str) -> bool {
        let principal = match &self.principals {
            Principals::Anyone => true,
            Principals::Users(users) => request
                .user
                .is_some_and(|user| users.iter().any(|u| u == user)),
        };
        principal
            && self
                .actions
                .iter()
                .any(|pattern| glob_match(pattern, request.action, true))
            && self
                .resources
                .iter()
                .any(|pattern| glob_match(pattern, resource, false))
            && self.conditions.iter().all(|c| c.holds(request))
    }
}

impl Condition {
    /// Whether the condition keeps the statement to a few source addresses (S3 calls a policy
    /// confined to ranges of /8 or narrower, /32 for IPv6, not public).
    fn confines_addresses(&self) -> bool {
        match (&self.values, self.operator) {
            (Values::Ranges(ranges), Operator::IpAddress) => ranges
                .iter()
                .all(|r| r.prefix_bits >= if r.network.is_ipv4() { 8 } else { 32 }),
            _ => false,
        }
    }

    fn holds(&self, request: &PolicyRequest<'_>) -> bool {
        let negated = self.operator.negated();
        let any_match = match (&self.values, self.key) {
            (Values::Ranges(ranges), _) => match request.source_ip {
                Some(ip) => ranges.iter().any(|r| r.contains(ip)),
                None => return negated,
            },
            (Values::Bools(bools), _) => bools.contains(&request.secure_transport),
            (Values::Strings(strings), key) => {
                let value = match key {
                    ConditionKey::Prefix => request.prefix,
                    ConditionKey::Delimiter => request.delimiter,
                    ConditionKey::Referer => request.referer,
                    ConditionKey::UserAgent => request.user_agent,
                    ConditionKey::SourceIp | ConditionKey::SecureTransport => None,
                };
                let Some(value) = value else {
                    return negated;
                };
                strings.iter().any(|s| match self.operator {
                    Operator::StringEquals | Operator::StringNotEquals => s == value,
                    Operator::StringEqualsIgnoreCase | Operator::StringNotEqualsIgnoreCase => {
                        s.to_lowercase() == value.to_lowercase()
                    }
                    _ => glob_match(s, value, false),
                })
            }
        };
        any_match != negated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(
        user: Option<&'a str>,
        action: &'a str,
        key: Option<&'a str>,
    ) -> PolicyRequest<'a> {
        PolicyRequest {
            user,
            action,
            bucket: "b",
            key,
            source_ip: Some("127.0.0.1".parse().unwrap()),
            secure_transport: false,
            prefix: None,
            delimiter: None,
            referer: None,
            user_agent: None,
        }
    }

    fn policy(statements: &str) -> BucketPolicy {
        BucketPolicy::parse(&format!(
            r#"{{"Version":"2012-10-17","Statement":{statements}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn wildcards_match_as_iam_matches_them() {
        assert!(glob_match("s3:Get*", "s3:GetObject", true));
        assert!(glob_match("S3:get*", "s3:GetObject", true));
        assert!(!glob_match("S3:get*", "s3:GetObject", false));
        assert!(glob_match("b/photos/*", "b/photos/a/b.jpg", false));
        assert!(glob_match("b/?.txt", "b/a.txt", false));
        assert!(!glob_match("b/?.txt", "b/ab.txt", false));
        assert!(glob_match("*a*b*", "xxaxxbxx", false));
        assert!(!glob_match("b/photos/*", "b/photo", false));
        assert!(glob_match("*", "", false));
    }

    #[test]
    fn a_deny_wins_over_an_allow_and_unmatched_requests_are_left_to_acls() {
        let p = policy(
            r#"[{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::b/*"},
                {"Effect":"Deny","Principal":{"AWS":"bob"},"Action":"s3:DeleteObject","Resource":"arn:aws:s3:::b/*"}]"#,
        );
        assert_eq!(
            p.evaluate(&request(None, "s3:GetObject", Some("k"))),
            Decision::Allow
        );
        assert_eq!(
            p.evaluate(&request(Some("bob"), "s3:DeleteObject", Some("k"))),
            Decision::Deny
        );
        assert_eq!(
            p.evaluate(&request(Some("eve"), "s3:DeleteObject", Some("k"))),
            Decision::Allow
        );
        assert_eq!(
            p.evaluate(&request(None, "s3:ListBucket", None)),
            Decision::NotApplicable
        );
    }

    #[test]
    fn conditions_on_prefix_and_source_address() {
        let p = policy(
            r#"{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::123:user/bob"]},"Action":"s3:ListBucket",
                "Resource":"arn:aws:s3:::b","Condition":{"StringLike":{"s3:prefix":["home/bob/*"]},
                "IpAddress":{"aws:SourceIp":"127.0.0.0/8"}}}"#,
        );
        let mut r = request(Some("bob"), "s3:ListBucket", None);
        assert_eq!(p.evaluate(&r), Decision::NotApplicable, "no prefix");
        r.prefix = Some("home/bob/docs");
        assert_eq!(p.evaluate(&r), Decision::Allow);
        r.source_ip = Some("10.1.2.3".parse().unwrap());
        assert_eq!(p.evaluate(&r), Decision::NotApplicable);
        r.source_ip = Some("::ffff:127.0.0.9".parse().unwrap());
        assert_eq!(p.evaluate(&r), Decision::Allow, "a mapped IPv4 address");
        let deny = policy(
            r#"{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":["arn:aws:s3:::b","arn:aws:s3:::b/*"],
                "Condition":{"NotIpAddress":{"aws:SourceIp":["192.0.2.0/24","2001:db8::/32"]}}}"#,
        );
        assert_eq!(
            deny.evaluate(&request(None, "s3:GetObject", Some("k"))),
            Decision::Deny
        );
        let mut inside = request(None, "s3:GetObject", Some("k"));
        inside.source_ip = Some("2001:db8::1".parse().unwrap());
        assert_eq!(deny.evaluate(&inside), Decision::NotApplicable);
        let agent = policy(
            r#"{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::b/*",
                "Condition":{"StringLike":{"aws:UserAgent":"*curl*"}}}"#,
        );
        let mut long = request(None, "s3:GetObject", Some("k"));
        let huge = "a".repeat(CONDITION_VALUE_BYTES_MAX + 1);
        long.user_agent = Some(&huge);
        assert_eq!(
            agent.evaluate(&long),
            Decision::Deny,
            "too long to compare: denied"
        );
        long.user_agent = Some("aws-cli");
        assert_eq!(agent.evaluate(&long), Decision::NotApplicable);
        let tls = policy(
            r#"{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::b/*",
                "Condition":{"Bool":{"aws:SecureTransport":"false"}}}"#,
        );
        assert_eq!(
            tls.evaluate(&request(None, "s3:GetObject", Some("k"))),
            Decision::Deny
        );
    }

    #[test]
    fn what_cannot_be_evaluated_is_refused() {
        let refused = |doc: &str| BucketPolicy::parse(doc).unwrap_err();
        let stmt = |extra: &str| {
            format!(
                r#"{{"Statement":{{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"{extra}}}}}"#
            )
        };
        assert!(matches!(refused("{"), PolicyError::Malformed(_)));
        assert!(matches!(refused("[]"), PolicyError::Malformed(_)));
        assert!(matches!(
            refused(r#"{"Version":"2012-10-17"}"#),
            PolicyError::Malformed(_)
        ));
        assert!(matches!(
            refused(&stmt(r#","NotAction":"s3:GetObject""#)),
            PolicyError::Unsupported(_)
        ));
        assert!(matches!(
            refused(&stmt(
                r#","Condition":{"DateLessThan":{"aws:CurrentTime":"2030-01-01T00:00:00Z"}}"#
            )),
            PolicyError::Unsupported(_)
        ));
        assert!(matches!(
            refused(&stmt(
                r#","Condition":{"StringEquals":{"s3:x-amz-acl":"private"}}"#
            )),
            PolicyError::Unsupported(_)
        ));
        assert!(matches!(
            refused(&stmt(
                r#","Condition":{"IpAddress":{"aws:SourceIp":"300.0.0.0/8"}}"#
            )),
            PolicyError::Malformed(_)
        ));
        assert!(matches!(
            refused(&stmt(
                r#","Condition":{"StringLike":{"aws:SourceIp":"1.2.3.4"}}"#
            )),
            PolicyError::Malformed(_)
        ));
        let bad_action = r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:Fly","Resource":"arn:aws:s3:::b/*"}}"#;
        assert!(matches!(refused(bad_action), PolicyError::Malformed(_)));
        let service = r#"{"Statement":{"Effect":"Allow","Principal":{"Service":"x"},"Action":"s3:*","Resource":"arn:aws:s3:::b/*"}}"#;
        assert!(matches!(refused(service), PolicyError::Unsupported(_)));
        assert!(matches!(
            refused(&" ".repeat(POLICY_BYTES_MAX + 1)),
            PolicyError::Malformed(_)
        ));
        let twice = r#"{"Statement":{"Effect":"Deny","Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}}"#;
        assert!(
            matches!(refused(twice), PolicyError::Malformed(_)),
            "a repeated key is refused"
        );
    }

    #[test]
    fn resources_principals_and_actions_are_checked_against_the_bucket() {
        let users = |u: &str| u == "bob";
        let p = |statement: &str| policy(statement).check_for("b", users);
        assert!(p(r#"{"Effect":"Allow","Principal":{"AWS":"bob"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}"#).is_ok());
        assert!(p(r#"{"Effect":"Allow","Principal":{"AWS":"eve"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}"#).is_err());
        assert!(p(r#"{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::other/*"}"#).is_err());
        assert!(p(r#"{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::bx/*"}"#).is_err());
        assert!(p(r#"{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b"}"#).is_err());
        assert!(p(r#"{"Effect":"Allow","Principal":"*","Action":"s3:ListBucket","Resource":"arn:aws:s3:::b/*"}"#).is_err());
        assert!(
            p(r#"{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::b"}"#)
                .is_ok()
        );
    }

    #[test]
    fn the_catalog_keeps_the_document_as_sent() {
        let doc = r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#;
        let p = BucketPolicy::parse(doc).unwrap();
        let json = serde_json::to_string(&p).unwrap();
        let back: BucketPolicy = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.document(), doc);
        assert!(p.is_public());
        assert!(!p.names_user("nobody"));
        let wide = policy(
            r#"{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*",
                "Condition":{"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}}"#,
        );
        assert!(
            wide.is_public(),
            "a range of every address confines nothing"
        );
        assert!(matches!(
            BucketPolicy::parse(
                r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/${aws:username}/*"}}"#
            ),
            Err(PolicyError::Unsupported(_))
        ));
    }
}
