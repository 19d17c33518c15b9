//! KMIP 1.2 request builders and response parsers, for exactly the
//! operations sealgate uses: Create, Activate, Encrypt, Decrypt, Revoke,
//! Destroy, Locate (by Name), Query and DiscoverVersions. Never Get: the
//! master key never leaves the KMS.
//!
//! Every request is one batch item. Field order follows the specification
//! (servers such as PyKMIP parse positionally).

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

use super::ttlv::{self, Ttlv, TtlvError, Value};

/// KMIP 1.2: the first version with Encrypt and Decrypt.
pub const PROTOCOL_VERSION: (i32, i32) = (1, 2);

/// The tags we read or write (KMIP 1.2 section 9.1.3.1).
pub mod tag {
    pub const ATTRIBUTE: u32 = 0x42_0008;
    pub const ATTRIBUTE_NAME: u32 = 0x42_000A;
    pub const ATTRIBUTE_VALUE: u32 = 0x42_000B;
    pub const BATCH_COUNT: u32 = 0x42_000D;
    pub const BATCH_ITEM: u32 = 0x42_000F;
    pub const BLOCK_CIPHER_MODE: u32 = 0x42_0011;
    pub const CRYPTOGRAPHIC_ALGORITHM: u32 = 0x42_0028;
    pub const CRYPTOGRAPHIC_PARAMETERS: u32 = 0x42_002B;
    pub const IV_COUNTER_NONCE: u32 = 0x42_003D;
    pub const NAME_TYPE: u32 = 0x42_0054;
    pub const NAME_VALUE: u32 = 0x42_0055;
    pub const OBJECT_TYPE: u32 = 0x42_0057;
    pub const OPERATION: u32 = 0x42_005C;
    pub const PADDING_METHOD: u32 = 0x42_005F;
    pub const PROTOCOL_VERSION: u32 = 0x42_0069;
    pub const PROTOCOL_VERSION_MAJOR: u32 = 0x42_006A;
    pub const PROTOCOL_VERSION_MINOR: u32 = 0x42_006B;
    pub const QUERY_FUNCTION: u32 = 0x42_0074;
    pub const REQUEST_HEADER: u32 = 0x42_0077;
    pub const REQUEST_MESSAGE: u32 = 0x42_0078;
    pub const REQUEST_PAYLOAD: u32 = 0x42_0079;
    pub const RESPONSE_HEADER: u32 = 0x42_007A;
    pub const RESPONSE_MESSAGE: u32 = 0x42_007B;
    pub const RESPONSE_PAYLOAD: u32 = 0x42_007C;
    pub const RESULT_MESSAGE: u32 = 0x42_007D;
    pub const RESULT_REASON: u32 = 0x42_007E;
    pub const RESULT_STATUS: u32 = 0x42_007F;
    pub const REVOCATION_REASON: u32 = 0x42_0081;
    pub const REVOCATION_REASON_CODE: u32 = 0x42_0082;
    pub const TEMPLATE_ATTRIBUTE: u32 = 0x42_0091;
    pub const UNIQUE_IDENTIFIER: u32 = 0x42_0094;
    pub const VENDOR_IDENTIFICATION: u32 = 0x42_009D;
    pub const DATA: u32 = 0x42_00C2;
}

/// Enumeration values (KMIP 1.2 section 9.1.3.2).
mod value {
    pub const OBJECT_TYPE_SYMMETRIC_KEY: u32 = 2;
    pub const ALGORITHM_AES: u32 = 3;
    pub const USAGE_ENCRYPT: i32 = 0x04;
    pub const USAGE_DECRYPT: i32 = 0x08;
    pub const NAME_TYPE_UNINTERPRETED_TEXT_STRING: u32 = 1;
    pub const BLOCK_CIPHER_MODE_CBC: u32 = 1;
    pub const PADDING_PKCS5: u32 = 3;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Operation {
    Create = 1,
    Locate = 8,
    Activate = 18,
    Revoke = 19,
    Destroy = 20,
    Query = 24,
    DiscoverVersions = 30,
    Encrypt = 31,
    Decrypt = 32,
}

impl Operation {
    /// Whether sending it twice does no harm, so a transport failure may be
    /// retried. Create is not: a retry after a lost response would leave an
    /// orphan key. Revoke and Destroy are not either: the second attempt
    /// fails ("not active", "not found") and sealgate decides what that means.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Operation::Encrypt
                | Operation::Decrypt
                | Operation::Locate
                | Operation::Query
                | Operation::DiscoverVersions
                | Operation::Activate
        )
    }

    fn from_code(code: u32) -> Option<Self> {
        [
            Operation::Create,
            Operation::Locate,
            Operation::Activate,
            Operation::Revoke,
            Operation::Destroy,
            Operation::Query,
            Operation::DiscoverVersions,
            Operation::Encrypt,
            Operation::Decrypt,
        ]
        .into_iter()
        .find(|op| *op as u32 == code)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Revocation Reason Code values we may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum RevocationReason {
    KeyCompromise = 2,
    CessationOfOperation = 6,
}

/// Query Function values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum QueryFunction {
    Operations = 1,
    Objects = 2,
    ServerInformation = 3,
}

/// Result Status values.
pub mod status {
    pub const SUCCESS: u32 = 0;
    pub const OPERATION_FAILED: u32 = 1;
    pub const OPERATION_PENDING: u32 = 2;
    pub const OPERATION_UNDONE: u32 = 3;
}

/// Result Reason values (the ones we name or act on).
pub mod reason {
    pub const ITEM_NOT_FOUND: u32 = 0x01;
    pub const RESPONSE_TOO_LARGE: u32 = 0x02;
    pub const AUTHENTICATION_NOT_SUCCESSFUL: u32 = 0x03;
    pub const INVALID_MESSAGE: u32 = 0x04;
    pub const OPERATION_NOT_SUPPORTED: u32 = 0x05;
    pub const MISSING_DATA: u32 = 0x06;
    pub const INVALID_FIELD: u32 = 0x07;
    pub const FEATURE_NOT_SUPPORTED: u32 = 0x08;
    pub const OPERATION_CANCELED_BY_REQUESTER: u32 = 0x09;
    pub const CRYPTOGRAPHIC_FAILURE: u32 = 0x0A;
    pub const ILLEGAL_OPERATION: u32 = 0x0B;
    pub const PERMISSION_DENIED: u32 = 0x0C;
    pub const OBJECT_ARCHIVED: u32 = 0x0D;
    pub const INDEX_OUT_OF_BOUNDS: u32 = 0x0E;
    pub const APPLICATION_NAMESPACE_NOT_SUPPORTED: u32 = 0x0F;
    pub const KEY_FORMAT_TYPE_NOT_SUPPORTED: u32 = 0x10;
    pub const KEY_COMPRESSION_TYPE_NOT_SUPPORTED: u32 = 0x11;
    pub const ENCODING_OPTION_ERROR: u32 = 0x12;
    pub const GENERAL_FAILURE: u32 = 0x100;
    // KMIP 2.0 reasons, which some servers also use in 1.x sessions.
    pub const OBJECT_DESTROYED: u32 = 0x36;
    pub const OBJECT_NOT_FOUND: u32 = 0x37;
    pub const WRONG_KEY_LIFECYCLE_STATE: u32 = 0x43;
}

fn reason_name(code: u32) -> Option<&'static str> {
    Some(match code {
        reason::ITEM_NOT_FOUND => "Item Not Found",
        reason::RESPONSE_TOO_LARGE => "Response Too Large",
        reason::AUTHENTICATION_NOT_SUCCESSFUL => "Authentication Not Successful",
        reason::INVALID_MESSAGE => "Invalid Message",
        reason::OPERATION_NOT_SUPPORTED => "Operation Not Supported",
        reason::MISSING_DATA => "Missing Data",
        reason::INVALID_FIELD => "Invalid Field",
        reason::FEATURE_NOT_SUPPORTED => "Feature Not Supported",
        reason::OPERATION_CANCELED_BY_REQUESTER => "Operation Canceled By Requester",
        reason::CRYPTOGRAPHIC_FAILURE => "Cryptographic Failure",
        reason::ILLEGAL_OPERATION => "Illegal Operation",
        reason::PERMISSION_DENIED => "Permission Denied",
        reason::OBJECT_ARCHIVED => "Object Archived",
        reason::INDEX_OUT_OF_BOUNDS => "Index Out Of Bounds",
        reason::APPLICATION_NAMESPACE_NOT_SUPPORTED => "Application Namespace Not Supported",
        reason::KEY_FORMAT_TYPE_NOT_SUPPORTED => "Key Format Type Not Supported",
        reason::KEY_COMPRESSION_TYPE_NOT_SUPPORTED => "Key Compression Type Not Supported",
        reason::ENCODING_OPTION_ERROR => "Encoding Option Error",
        reason::GENERAL_FAILURE => "General Failure",
        reason::OBJECT_DESTROYED => "Object Destroyed",
        reason::OBJECT_NOT_FOUND => "Object Not Found",
        reason::WRONG_KEY_LIFECYCLE_STATE => "Wrong Key Lifecycle State",
        _ => return None,
    })
}

fn status_name(code: u32) -> &'static str {
    match code {
        status::SUCCESS => "Success",
        status::OPERATION_FAILED => "Operation Failed",
        status::OPERATION_PENDING => "Operation Pending",
        status::OPERATION_UNDONE => "Operation Undone",
        _ => "unknown status",
    }
}

/// Longest server Result Message we keep (they end up in logs).
const MAX_RESULT_MESSAGE: usize = 256;

/// The server answered, and the answer is a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub operation: Operation,
    pub status: u32,
    pub reason: Option<u32>,
    pub message: String,
}

impl Failure {
    pub fn reason_is(&self, code: u32) -> bool {
        self.reason == Some(code)
    }

    /// The object does not exist (for us: PyKMIP, like many servers, answers
    /// so for another client's objects too).
    pub fn is_not_found(&self) -> bool {
        matches!(self.reason, Some(reason::ITEM_NOT_FOUND | reason::OBJECT_NOT_FOUND | reason::OBJECT_DESTROYED))
    }

    /// The object is not in a state that allows the operation (e.g. Activate
    /// on an object already Active).
    pub fn is_wrong_state(&self) -> bool {
        matches!(
            self.reason,
            Some(reason::ILLEGAL_OPERATION | reason::PERMISSION_DENIED | reason::WRONG_KEY_LIFECYCLE_STATE)
        )
    }

    /// Reasons that say our request itself was malformed or asked for what the
    /// server does not do (as opposed to "no" about a key).
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self.reason,
            Some(
                reason::INVALID_MESSAGE
                    | reason::OPERATION_NOT_SUPPORTED
                    | reason::MISSING_DATA
                    | reason::INVALID_FIELD
                    | reason::FEATURE_NOT_SUPPORTED
                    | reason::ENCODING_OPTION_ERROR
            )
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KMIP {} answered {}", self.operation, status_name(self.status))?;
        match self.reason.map(|r| (r, reason_name(r))) {
            Some((_, Some(name))) => write!(f, ", {name}")?,
            Some((code, None)) => write!(f, ", reason {code:#x}")?,
            None => {}
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    /// Not a KMIP response we can read (or not the answer to our request).
    #[error("malformed KMIP response: {0}")]
    Malformed(String),
    #[error("{0}")]
    Failed(Failure),
}

fn malformed(what: impl Into<String>) -> ResponseError {
    ResponseError::Malformed(what.into())
}

/// An encoded request, ready to send. The bytes may hold a data key (Encrypt):
/// they are zeroized when dropped.
pub struct Request {
    pub operation: Operation,
    pub bytes: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request").field("operation", &self.operation).finish_non_exhaustive()
    }
}

/// Overwrites every string in `item`: a tree that held a data key must not
/// leave it in freed memory.
fn wipe(item: &mut Ttlv) {
    match &mut item.value {
        Value::Structure(children) => children.iter_mut().for_each(wipe),
        Value::ByteString(bytes) | Value::BigInteger(bytes) => bytes.zeroize(),
        Value::TextString(text) => text.zeroize(),
        _ => {}
    }
}

fn protocol_version(major: i32, minor: i32) -> Ttlv {
    Ttlv::structure(
        tag::PROTOCOL_VERSION,
        vec![Ttlv::integer(tag::PROTOCOL_VERSION_MAJOR, major), Ttlv::integer(tag::PROTOCOL_VERSION_MINOR, minor)],
    )
}

/// Request Message with one Batch Item carrying `payload`; the tree is wiped
/// once encoded.
fn request(operation: Operation, payload: Vec<Ttlv>) -> Result<Request, TtlvError> {
    let header = Ttlv::structure(
        tag::REQUEST_HEADER,
        vec![protocol_version(PROTOCOL_VERSION.0, PROTOCOL_VERSION.1), Ttlv::integer(tag::BATCH_COUNT, 1)],
    );
    let item = Ttlv::structure(
        tag::BATCH_ITEM,
        vec![Ttlv::enumeration(tag::OPERATION, operation as u32), Ttlv::structure(tag::REQUEST_PAYLOAD, payload)],
    );
    let mut message = Ttlv::structure(tag::REQUEST_MESSAGE, vec![header, item]);
    let bytes = message.encode().map(Zeroizing::new);
    wipe(&mut message);
    Ok(Request { operation, bytes: bytes? })
}

fn attribute(name: &str, value: Value) -> Ttlv {
    Ttlv::structure(tag::ATTRIBUTE, vec![Ttlv::text(tag::ATTRIBUTE_NAME, name), Ttlv::new(tag::ATTRIBUTE_VALUE, value)])
}

/// The Name attribute value: an Uninterpreted Text String.
fn name_value(name: &str) -> Value {
    Value::Structure(vec![
        Ttlv::text(tag::NAME_VALUE, name),
        Ttlv::enumeration(tag::NAME_TYPE, value::NAME_TYPE_UNINTERPRETED_TEXT_STRING),
    ])
}

fn unique_identifier(id: &str) -> Ttlv {
    Ttlv::text(tag::UNIQUE_IDENTIFIER, id)
}

/// Create: an AES-256 symmetric key usable to Encrypt and Decrypt, named
/// `name`. It starts Pre-Active; Activate it.
pub fn create_symmetric_key(name: &str) -> Result<Request, TtlvError> {
    let template = Ttlv::structure(
        tag::TEMPLATE_ATTRIBUTE,
        vec![
            attribute("Cryptographic Algorithm", Value::Enumeration(value::ALGORITHM_AES)),
            attribute("Cryptographic Length", Value::Integer(256)),
            attribute("Cryptographic Usage Mask", Value::Integer(value::USAGE_ENCRYPT | value::USAGE_DECRYPT)),
            attribute("Name", name_value(name)),
        ],
    );
    request(Operation::Create, vec![Ttlv::enumeration(tag::OBJECT_TYPE, value::OBJECT_TYPE_SYMMETRIC_KEY), template])
}

pub fn activate(id: &str) -> Result<Request, TtlvError> {
    request(Operation::Activate, vec![unique_identifier(id)])
}

/// AES, CBC, PKCS#5 padding: the parameters every KMIP 1.2 server with
/// Encrypt/Decrypt supports (PyKMIP needs them explicit).
fn cbc_parameters() -> Ttlv {
    Ttlv::structure(
        tag::CRYPTOGRAPHIC_PARAMETERS,
        vec![
            Ttlv::enumeration(tag::BLOCK_CIPHER_MODE, value::BLOCK_CIPHER_MODE_CBC),
            Ttlv::enumeration(tag::PADDING_METHOD, value::PADDING_PKCS5),
            Ttlv::enumeration(tag::CRYPTOGRAPHIC_ALGORITHM, value::ALGORITHM_AES),
        ],
    )
}

fn cipher_request(operation: Operation, id: &str, iv: &[u8; 16], data: &[u8]) -> Result<Request, TtlvError> {
    request(
        operation,
        vec![
            unique_identifier(id),
            cbc_parameters(),
            Ttlv::bytes(tag::DATA, data),
            Ttlv::bytes(tag::IV_COUNTER_NONCE, iv.as_slice()),
        ],
    )
}

/// Encrypt `plaintext` under key `id` with AES-CBC-PKCS5 and our IV.
pub fn encrypt(id: &str, iv: &[u8; 16], plaintext: &[u8]) -> Result<Request, TtlvError> {
    cipher_request(Operation::Encrypt, id, iv, plaintext)
}

pub fn decrypt(id: &str, iv: &[u8; 16], ciphertext: &[u8]) -> Result<Request, TtlvError> {
    cipher_request(Operation::Decrypt, id, iv, ciphertext)
}

pub fn revoke(id: &str, why: RevocationReason) -> Result<Request, TtlvError> {
    let reason =
        Ttlv::structure(tag::REVOCATION_REASON, vec![Ttlv::enumeration(tag::REVOCATION_REASON_CODE, why as u32)]);
    request(Operation::Revoke, vec![unique_identifier(id), reason])
}

pub fn destroy(id: &str) -> Result<Request, TtlvError> {
    request(Operation::Destroy, vec![unique_identifier(id)])
}

/// Locate the objects with the Name `name` (Uninterpreted Text String).
pub fn locate_by_name(name: &str) -> Result<Request, TtlvError> {
    request(Operation::Locate, vec![attribute("Name", name_value(name))])
}

pub fn query(functions: &[QueryFunction]) -> Result<Request, TtlvError> {
    let payload = functions.iter().map(|f| Ttlv::enumeration(tag::QUERY_FUNCTION, *f as u32)).collect();
    request(Operation::Query, payload)
}

/// DiscoverVersions: the server answers with those of `versions` it speaks.
pub fn discover_versions(versions: &[(i32, i32)]) -> Result<Request, TtlvError> {
    request(
        Operation::DiscoverVersions,
        versions.iter().map(|&(major, minor)| protocol_version(major, minor)).collect(),
    )
}

/// A successful response's payload (an empty structure when the server sent
/// none). Its strings are zeroized when dropped: a Decrypt payload holds a
/// data key.
pub struct Payload(Ttlv);

impl Payload {
    pub fn get(&self) -> &Ttlv {
        &self.0
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Payload(..)")
    }
}

/// Reads the response to one request of `operation`: the payload on Success,
/// the Result Status/Reason/Message as a [`Failure`] otherwise.
pub fn parse_response(bytes: &[u8], operation: Operation) -> Result<Payload, ResponseError> {
    let message = ttlv::decode(bytes).map_err(|e| malformed(e.to_string()))?;
    // Guarded from here on: whatever we return, the tree is wiped.
    let mut message = Payload(message);
    let root = &mut message.0;
    if root.tag != tag::RESPONSE_MESSAGE {
        return Err(malformed(format!("root tag {:#x} is not a Response Message", root.tag)));
    }
    let header = root.child(tag::RESPONSE_HEADER).ok_or_else(|| malformed("no Response Header"))?;
    if header.child(tag::BATCH_COUNT).and_then(Ttlv::as_integer) != Some(1) {
        return Err(malformed("Batch Count is not 1"));
    }
    let Value::Structure(children) = &mut root.value else { return Err(malformed("not a structure")) };
    let mut items = children.iter_mut().filter(|c| c.tag == tag::BATCH_ITEM);
    let (Some(item), None) = (items.next(), items.next()) else {
        return Err(malformed("not exactly one Batch Item"));
    };
    batch_item(item, operation)
}

fn batch_item(item: &mut Ttlv, operation: Operation) -> Result<Payload, ResponseError> {
    if let Some(answered) = item.child(tag::OPERATION) {
        let code = answered.as_enumeration().ok_or_else(|| malformed("Operation is not an Enumeration"))?;
        if Operation::from_code(code) != Some(operation) {
            return Err(malformed(format!("answer to operation {code}, not {operation}")));
        }
    }
    let status =
        item.child(tag::RESULT_STATUS).and_then(Ttlv::as_enumeration).ok_or_else(|| malformed("no Result Status"))?;
    if status != status::SUCCESS {
        return Err(ResponseError::Failed(failure(item, operation, status)));
    }
    let Value::Structure(children) = &mut item.value else { return Err(malformed("Batch Item is not a structure")) };
    let payload = children
        .iter_mut()
        .find(|c| c.tag == tag::RESPONSE_PAYLOAD)
        .map(|c| std::mem::replace(c, Ttlv::structure(tag::RESPONSE_PAYLOAD, vec![])))
        .unwrap_or_else(|| Ttlv::structure(tag::RESPONSE_PAYLOAD, vec![]));
    if !matches!(payload.value, Value::Structure(_)) {
        return Err(malformed("Response Payload is not a structure"));
    }
    Ok(Payload(payload))
}

fn failure(item: &Ttlv, operation: Operation, status: u32) -> Failure {
    let mut message = item.child(tag::RESULT_MESSAGE).and_then(Ttlv::as_text).unwrap_or_default().to_owned();
    if message.len() > MAX_RESULT_MESSAGE {
        let cut = (0..=MAX_RESULT_MESSAGE).rev().find(|&i| message.is_char_boundary(i)).unwrap_or(0);
        message.truncate(cut);
        message.push('…');
    }
    Failure { operation, status, reason: item.child(tag::RESULT_REASON).and_then(Ttlv::as_enumeration), message }
}

/// The Unique Identifier of a Create, Activate, Revoke or Destroy response.
pub fn unique_identifier_of(payload: &Payload) -> Result<String, ResponseError> {
    payload
        .get()
        .child(tag::UNIQUE_IDENTIFIER)
        .and_then(Ttlv::as_text)
        .map(str::to_owned)
        .ok_or_else(|| malformed("no Unique Identifier in the payload"))
}

/// The Data of an Encrypt or Decrypt response, and the IV the server reports
/// (servers echo it or leave it out; when present it must be ours).
pub fn data_of(payload: &Payload, our_iv: &[u8; 16]) -> Result<Zeroizing<Vec<u8>>, ResponseError> {
    let p = payload.get();
    if let Some(iv) = p.child(tag::IV_COUNTER_NONCE)
        && iv.as_bytes() != Some(our_iv.as_slice())
    {
        return Err(malformed("the server used another IV"));
    }
    p.child(tag::DATA)
        .and_then(Ttlv::as_bytes)
        .map(|data| Zeroizing::new(data.to_vec()))
        .ok_or_else(|| malformed("no Data in the payload"))
}

/// The Unique Identifiers a Locate found.
pub fn located_ids(payload: &Payload) -> Vec<String> {
    payload.get().children_with(tag::UNIQUE_IDENTIFIER).filter_map(Ttlv::as_text).map(str::to_owned).collect()
}

/// The protocol versions of a DiscoverVersions response.
pub fn versions_of(payload: &Payload) -> Vec<(i32, i32)> {
    payload
        .get()
        .children_with(tag::PROTOCOL_VERSION)
        .filter_map(|v| {
            let major = v.child(tag::PROTOCOL_VERSION_MAJOR)?.as_integer()?;
            let minor = v.child(tag::PROTOCOL_VERSION_MINOR)?.as_integer()?;
            Some((major, minor))
        })
        .collect()
}

/// What a Query told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub operations: Vec<u32>,
    pub vendor: Option<String>,
}

pub fn server_info_of(payload: &Payload) -> ServerInfo {
    let p = payload.get();
    ServerInfo {
        operations: p.children_with(tag::OPERATION).filter_map(Ttlv::as_enumeration).collect(),
        vendor: p.child(tag::VENDOR_IDENTIFICATION).and_then(Ttlv::as_text).map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        hex::decode(text).unwrap()
    }

    /// A compact picture of a tree: `tag=type:value`, structures in braces.
    fn layout(item: &Ttlv) -> String {
        let value = match &item.value {
            Value::Structure(children) => format!("{{{}}}", children.iter().map(layout).collect::<Vec<_>>().join(" ")),
            Value::Integer(v) => format!("I:{v}"),
            Value::LongInteger(v) => format!("L:{v}"),
            Value::BigInteger(v) => format!("N:{}", hex::encode(v)),
            Value::Enumeration(v) => format!("E:{v}"),
            Value::Boolean(v) => format!("B:{v}"),
            Value::TextString(v) => format!("T:{v:?}"),
            Value::ByteString(v) => format!("S:{}", hex::encode(v)),
            Value::DateTime(v) => format!("D:{v}"),
            Value::Interval(v) => format!("V:{v}"),
        };
        format!("{:06X}{}{value}", item.tag, if value.starts_with('{') { "" } else { "=" })
    }

    /// The request's layout: header (1.2, one item), then the batch item.
    fn request_layout(request: &Request) -> String {
        let tree = ttlv::decode(&request.bytes).unwrap();
        let text = layout(&tree);
        let prefix = "420078{420077{420069{42006A=I:1 42006B=I:2} 42000D=I:1} 42000F{";
        assert!(text.starts_with(prefix), "{text}");
        text[prefix.len()..text.len() - 2].to_owned()
    }

    /// The same messages encoded by PyKMIP 0.11's own encoder
    /// (kmip.core.messages, KMIP 1.2): an independent implementation.
    mod pykmip {
        pub const ACTIVATE: &str = "\
            42007801000000704200770100000038420069010000002042006a0200000004000000010000000042006b0200000004\
            000000020000000042000d0200000004000000010000000042000f010000002842005c05000000040000001200000000\
            420079010000001042009407000000023432000000000000";
        pub const DESTROY: &str = "\
            42007801000000704200770100000038420069010000002042006a0200000004000000010000000042006b0200000004\
            000000020000000042000d0200000004000000010000000042000f010000002842005c05000000040000001400000000\
            420079010000001042009407000000023432000000000000";
        pub const ENCRYPT: &str = "\
            42007801000000f84200770100000038420069010000002042006a0200000004000000010000000042006b0200000004\
            000000020000000042000d0200000004000000010000000042000f01000000b042005c05000000040000001f00000000\
            42007901000000984200940700000002343200000000000042002b010000003042001105000000040000000100000000\
            42005f05000000040000000300000000420028050000000400000003000000004200c208000000300001020304050607\
            08090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f42003d0800000010\
            101112131415161718191a1b1c1d1e1f";
        pub const DECRYPT: &str = "\
            42007801000001084200770100000038420069010000002042006a0200000004000000010000000042006b0200000004\
            000000020000000042000d0200000004000000010000000042000f01000000c042005c05000000040000002000000000\
            42007901000000a84200940700000002343200000000000042002b010000003042001105000000040000000100000000\
            42005f05000000040000000300000000420028050000000400000003000000004200c208000000400001020304050607\
            08090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637\
            38393a3b3c3d3e3f42003d0800000010101112131415161718191a1b1c1d1e1f";
        pub const CREATE: &str = "\
            42007801000001684200770100000038420069010000002042006a0200000004000000010000000042006b0200000004\
            000000020000000042000d0200000004000000010000000042000f010000012042005c05000000040000000100000000\
            42007901000001084200570500000004000000020000000042009101000000f0420008010000003042000a0700000017\
            43727970746f6772617068696320416c676f726974686d0042000b050000000400000003000000004200080100000030\
            42000a070000001443727970746f67726170686963204c656e6774680000000042000b02000000040000010000000000\
            420008010000003042000a070000001843727970746f67726170686963205573616765204d61736b42000b0200000004\
            0000000c00000000420008010000004042000a07000000044e616d650000000042000b0100000028420055070000000f\
            7365616c676174653a70686f746f730042005405000000040000000100000000";
        pub const REVOKE: &str = "\
            42007801000000884200770100000038420069010000002042006a0200000004000000010000000042006b0200000004\
            000000020000000042000d0200000004000000010000000042000f010000004042005c05000000040000001300000000\
            420079010000002842009407000000023432000000000000420081010000001042008205000000040000000600000000";
        pub const LOCATE: &str = "\
            42007801000000a84200770100000038420069010000002042006a0200000004000000010000000042006b0200000004\
            000000020000000042000d0200000004000000010000000042000f010000006042005c05000000040000000800000000\
            4200790100000048420008010000004042000a07000000044e616d650000000042000b0100000028420055070000000f\
            7365616c676174653a70686f746f730042005405000000040000000100000000";
        pub const QUERY: &str = "\
            42007801000000804200770100000038420069010000002042006a0200000004000000010000000042006b0200000004\
            000000020000000042000d0200000004000000010000000042000f010000003842005c05000000040000001800000000\
            42007901000000204200740500000004000000010000000042007405000000040000000300000000";
        pub const DISCOVER_VERSIONS: &str = "\
            42007801000000884200770100000038420069010000002042006a0200000004000000010000000042006b0200000004\
            000000020000000042000d0200000004000000010000000042000f010000004042005c05000000040000001e00000000\
            4200790100000028420069010000002042006a0200000004000000010000000042006b02000000040000000200000000";
        pub const CREATE_RESPONSE: &str = "\
            42007b01000000a042007a0100000048420069010000002042006a0200000004000000010000000042006b0200000004\
            00000002000000004200920900000008000000006553f10042000d0200000004000000010000000042000f0100000048\
            42005c0500000004000000010000000042007f0500000004000000000000000042007c01000000204200570500000004\
            000000020000000042009407000000023432000000000000";
        pub const DECRYPT_RESPONSE: &str = "\
            42007b01000000c842007a0100000048420069010000002042006a0200000004000000010000000042006b0200000004\
            00000002000000004200920900000008000000006553f10042000d0200000004000000010000000042000f0100000070\
            42005c0500000004000000200000000042007f0500000004000000000000000042007c01000000484200940700000002\
            34320000000000004200c20800000030000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
            202122232425262728292a2b2c2d2e2f";
        pub const LOCATE_RESPONSE: &str = "\
            42007b01000000a042007a0100000048420069010000002042006a0200000004000000010000000042006b0200000004\
            00000002000000004200920900000008000000006553f10042000d0200000004000000010000000042000f0100000048\
            42005c0500000004000000080000000042007f0500000004000000000000000042007c01000000204200940700000001\
            310000000000000042009407000000013700000000000000";
        pub const DISCOVER_VERSIONS_RESPONSE: &str = "\
            42007b01000000a842007a0100000048420069010000002042006a0200000004000000010000000042006b0200000004\
            00000002000000004200920900000008000000006553f10042000d0200000004000000010000000042000f0100000050\
            42005c05000000040000001e0000000042007f0500000004000000000000000042007c01000000284200690100000020\
            42006a0200000004000000010000000042006b02000000040000000200000000";
        pub const NOT_FOUND_RESPONSE: &str = "\
            42007b01000000b042007a0100000048420069010000002042006a0200000004000000010000000042006b0200000004\
            00000002000000004200920900000008000000006553f10042000d0200000004000000010000000042000f0100000058\
            42005c0500000004000000140000000042007f0500000004000000010000000042007e05000000040000000100000000\
            42007d070000001b436f756c64206e6f74206c6f63617465206f626a6563743a2034320000000000";
        pub const INVALID_MESSAGE_RESPONSE: &str = "\
            42007b01000000a042007a0100000048420069010000002042006a0200000004000000010000000042006b0200000004\
            00000002000000004200920900000008000000006553f10042000d0200000004000000010000000042000f0100000048\
            42007f0500000004000000010000000042007e0500000004000000040000000042007d070000001e4572726f72207061\
            7273696e672072657175657374206d6573736167652e0000";
    }

    #[test]
    fn requests_match_pykmip_bytes() {
        let iv: [u8; 16] = core::array::from_fn(|i| 16 + i as u8);
        let plaintext: Vec<u8> = (0..48).collect();
        let ciphertext: Vec<u8> = (0..64).collect();
        let cases = [
            (create_symmetric_key("sealgate:photos"), pykmip::CREATE),
            (activate("42"), pykmip::ACTIVATE),
            (encrypt("42", &iv, &plaintext), pykmip::ENCRYPT),
            (decrypt("42", &iv, &ciphertext), pykmip::DECRYPT),
            (revoke("42", RevocationReason::CessationOfOperation), pykmip::REVOKE),
            (destroy("42"), pykmip::DESTROY),
            (locate_by_name("sealgate:photos"), pykmip::LOCATE),
            (query(&[QueryFunction::Operations, QueryFunction::ServerInformation]), pykmip::QUERY),
            (discover_versions(&[PROTOCOL_VERSION]), pykmip::DISCOVER_VERSIONS),
        ];
        for (request, expected) in cases {
            let request = request.unwrap();
            assert_eq!(hex::encode(&*request.bytes), expected, "{:?}", request.operation);
        }
    }

    #[test]
    fn request_layouts() {
        let iv = [0xAA; 16];
        let cases: Vec<(Request, String)> = vec![
            (
                create_symmetric_key("sealgate:b").unwrap(),
                "42005C=E:1 420079{420057=E:2 420091{\
                 420008{42000A=T:\"Cryptographic Algorithm\" 42000B=E:3} \
                 420008{42000A=T:\"Cryptographic Length\" 42000B=I:256} \
                 420008{42000A=T:\"Cryptographic Usage Mask\" 42000B=I:12} \
                 420008{42000A=T:\"Name\" 42000B{420055=T:\"sealgate:b\" 420054=E:1}}}}"
                    .into(),
            ),
            (activate("k1").unwrap(), "42005C=E:18 420079{420094=T:\"k1\"}".into()),
            (
                encrypt("k1", &iv, &[1, 2]).unwrap(),
                format!(
                    "42005C=E:31 420079{{420094=T:\"k1\" 42002B{{420011=E:1 42005F=E:3 420028=E:3}} 4200C2=S:0102 \
                     42003D=S:{}}}",
                    "aa".repeat(16)
                ),
            ),
            (
                decrypt("k1", &iv, &[3]).unwrap(),
                format!(
                    "42005C=E:32 420079{{420094=T:\"k1\" 42002B{{420011=E:1 42005F=E:3 420028=E:3}} 4200C2=S:03 \
                     42003D=S:{}}}",
                    "aa".repeat(16)
                ),
            ),
            (
                revoke("k1", RevocationReason::KeyCompromise).unwrap(),
                "42005C=E:19 420079{420094=T:\"k1\" 420081{420082=E:2}}".into(),
            ),
            (destroy("k1").unwrap(), "42005C=E:20 420079{420094=T:\"k1\"}".into()),
            (
                locate_by_name("sealgate:b").unwrap(),
                "42005C=E:8 420079{420008{42000A=T:\"Name\" 42000B{420055=T:\"sealgate:b\" 420054=E:1}}}".into(),
            ),
            (query(&[QueryFunction::Objects]).unwrap(), "42005C=E:24 420079{420074=E:2}".into()),
            (
                discover_versions(&[(1, 2), (1, 0)]).unwrap(),
                "42005C=E:30 420079{420069{42006A=I:1 42006B=I:2} 420069{42006A=I:1 42006B=I:0}}".into(),
            ),
        ];
        for (request, expected) in cases {
            assert_eq!(request_layout(&request), expected, "{:?}", request.operation);
        }
    }

    #[test]
    fn only_the_right_operations_are_retried() {
        use Operation::*;
        for op in [Encrypt, Decrypt, Locate, Query, DiscoverVersions, Activate] {
            assert!(op.is_idempotent(), "{op}");
        }
        for op in [Create, Revoke, Destroy] {
            assert!(!op.is_idempotent(), "{op}");
        }
    }

    #[test]
    fn debug_output_hides_request_bytes() {
        let request = encrypt("k", &[0; 16], &[0x5E; 48]).unwrap();
        assert_eq!(format!("{request:?}"), "Request { operation: Encrypt, .. }");
    }

    #[test]
    fn parses_pykmip_success_responses() {
        let payload = parse_response(&hex(pykmip::CREATE_RESPONSE), Operation::Create).unwrap();
        assert_eq!(unique_identifier_of(&payload).unwrap(), "42");
        let payload = parse_response(&hex(pykmip::DECRYPT_RESPONSE), Operation::Decrypt).unwrap();
        assert_eq!(*data_of(&payload, &[0; 16]).unwrap(), (0..48).collect::<Vec<u8>>());
        let payload = parse_response(&hex(pykmip::LOCATE_RESPONSE), Operation::Locate).unwrap();
        assert_eq!(located_ids(&payload), vec!["1", "7"]);
        let payload = parse_response(&hex(pykmip::DISCOVER_VERSIONS_RESPONSE), Operation::DiscoverVersions).unwrap();
        assert_eq!(versions_of(&payload), vec![(1, 2)]);
    }

    #[test]
    fn parses_pykmip_failure_responses() {
        let Err(ResponseError::Failed(failure)) = parse_response(&hex(pykmip::NOT_FOUND_RESPONSE), Operation::Destroy)
        else {
            panic!("not a failure")
        };
        assert_eq!(
            failure,
            Failure {
                operation: Operation::Destroy,
                status: status::OPERATION_FAILED,
                reason: Some(reason::ITEM_NOT_FOUND),
                message: "Could not locate object: 42".into()
            }
        );
        assert!(failure.is_not_found() && !failure.is_bad_request());
        assert_eq!(
            failure.to_string(),
            "KMIP Destroy answered Operation Failed, Item Not Found: Could not locate object: 42"
        );

        // A request PyKMIP could not parse: the answer has no Operation.
        let invalid = hex(pykmip::INVALID_MESSAGE_RESPONSE);
        let Err(ResponseError::Failed(failure)) = parse_response(&invalid, Operation::Encrypt) else {
            panic!("not a failure")
        };
        assert!(failure.reason_is(reason::INVALID_MESSAGE) && failure.is_bad_request());
        assert_eq!(failure.message, "Error parsing request message.");
    }

    fn response(items: Vec<Ttlv>, batch_count: i32) -> Vec<u8> {
        let header = Ttlv::structure(
            tag::RESPONSE_HEADER,
            vec![protocol_version(1, 2), Ttlv::date_time(0x42_0092, 0), Ttlv::integer(tag::BATCH_COUNT, batch_count)],
        );
        Ttlv::structure(tag::RESPONSE_MESSAGE, [vec![header], items].concat()).encode().unwrap()
    }

    fn item(fields: Vec<Ttlv>) -> Ttlv {
        Ttlv::structure(tag::BATCH_ITEM, fields)
    }

    #[test]
    fn failure_details_are_kept_short_and_named() {
        let long = "é".repeat(300);
        let bytes = response(
            vec![item(vec![
                Ttlv::enumeration(tag::RESULT_STATUS, status::OPERATION_FAILED),
                Ttlv::enumeration(tag::RESULT_REASON, 0x999),
                Ttlv::text(tag::RESULT_MESSAGE, long),
            ])],
            1,
        );
        let Err(ResponseError::Failed(failure)) = parse_response(&bytes, Operation::Query) else { panic!() };
        assert!(failure.message.len() <= MAX_RESULT_MESSAGE + '…'.len_utf8());
        assert!(failure.message.ends_with('…'));
        assert!(failure.to_string().starts_with("KMIP Query answered Operation Failed, reason 0x999: éé"));
        let pending = response(vec![item(vec![Ttlv::enumeration(tag::RESULT_STATUS, status::OPERATION_PENDING)])], 1);
        let Err(ResponseError::Failed(failure)) = parse_response(&pending, Operation::Query) else { panic!() };
        assert_eq!(failure.to_string(), "KMIP Query answered Operation Pending");
    }

    #[test]
    fn a_success_without_payload_is_an_empty_one() {
        let bytes = response(vec![item(vec![Ttlv::enumeration(tag::RESULT_STATUS, status::SUCCESS)])], 1);
        let payload = parse_response(&bytes, Operation::Activate).unwrap();
        assert!(payload.get().children().is_empty());
        assert!(matches!(unique_identifier_of(&payload), Err(ResponseError::Malformed(_))));
    }

    #[test]
    fn responses_that_do_not_answer_our_request_are_malformed() {
        let ok = || Ttlv::enumeration(tag::RESULT_STATUS, status::SUCCESS);
        let cases = vec![
            ("not TTLV", vec![1, 2, 3]),
            ("a request", activate("1").unwrap().bytes.to_vec()),
            ("two items", response(vec![item(vec![ok()]), item(vec![ok()])], 1)),
            ("batch count 2", response(vec![item(vec![ok()])], 2)),
            ("no item", response(vec![], 1)),
            ("no status", response(vec![item(vec![])], 1)),
            ("another operation", response(vec![item(vec![Ttlv::enumeration(tag::OPERATION, 10), ok()])], 1)),
            ("payload not a structure", response(vec![item(vec![ok(), Ttlv::integer(tag::RESPONSE_PAYLOAD, 1)])], 1)),
        ];
        for (what, bytes) in cases {
            assert!(matches!(parse_response(&bytes, Operation::Encrypt), Err(ResponseError::Malformed(_))), "{what}");
        }
    }

    #[test]
    fn a_server_iv_must_be_ours() {
        let payload = |iv: &[u8]| {
            Payload(Ttlv::structure(
                tag::RESPONSE_PAYLOAD,
                vec![
                    Ttlv::text(tag::UNIQUE_IDENTIFIER, "1"),
                    Ttlv::bytes(tag::DATA, [7u8; 64]),
                    Ttlv::bytes(tag::IV_COUNTER_NONCE, iv),
                ],
            ))
        };
        assert_eq!(data_of(&payload(&[1; 16]), &[1; 16]).unwrap().len(), 64);
        assert!(data_of(&payload(&[2; 16]), &[1; 16]).is_err());
    }

    #[test]
    fn query_results_are_read() {
        let payload = Payload(Ttlv::structure(
            tag::RESPONSE_PAYLOAD,
            vec![
                Ttlv::enumeration(tag::OPERATION, 31),
                Ttlv::enumeration(tag::OPERATION, 32),
                Ttlv::text(tag::VENDOR_IDENTIFICATION, "PyKMIP 0.11.0 Software Server"),
            ],
        ));
        assert_eq!(
            server_info_of(&payload),
            ServerInfo { operations: vec![31, 32], vendor: Some("PyKMIP 0.11.0 Software Server".into()) }
        );
    }

    #[test]
    fn wipe_clears_every_string() {
        let mut tree = Ttlv::structure(1, vec![Ttlv::bytes(2, [9u8; 4]), Ttlv::text(3, "key"), Ttlv::integer(4, 5)]);
        wipe(&mut tree);
        assert_eq!(tree.children()[0].as_bytes(), Some(&[][..]));
        assert_eq!(tree.children()[1].as_text(), Some(""));
    }
}
