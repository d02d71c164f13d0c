//! The RFC 5322 form of a spooled e-mail, shared by the mock and SMTP backends so that what a
//! test reads from an `.eml` file is what an SMTP server receives.
//!
//! Owns the header layout (From the customer, To the mailbox, interactionId in `Message-ID`
//! and `X-Interaction-Id`, user data as `X-UserData-<key>`). It must not send anything.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::Message;

use super::DeliveryError;
use crate::envelope::Envelope;

/// Header carrying the interactionId.
pub const INTERACTION_ID_HEADER: &str = "X-Interaction-Id";

/// The message for `email`, addressed to its mailbox or else `default_mailbox`. Reads the
/// attachment bodies from `dir`: the whole message is in memory while it is sent, which is
/// bounded by `email.max_size` and happens one e-mail at a time.
pub async fn compose(
    email: &Envelope,
    dir: &Path,
    default_mailbox: &str,
) -> Result<Message, DeliveryError> {
    // Addresses were checked at intake; failing here means the spool was edited by hand.
    let from_address = email
        .from_address
        .parse()
        .map_err(|e| DeliveryError::permanent(format!("fromAddress: {e}")))?;
    let to = email.mailbox.as_deref().unwrap_or(default_mailbox);
    let to_address = to
        .parse()
        .map_err(|e| DeliveryError::permanent(format!("mailbox {to:?}: {e}")))?;
    let display = format!("{} {}", email.first_name, email.last_name);

    let mut builder = Message::builder()
        .from(Mailbox::new(Some(display), from_address))
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
    let message = if email.attachments.is_empty() {
        builder.singlepart(text)
    } else {
        let mut body = MultiPart::mixed().singlepart(text);
        for attachment in &email.attachments {
            let bytes = tokio::fs::read(dir.join(&attachment.stored_as))
                .await
                .map_err(|e| {
                    DeliveryError::transient(format!(
                        "reading attachment {}: {e}",
                        attachment.stored_as
                    ))
                })?;
            let content_type = ContentType::parse(&attachment.content_type)
                .unwrap_or(ContentType::parse("application/octet-stream").expect("valid"));
            body = body.singlepart(
                Attachment::new(attachment.file_name.clone()).body(bytes, content_type),
            );
        }
        builder.multipart(body)
    };
    message.map_err(|e| DeliveryError::permanent(format!("building the message: {e}")))
}

fn header(name: &str, value: &str) -> Result<HeaderValue, DeliveryError> {
    let name = HeaderName::new_from_ascii(name.to_owned())
        .map_err(|_| DeliveryError::permanent(format!("invalid header name {name:?}")))?;
    Ok(HeaderValue::new(name, value.to_owned()))
}
