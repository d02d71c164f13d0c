//! The RFC 5322 form of a spooled e-mail, shared by the mock and SMTP backends so that what a
//! test reads from an `.eml` file is what an SMTP server receives.
//!
//! Owns the header layout (From the contact center's sender address with the customer's name,
//! Reply-To the customer, To the mailbox, interactionId in `Message-ID` and
//! `X-Interaction-Id`, user data as `X-UserData-<key>`) and the MIME body, and the SMTP
//! envelope: from the sender to the mailbox, never from or to an address the client chose. lettre renders
//! and encodes the headers and the text part; the attachments are base64-encoded here, from
//! their spool files straight into the writer, so composing never holds an attachment whole.
//! It must not send anything.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use lettre::address::Envelope as SmtpEnvelope;
use lettre::message::header::{
    ContentDisposition, ContentTransferEncoding, ContentType, HeaderName, HeaderValue,
};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::DeliveryError;
use crate::envelope::Envelope;

/// Header carrying the interactionId.
pub const INTERACTION_ID_HEADER: &str = "X-Interaction-Id";

/// Input bytes per base64 line: 57 bytes make the 76 characters RFC 2045 allows.
const LINE_INPUT: usize = 57;

/// Writes the message for `email`, addressed to its mailbox or else `default_mailbox` and sent
/// from `sender`, into `out`, reading attachment bodies from `dir`. Returns the SMTP envelope
/// (sender → mailbox). The customer's address is only the `Reply-To`.
pub async fn compose<W: AsyncWrite + Unpin>(
    email: &Envelope,
    dir: &Path,
    default_mailbox: &str,
    sender: &str,
    out: &mut W,
) -> Result<SmtpEnvelope, DeliveryError> {
    // Addresses were checked at intake and config load; failing here means the spool was
    // edited by hand. The customer's address passed intake's rule (a dot-atom at a dotted
    // LDH domain), which lettre's also takes except for a local part past RFC 5321's 64
    // octets: that one is written as a bare `Reply-To` below rather than lost.
    let customer: Option<Address> = email.from_address.parse().ok();
    let sender: Address = sender
        .parse()
        .map_err(|e| DeliveryError::permanent(format!("email.sender {sender:?}: {e}")))?;
    let to = email.mailbox.as_deref().unwrap_or(default_mailbox);
    let to_address: Address = to
        .parse()
        .map_err(|e| DeliveryError::permanent(format!("mailbox {to:?}: {e}")))?;
    let smtp_envelope = SmtpEnvelope::new(Some(sender.clone()), vec![to_address.clone()])
        .map_err(|e| DeliveryError::permanent(format!("envelope: {e}")))?;
    // The name the customer gave with the address (`John Doe <john@doe.com>`), else their
    // first and last name. Intake refused control characters in it; lettre quotes or
    // encodes it as the header needs.
    let display = match &email.from_name {
        Some(name) => name.clone(),
        None => format!("{} {}", email.first_name, email.last_name),
    };

    // The customer's name with the contact center's address: mail programs show who wrote,
    // a reply goes to the customer, and nothing claims to come from the customer's domain
    // (which its SPF/DMARC would rightly fail).
    let mut builder = Message::builder().from(Mailbox::new(Some(display.clone()), sender));
    builder = match customer {
        Some(customer) => builder.reply_to(Mailbox::new(Some(display), customer)),
        // Only atext, dots, `@`, letters, digits and hyphens (intake's rule): nothing a
        // header could be split or folded on.
        None if is_plain_address(&email.from_address) => {
            builder.raw_header(header("Reply-To", &email.from_address)?)
        }
        None => {
            return Err(DeliveryError::permanent(format!(
                "fromAddress {:?} is not an address",
                email.from_address
            )))
        }
    };
    let mut builder = builder
        .to(Mailbox::new(None, to_address))
        .subject(email.subject.clone())
        .date(UNIX_EPOCH + Duration::from_millis(email.accepted_at_ms))
        .message_id(Some(format!(
            "<{}@webapi-gateway.interaction>",
            email.interaction_id
        )))
        .raw_header(header(INTERACTION_ID_HEADER, &email.interaction_id)?)
        .raw_header(header("X-Tenant-Name", &email.tenant_name)?);
    for (key, value) in &email.user_data {
        builder = builder.raw_header(header(&format!("X-UserData-{key}"), value)?);
    }
    let text = SinglePart::plain(email.text.clone());
    let built = |m: Result<Message, lettre::error::Error>| {
        m.map_err(|e| DeliveryError::permanent(format!("building the message: {e}")))
    };

    if email.attachments.is_empty() {
        let message = built(builder.singlepart(text))?;
        out.write_all(&message.formatted())
            .await
            .map_err(write_error)?;
        return out
            .flush()
            .await
            .map_err(write_error)
            .map(|()| smtp_envelope);
    }

    // lettre writes the headers and the text part; its closing delimiter is cut off and the
    // attachment parts follow, streamed from their files.
    let boundary = format!("=_gw_{}", email.interaction_id);
    let message = built(
        builder.multipart(
            MultiPart::mixed()
                .boundary(boundary.clone())
                .singlepart(text),
        ),
    )?;
    let mut head = message.formatted();
    let closing = format!("--{boundary}--");
    let cut = find_last(&head, closing.as_bytes())
        .ok_or_else(|| DeliveryError::permanent("no closing MIME delimiter from lettre"))?;
    head.truncate(cut);
    out.write_all(&head).await.map_err(write_error)?;

    for attachment in &email.attachments {
        let content_type = ContentType::parse(&attachment.content_type)
            .unwrap_or(ContentType::parse("application/octet-stream").expect("valid"));
        let part = SinglePart::builder()
            .header(content_type)
            .header(ContentDisposition::attachment(&attachment.file_name))
            .header(ContentTransferEncoding::Base64)
            .body(Vec::new());
        let part_head = format!("--{boundary}\r\n{}\r\n", part.headers());
        out.write_all(part_head.as_bytes())
            .await
            .map_err(write_error)?;
        let file = super::open_attachment(dir, attachment).await?;
        write_base64(file, out).await?;
    }
    out.write_all(format!("--{boundary}--\r\n").as_bytes())
        .await
        .map_err(write_error)?;
    out.flush().await.map_err(write_error)?;
    Ok(smtp_envelope)
}

/// Base64 in lines of 76 characters, each ending in CRLF, read and written in 56 KiB steps.
async fn write_base64<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut input: R,
    out: &mut W,
) -> Result<(), DeliveryError> {
    let mut buf = vec![0u8; LINE_INPUT * 1024];
    let mut encoded = String::with_capacity(buf.len() / 3 * 4 + buf.len() / LINE_INPUT * 2 + 8);
    loop {
        // Fill the buffer, so that only the last line of the file is short.
        let mut filled = 0;
        while filled < buf.len() {
            let n = input
                .read(&mut buf[filled..])
                .await
                .map_err(|e| DeliveryError::transient(format!("reading an attachment: {e}")))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            return Ok(());
        }
        encoded.clear();
        for line in buf[..filled].chunks(LINE_INPUT) {
            base64::engine::general_purpose::STANDARD.encode_string(line, &mut encoded);
            encoded.push_str("\r\n");
        }
        out.write_all(encoded.as_bytes())
            .await
            .map_err(write_error)?;
        if filled < buf.len() {
            return Ok(());
        }
    }
}

fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

fn write_error(e: std::io::Error) -> DeliveryError {
    DeliveryError::transient(format!("writing the message: {e}"))
}

fn header(name: &str, value: &str) -> Result<HeaderValue, DeliveryError> {
    let name = HeaderName::new_from_ascii(name.to_owned())
        .map_err(|_| DeliveryError::permanent(format!("invalid header name {name:?}")))?;
    Ok(HeaderValue::new(name, value.to_owned()))
}

/// Whether `address` is made only of what intake's address rule lets through (RFC 5322
/// `atext`, dots, one `@`, and the domain's letters, digits, hyphens and dots).
fn is_plain_address(address: &str) -> bool {
    address.bytes().filter(|b| *b == b'@').count() == 1
        && address
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-.@".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn base64_lines_are_76_characters_and_decode_back() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut out = Vec::new();
        write_base64(&data[..], &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        assert!(lines[..lines.len() - 1].iter().all(|l| l.len() == 76));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(lines.concat())
            .unwrap();
        assert_eq!(decoded, data);
    }

    fn envelope(from_address: &str) -> Envelope {
        Envelope::sample("0001", from_address)
    }

    /// Intake takes a local part past RFC 5321's 64 octets (its rule is the document's
    /// pattern, which cannot count); lettre does not. Such an e-mail is still delivered,
    /// with a bare Reply-To, never dead-lettered.
    #[tokio::test]
    async fn a_customer_address_lettre_refuses_is_still_a_reply_to() {
        let dir = tempfile::tempdir().unwrap();
        for (address, shown) in [
            (
                "ann@shop.example",
                "Reply-To: \"Ann Lee\" <ann@shop.example>",
            ),
            (
                &format!("{}@shop.example", "a".repeat(90)) as &str,
                "Reply-To: ",
            ),
        ] {
            let mut out = Vec::new();
            compose(
                &envelope(address),
                dir.path(),
                "cc@localhost",
                "cc@localhost",
                &mut out,
            )
            .await
            .unwrap_or_else(|e| panic!("{address}: {e:?}"));
            let text = String::from_utf8(out).unwrap();
            let line = text
                .lines()
                .find(|l| l.starts_with("Reply-To:"))
                .unwrap_or_else(|| panic!("no Reply-To for {address}: {text}"));
            assert!(line.starts_with(shown) && line.contains(address), "{line}");
        }
        // The display name given with the address names the customer in From and Reply-To.
        let mut named = envelope("john@doe.com");
        named.from_name = Some(r#"Doe, John "JD""#.into());
        let mut out = Vec::new();
        compose(&named, dir.path(), "cc@localhost", "cc@localhost", &mut out)
            .await
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let header = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in {text}"))
                .to_owned()
        };
        // `Doe, John "JD"` as an RFC 2047 word: lettre encodes a name with quotes.
        let name = "=?utf-8?b?RG9lLCBKb2huICJKRCI=?=";
        assert_eq!(
            header("Reply-To:"),
            format!("Reply-To: {name} <john@doe.com>")
        );
        assert_eq!(header("From:"), format!("From: {name} <cc@localhost>"));
        let mut out = Vec::new();
        assert!(compose(
            &envelope("a b@c.d"),
            dir.path(),
            "cc@localhost",
            "cc@localhost",
            &mut out
        )
        .await
        .is_err());
    }
}
