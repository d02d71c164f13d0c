//! Intake: the rules an e-mail must pass before it gets an interactionId, applied while its
//! parts stream into a spool draft.
//!
//! Owns the limits (file count, total size, text size, file types), required fields, the
//! address check, the mailbox allow-list check, attachment file-name sanitising and
//! content-type derivation, and [`IntakeError`], the one error type of this boundary. It knows the fields of "Send Email" by meaning
//! ([`TextField`]), not the multipart wire names or the JSON error shape: the edge maps those.
//! It must not buffer attachment bodies: every chunk goes to the draft's file as it arrives.
//! What it does hold in memory (the text fields) is bounded per e-mail by `max_text_bytes`
//! plus [`MAX_USER_DATA_BYTES`] and a few short fields, and the number of e-mails received at
//! once by `max_concurrent_intakes` (the permit an [`Intake`] holds).

use std::io;
use std::sync::Arc;

use thiserror::Error;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::OwnedSemaphorePermit;

use crate::config::EmailConfig;
use crate::deliverer::DeliveryQueue;
use crate::envelope::{Attachment, Envelope};
use crate::id::InteractionId;
use crate::mailboxes::Mailboxes;
use crate::spool::{Draft, Spool};

/// Longest attachment name kept (characters); longer names are shortened, keeping the
/// extension.
pub const MAX_FILE_NAME_CHARS: usize = 128;

/// Most bytes of `userData` (keys and values, every pair added up) one e-mail may carry: the
/// pairs are held in memory, like `text`.
pub const MAX_USER_DATA_BYTES: usize = 64 * 1024;

/// The intake rules, from the `email` config section.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_files: usize,
    pub max_size: u64,
    /// Longest `text`, in bytes.
    pub max_text: u64,
    /// Lower-case extensions without the dot.
    pub file_types: Vec<String>,
    /// Configured `email.mailbox`: used when the request has none.
    pub mailbox: Option<String>,
    /// The mailboxes a request may choose.
    pub mailboxes: Mailboxes,
}

impl From<&EmailConfig> for Limits {
    fn from(config: &EmailConfig) -> Self {
        Limits {
            max_files: config.max_files,
            max_size: config.max_size,
            max_text: config.max_text_bytes,
            file_types: config
                .file_types
                .iter()
                .map(|e| e.to_ascii_lowercase())
                .collect(),
            mailbox: config.mailbox.clone(),
            mailboxes: config.mailbox_policy(),
        }
    }
}

/// Why an e-mail was refused. Everything but [`IntakeError::Spool`] is the client's doing.
#[derive(Debug, Error)]
pub enum IntakeError {
    #[error("the field {0} is required")]
    MissingField(&'static str),
    #[error("the field {field} is invalid: {reason}")]
    InvalidField {
        field: &'static str,
        reason: &'static str,
    },
    #[error("the field {0} is not an e-mail address")]
    BadAddress(&'static str),
    /// The request's `mailbox` is not one of the contact center's mailboxes.
    #[error("the mailbox {0:?} is not one of this contact center's mailboxes")]
    MailboxNotAllowed(String),
    #[error("the text is longer than {max} bytes")]
    TextTooLong { max: u64 },
    /// `max_concurrent_intakes` e-mails are being received already.
    #[error("too many e-mails are being received right now")]
    Busy,
    #[error("more than {max} files")]
    TooManyFiles { max: usize },
    #[error("content larger than {max} bytes")]
    TooLarge { max: u64 },
    #[error("file type not allowed: {file_name:?}")]
    ForbiddenType { file_name: String },
    /// The spool could not take the e-mail (disk full, permissions): the gateway's fault.
    #[error("spool: {0}")]
    Spool(#[from] io::Error),
}

/// The fields of "Send Email" other than files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextField {
    FirstName,
    LastName,
    TenantName,
    FromAddress,
    Subject,
    Text,
    Mailbox,
    /// One `key=value` pair; repeatable.
    UserData,
}

impl TextField {
    /// The field's name in the Web API, for error messages.
    pub fn name(self) -> &'static str {
        match self {
            TextField::FirstName => "firstName",
            TextField::LastName => "lastName",
            TextField::TenantName => "tenantName",
            TextField::FromAddress => "fromAddress",
            TextField::Subject => "subject",
            TextField::Text => "text",
            TextField::Mailbox => "mailbox",
            TextField::UserData => "userData",
        }
    }

    /// Longest value accepted, in characters (as the OpenAPI document's `maxLength`
    /// counts them). Single-line fields end up in mail headers, where long lines only cause
    /// trouble; `text` has its own limit, in bytes (`max_text_bytes`).
    fn max_len(self) -> usize {
        match self {
            TextField::FirstName | TextField::LastName | TextField::TenantName => 256,
            TextField::FromAddress | TextField::Mailbox => 254,
            TextField::Subject => 998,
            TextField::UserData => 4096,
            TextField::Text => usize::MAX,
        }
    }
}

/// One e-mail being received. Dropping it before [`Intake::commit`] leaves nothing on disk.
pub struct Intake {
    /// One of the `max_concurrent_intakes` places, given back when the intake ends.
    _permit: OwnedSemaphorePermit,
    draft: Draft,
    queue: DeliveryQueue,
    limits: Arc<Limits>,
    content: u64,
    first_name: Option<String>,
    last_name: Option<String>,
    tenant_name: Option<String>,
    from_address: Option<String>,
    subject: Option<String>,
    text: Option<String>,
    mailbox: Option<String>,
    user_data: Vec<(String, String)>,
    /// Bytes of `user_data` (keys and values).
    user_data_bytes: usize,
    attachments: Vec<Attachment>,
}

impl Intake {
    /// Opens a spool draft for a new e-mail, holding `permit` until the intake ends.
    pub(crate) async fn begin(
        spool: &Spool,
        limits: Arc<Limits>,
        queue: DeliveryQueue,
        permit: OwnedSemaphorePermit,
    ) -> Result<Self, IntakeError> {
        Ok(Intake {
            _permit: permit,
            draft: spool.draft().await?,
            queue,
            limits,
            content: 0,
            first_name: None,
            last_name: None,
            tenant_name: None,
            from_address: None,
            subject: None,
            text: None,
            mailbox: None,
            user_data: Vec::new(),
            user_data_bytes: 0,
            attachments: Vec::new(),
        })
    }

    /// Counts `n` more bytes of content; refuses as soon as the total crosses `max_size`.
    fn count(&mut self, n: usize) -> Result<(), IntakeError> {
        self.content = self.content.saturating_add(n as u64);
        if self.content > self.limits.max_size {
            return Err(IntakeError::TooLarge {
                max: self.limits.max_size,
            });
        }
        Ok(())
    }

    /// Appends one chunk of a text field's value to `buf`, counting it against the limits.
    pub fn text_chunk(
        &mut self,
        field: TextField,
        buf: &mut Vec<u8>,
        chunk: &[u8],
    ) -> Result<(), IntakeError> {
        self.count(chunk.len())?;
        if field == TextField::Text {
            if (buf.len() + chunk.len()) as u64 > self.limits.max_text {
                return Err(IntakeError::TextTooLong {
                    max: self.limits.max_text,
                });
            }
        // Bytes bound the buffer while it streams (a character is at most 4 bytes); the
        // limit itself is in characters, checked when the field is complete.
        } else if buf.len() + chunk.len() > field.max_len().saturating_mul(4) {
            return Err(IntakeError::InvalidField {
                field: field.name(),
                reason: "too long",
            });
        }
        buf.extend_from_slice(chunk);
        Ok(())
    }

    /// Counts a chunk of a part the intake does not use (an unknown form field): it is
    /// dropped, but its size still counts against `max_size`.
    pub fn ignored_chunk(&mut self, chunk: &[u8]) -> Result<(), IntakeError> {
        self.count(chunk.len())
    }

    /// The `tenantName` received so far, for the gateway's own tenant check.
    pub fn tenant_name(&self) -> Option<&str> {
        self.tenant_name.as_deref()
    }

    /// Records a complete text field (collected with [`Intake::text_chunk`]).
    pub fn set_text(&mut self, field: TextField, value: Vec<u8>) -> Result<(), IntakeError> {
        let invalid = |reason| IntakeError::InvalidField {
            field: field.name(),
            reason,
        };
        let value = String::from_utf8(value).map_err(|_| invalid("not UTF-8"))?;
        if value.chars().count() > field.max_len() {
            return Err(invalid("too long"));
        }
        let multi_line = field == TextField::Text;
        if value
            .chars()
            .any(|c| c.is_control() && !(multi_line && matches!(c, '\r' | '\n' | '\t')))
        {
            // A CR or LF here would end up in a mail header.
            return Err(invalid("contains control characters"));
        }
        // The mailbox is checked as soon as it arrives, before any attachment is stored.
        let value = match field {
            TextField::Mailbox if !value.trim().is_empty() => {
                let requested = check_address(&value, field)?;
                self.limits
                    .mailboxes
                    .find(&requested)
                    .ok_or_else(|| IntakeError::MailboxNotAllowed(requested.clone()))?
                    .to_owned()
            }
            _ => value,
        };
        let slot = match field {
            TextField::FirstName => &mut self.first_name,
            TextField::LastName => &mut self.last_name,
            TextField::TenantName => &mut self.tenant_name,
            TextField::FromAddress => &mut self.from_address,
            TextField::Subject => &mut self.subject,
            TextField::Text => &mut self.text,
            TextField::Mailbox => &mut self.mailbox,
            TextField::UserData => {
                let (key, val) = value.split_once('=').ok_or(invalid("must be key=value"))?;
                let key = key.trim();
                // The key becomes part of a header name downstream (X-UserData-<key>).
                if key.is_empty()
                    || key.len() > 64
                    || !key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                {
                    return Err(invalid(
                        "key must be 1 to 64 letters, digits, '-', '_' or '.'",
                    ));
                }
                self.user_data_bytes += key.len() + val.len();
                if self.user_data_bytes > MAX_USER_DATA_BYTES {
                    return Err(invalid("more than 64 KiB in all"));
                }
                self.user_data.push((key.to_owned(), val.to_owned()));
                return Ok(());
            }
        };
        if slot.is_some() {
            return Err(invalid("given more than once"));
        }
        *slot = Some(value);
        Ok(())
    }

    /// Starts an attachment with the client's file name. An empty name is what a browser sends
    /// for a file input left empty: it is accepted only if its body is empty too.
    pub async fn attachment(
        &mut self,
        client_name: Option<&str>,
    ) -> Result<AttachmentSink<'_>, IntakeError> {
        let raw = client_name.unwrap_or("");
        if raw.is_empty() {
            return Ok(AttachmentSink {
                intake: self,
                target: None,
                size: 0,
            });
        }
        if self.attachments.len() >= self.limits.max_files {
            return Err(IntakeError::TooManyFiles {
                max: self.limits.max_files,
            });
        }
        let file_name = sanitize_file_name(raw);
        let ext = extension(&file_name)
            .map(|ext| ext.to_ascii_lowercase())
            .filter(|ext| self.limits.file_types.iter().any(|t| t == ext))
            .ok_or_else(|| IntakeError::ForbiddenType {
                file_name: file_name.clone(),
            })?;
        // The client's Content-Type is ignored: what a recipient's mail program does with a
        // file must follow from the extension that was checked, not from a claim.
        let content_type = mime_guess::from_ext(&ext)
            .first_or_octet_stream()
            .essence_str()
            .to_owned();
        let (stored_as, file) = self.draft.create_attachment().await?;
        Ok(AttachmentSink {
            intake: self,
            target: Some(Target {
                writer: BufWriter::with_capacity(64 * 1024, file),
                meta: Attachment {
                    file_name,
                    content_type,
                    stored_as,
                    size: 0,
                },
            }),
            size: 0,
        })
    }

    /// Checks the required fields and addresses, makes the e-mail durable and hands it to the
    /// deliverer. Only after this returns may the client be told the id.
    pub async fn commit(self) -> Result<InteractionId, IntakeError> {
        fn required(v: Option<String>, field: TextField) -> Result<String, IntakeError> {
            v.filter(|s| !s.trim().is_empty())
                .ok_or(IntakeError::MissingField(field.name()))
        }
        let first_name = required(self.first_name, TextField::FirstName)?;
        let last_name = required(self.last_name, TextField::LastName)?;
        let tenant_name = required(self.tenant_name, TextField::TenantName)?;
        let from_address = required(self.from_address, TextField::FromAddress)?;
        let subject = required(self.subject, TextField::Subject)?;
        let text = required(self.text, TextField::Text)?;
        let (from_name, from_address) = check_from_address(&from_address, TextField::FromAddress)?;
        // A mailbox given was replaced by its allowed spelling in `set_text`.
        let mailbox = match self.mailbox.filter(|m| !m.trim().is_empty()) {
            Some(m) => Some(m),
            None => self.limits.mailbox.clone(),
        };
        let envelope = Envelope {
            interaction_id: self.draft.id().to_string(),
            first_name,
            last_name,
            tenant_name,
            from_address,
            from_name,
            subject,
            text,
            mailbox,
            user_data: self.user_data,
            attachments: self.attachments,
            accepted_at_ms: crate::envelope::now_ms(),
            requeued_at_ms: None,
        };
        let id = self.draft.commit(&envelope).await?;
        self.queue.push(id.clone());
        Ok(id)
    }
}

struct Target {
    writer: BufWriter<tokio::fs::File>,
    meta: Attachment,
}

/// Receives one attachment's body. On any error the caller drops the whole [`Intake`], which
/// removes the partial file with the rest of the draft.
pub struct AttachmentSink<'a> {
    intake: &'a mut Intake,
    /// `None` for an empty file input, whose body must be empty.
    target: Option<Target>,
    size: u64,
}

impl AttachmentSink<'_> {
    /// Writes one chunk, refusing as soon as the e-mail crosses `max_size`.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), IntakeError> {
        self.intake.count(chunk.len())?;
        self.size += chunk.len() as u64;
        match &mut self.target {
            Some(target) => target.writer.write_all(chunk).await?,
            None if chunk.is_empty() => {}
            None => {
                return Err(IntakeError::ForbiddenType {
                    file_name: String::new(),
                })
            }
        }
        Ok(())
    }

    /// Flushes and fsyncs the body and records the attachment.
    pub async fn finish(self) -> Result<(), IntakeError> {
        if let Some(mut target) = self.target {
            target.writer.flush().await?;
            target.writer.get_ref().sync_all().await?;
            target.meta.size = self.size;
            self.intake.attachments.push(target.meta);
        }
        Ok(())
    }
}

/// The name an attachment is shown under: the last path component of what the client sent,
/// without control characters, leading dots or surrounding blanks, at most
/// [`MAX_FILE_NAME_CHARS`] characters (keeping the extension), never empty.
pub fn sanitize_file_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last.chars().filter(|c| !c.is_control()).collect();
    let cleaned = cleaned
        .trim()
        .trim_start_matches('.')
        .trim_end_matches(['.', ' '])
        .trim();
    let name = if cleaned.is_empty() {
        "attachment".to_owned()
    } else {
        cleaned.to_owned()
    };
    if name.chars().count() <= MAX_FILE_NAME_CHARS {
        return name;
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) if ext.chars().count() < 16 => {
            let keep = MAX_FILE_NAME_CHARS - ext.chars().count() - 1;
            format!("{}.{ext}", stem.chars().take(keep).collect::<String>())
        }
        _ => name.chars().take(MAX_FILE_NAME_CHARS).collect(),
    }
}

/// The lower-case extension, if the name has one.
fn extension(file_name: &str) -> Option<&str> {
    let (stem, ext) = file_name.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty()).then_some(ext)
}

/// An address a customer types: `local@domain`, the local part a dot-atom (RFC 5322 `atext`
/// runs joined by single dots), the domain letter-digit-hyphen labels of at most 63
/// characters with at least one dot (which turns away the typo `john@doe`), or `localhost`.
/// Quoted local parts, address literals and non-ASCII domains are refused: no web form sends
/// them, and this is the exact rule docs/openapi.yaml states as a pattern. The customer's
/// address is only ever a `Reply-To`, so a local part past RFC 5321's 64 octets (which mail
/// servers take in practice) is not refused here; the field's 254 characters bound it.
fn check_address(value: &str, field: TextField) -> Result<String, IntakeError> {
    let address = value.trim();
    let bad = || IntakeError::BadAddress(field.name());
    let (local, domain) = address.rsplit_once('@').ok_or_else(bad)?;
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-".contains(&b);
    let dot_atom = local
        .split('.')
        .all(|atom| !atom.is_empty() && atom.bytes().all(atext));
    let label = |l: &str| {
        let b = l.as_bytes();
        (1..=63).contains(&b.len())
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
    };
    let dotted = domain.contains('.') && domain.split('.').all(label);
    if !dot_atom || !(dotted || domain == "localhost") {
        return Err(bad());
    }
    Ok(address.to_owned())
}

/// `fromAddress`: an address by [`check_address`], or the name-addr form clients send,
/// `John Doe <john@doe.com>` or `"Doe, John" <john@doe.com>`: the address in the angle
/// brackets (after the last `<`) must pass the same rule; the display name before it is
/// kept without its surrounding blanks and quotes (`\"` and `\\` inside quotes read as `"`
/// and `\`). A name with a control character (CR, LF…) is refused, so nothing can reach a
/// header through it. Returns the display name (if any) and the address.
fn check_from_address(
    value: &str,
    field: TextField,
) -> Result<(Option<String>, String), IntakeError> {
    let value = value.trim();
    let bad = || IntakeError::BadAddress(field.name());
    match value.strip_suffix('>').and_then(|v| v.rsplit_once('<')) {
        Some((name, address)) => {
            let name = display_name(name).ok_or_else(bad)?;
            // No blanks inside the brackets: the rule's trimming is for the bare form.
            if address.trim() != address {
                return Err(bad());
            }
            Ok((name, check_address(address, field)?))
        }
        None => Ok((None, check_address(value, field)?)),
    }
}

/// The display name of a name-addr: `None` inside when blank, `None` outside when it has a
/// control character.
fn display_name(raw: &str) -> Option<Option<String>> {
    if raw.chars().any(char::is_control) {
        return None;
    }
    let raw = raw.trim();
    let name = match raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .filter(|_| raw.len() >= 2)
    {
        Some(quoted) => {
            let mut out = String::with_capacity(quoted.len());
            let mut chars = quoted.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next()),
                    c => out.push(c),
                }
            }
            out
        }
        None => raw.to_owned(),
    };
    let name = name.trim();
    Some((!name.is_empty()).then(|| name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_sanitised() {
        assert_eq!(sanitize_file_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_file_name("..\\..\\boot.ini"), "boot.ini");
        assert_eq!(sanitize_file_name("a\r\nb\u{0}.txt"), "ab.txt");
        assert_eq!(sanitize_file_name(".."), "attachment");
        assert_eq!(sanitize_file_name(".hidden.pdf"), "hidden.pdf");
        let long = format!("{}.pdf", "x".repeat(500));
        let short = sanitize_file_name(&long);
        assert_eq!(short.chars().count(), MAX_FILE_NAME_CHARS);
        assert!(short.ends_with(".pdf"));
    }

    #[test]
    fn extensions() {
        assert_eq!(extension("a.PDF"), Some("PDF"));
        assert_eq!(extension("passwd"), None);
        assert_eq!(extension("attachment"), None);
    }

    #[test]
    fn addresses() {
        assert!(check_address("john@doe.com", TextField::FromAddress).is_ok());
        for good in [
            "a@b.c",
            "!#$%&'*+/=?^_`{|}~-@x-1.y",
            "first.last@sub.domain.example",
            "x@localhost",
            "x@a.1",
            " \u{a0}john@doe.com\u{2003}",
        ] {
            assert!(
                check_address(good, TextField::FromAddress).is_ok(),
                "{good}"
            );
            assert_eq!(
                check_from_address(&format!("Ann <{}>", good.trim()), TextField::FromAddress)
                    .unwrap(),
                (Some("Ann".into()), good.trim().into()),
            );
        }
        let named = |v: &str| check_from_address(v, TextField::FromAddress).unwrap();
        assert_eq!(named("john@doe.com"), (None, "john@doe.com".into()));
        assert_eq!(
            named("John Doe <john@doe.com>"),
            (Some("John Doe".into()), "john@doe.com".into())
        );
        assert_eq!(
            named(r#" "Doe, John \"JD\" \\ x" <john@doe.com> "#),
            (Some(r#"Doe, John "JD" \ x"#.into()), "john@doe.com".into())
        );
        assert_eq!(named("<x@y.z>"), (None, "x@y.z".into()));
        assert_eq!(named(r#""" <x@y.z>"#), (None, "x@y.z".into()));
        assert_eq!(named("a<b <x@y.z>"), (Some("a<b".into()), "x@y.z".into()));
        assert_eq!(
            named("'Ann' <x@y.z>"),
            (Some("'Ann'".into()), "x@y.z".into())
        );
        let label = "a".repeat(63);
        assert!(check_address(&format!("x@{label}.{label}"), TextField::FromAddress).is_ok());
        assert!(check_address(&format!("x@{label}b.c"), TextField::FromAddress).is_err());
        for bad in [
            "john",
            "john@",
            "@doe.com",
            "john@doe",
            "a b@c.d",
            "<x@y.z",
            "x@y.z>",
            "Ann <x@y>",
            "Ann\r\nBcc: evil@x.y <x@y.z>",
            "Ann\n<x@y.z>",
            "Ann < x@y.z>",
            "Ann <x@y.z>>",
            ".john@doe.com",
            "john.@doe.com",
            "jo..hn@doe.com",
            "\"john\"@doe.com",
            "john@-doe.com",
            "john@doe-.com",
            "john@doe..com",
            "john@[127.0.0.1]",
            "john@bücher.de",
            "jöhn@doe.com",
            "a@b@c.d",
        ] {
            assert!(check_address(bad, TextField::FromAddress).is_err(), "{bad}");
            assert!(
                check_from_address(bad, TextField::FromAddress).is_err(),
                "{bad}"
            );
            if !bad.contains(['<', '>']) {
                assert!(
                    check_from_address(&format!("Ann <{bad}>"), TextField::FromAddress).is_err(),
                    "{bad}"
                );
            }
        }
    }
}
