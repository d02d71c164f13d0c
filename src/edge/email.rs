//! `POST /api/v2/emails`: the multipart framing of "Send Email".
//!
//! Owns the wire names of the form fields and the multipart stream. Each part is handed to the
//! e-mail intake chunk by chunk as it arrives (attachments straight into the spool), so the
//! body is never held whole; the intake applies the rules. It must not decide anything about
//! an e-mail's content or delivery, and it answers the interactionId only once the intake has
//! made the e-mail durable. Its body limit is its own (`email.max_size` plus framing), not the
//! chat routes' `server.max_body_bytes`.

use std::sync::Arc;

use super::body::BodyHead;
use axum::extract::{Request, State};
use axum::Json;
use email::{EmailService, Intake, IntakeError, TextField};
use http_body_util::BodyExt;
use serde::Serialize;

use super::Failure;
use crate::error::Error;
use crate::Gateway;

/// Room for the multipart framing (boundaries and part headers) on top of `email.max_size`:
/// a stream longer than both together is cut off even if its parts are all tiny.
const FRAMING_ALLOWANCE: u64 = 1024 * 1024;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailAccepted {
    interaction_id: String,
}

/// Receives one e-mail and answers its interactionId.
pub async fn send_email(
    State(gw): State<Arc<Gateway>>,
    req: Request,
) -> Result<Json<EmailAccepted>, Failure> {
    let id = accept(&gw, req, None).await?;
    Ok(Json(EmailAccepted {
        interaction_id: id.to_string(),
    }))
}

/// Reads one e-mail into the spool and answers its id once it is durable. `tenant` is set
/// by the GMS dialect, whose tenant comes from the service's configuration: a `tenantName`
/// field is then ignored. The GMS dialect also allows a form-encoded body (no files).
pub(super) async fn accept(
    gw: &Gateway,
    req: Request,
    tenant: Option<&str>,
) -> Result<email::InteractionId, Error> {
    let email = gw.email();
    let head = BodyHead::of(&req);
    let stream_limit = email.limits().max_size.saturating_add(FRAMING_ALLOWANCE);
    let too_large = || {
        Error::Email(IntakeError::TooLarge {
            max: email.limits().max_size,
        })
    };
    if head.length.is_some_and(|n| n > stream_limit) {
        // Refused before a byte is read or written.
        return Err(too_large());
    }
    let id = if tenant.is_some() && head.media_type == "application/x-www-form-urlencoded" {
        let limit = usize::try_from(stream_limit).unwrap_or(usize::MAX);
        let body = http_body_util::Limited::new(req.into_body(), limit)
            .collect()
            .await
            .map_err(|_| too_large())?
            .to_bytes();
        receive_form(gw, email, &body, tenant).await?
    } else {
        let boundary = multer::parse_boundary(&head.raw_type)
            .map_err(|_| Error::NotMultipart(head.raw_type.clone()))?;
        let constraints = multer::Constraints::new()
            .size_limit(multer::SizeLimit::new().whole_stream(stream_limit));
        let multipart = multer::Multipart::with_constraints(
            req.into_body().into_data_stream(),
            boundary,
            constraints,
        );
        receive(gw, email, multipart, tenant).await?
    };
    tracing::info!(interaction_id = %id, "e-mail accepted");
    Ok(id)
}

/// A form-encoded e-mail (GMS dialect): text fields only.
async fn receive_form(
    gw: &Gateway,
    email: &EmailService,
    body: &[u8],
    tenant: Option<&str>,
) -> Result<email::InteractionId, Error> {
    let mut intake = email.intake().await?;
    if let Some(tenant) = tenant {
        intake.set_text(TextField::TenantName, tenant.as_bytes().to_vec())?;
    }
    for (name, value) in form_urlencoded::parse(body) {
        match text_field(&name).filter(|_| !(tenant.is_some() && name == "tenantName")) {
            Some(tf) => {
                let mut buf = Vec::new();
                intake.text_chunk(tf, &mut buf, value.as_bytes())?;
                intake.set_text(tf, buf)?;
            }
            None if name == "files" || name == "files[]" => {
                return Err(Error::Email(IntakeError::InvalidField {
                    field: "files",
                    reason: "attachments need a multipart/form-data body",
                }))
            }
            None => intake.ignored_chunk(value.as_bytes())?,
        }
    }
    check_tenant(gw, &intake)?;
    Ok(intake.commit().await?)
}

/// Streams every part into the intake. On any error the intake is dropped, which removes
/// whatever was written.
async fn receive(
    gw: &Gateway,
    email: &EmailService,
    mut multipart: multer::Multipart<'static>,
    tenant: Option<&str>,
) -> Result<email::InteractionId, Error> {
    let mut intake = email.intake().await?;
    if let Some(tenant) = tenant {
        intake.set_text(TextField::TenantName, tenant.as_bytes().to_vec())?;
    }
    let limit = email.limits().max_size;
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(e, limit))?
    {
        let name = field.name().unwrap_or("").to_owned();
        let file_name = field.file_name().map(str::to_owned);
        // `files[]` is what PHP-style forms name a repeatable file input.
        if name == "files" || name == "files[]" {
            let mut sink = intake.attachment(file_name.as_deref()).await?;
            while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit))? {
                sink.write(&chunk).await?;
            }
            sink.finish().await?;
            continue;
        }
        let text_field = text_field(&name).filter(|_| !(tenant.is_some() && name == "tenantName"));
        if text_field.is_none() && file_name.as_deref().is_some_and(|f| !f.is_empty()) {
            // A file under another name would otherwise be dropped without the customer
            // knowing.
            return Err(Error::Email(IntakeError::InvalidField {
                field: "files",
                reason: "attachments must be sent as `files` parts",
            }));
        }
        let mut value = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit))? {
            match text_field {
                Some(tf) => intake.text_chunk(tf, &mut value, &chunk)?,
                // Extra form controls (a submit button, say) are tolerated but still count.
                None => intake.ignored_chunk(&chunk)?,
            }
        }
        if let Some(tf) = text_field {
            intake.set_text(tf, value)?;
        }
    }
    check_tenant(gw, &intake)?;
    Ok(intake.commit().await?)
}

/// The tenant must be one the gateway serves, as for chats.
fn check_tenant(gw: &Gateway, intake: &Intake) -> Result<(), Error> {
    match intake.tenant_name() {
        Some(tenant)
            if !tenant.trim().is_empty() && !gw.config.tenants.iter().any(|t| t.name == tenant) =>
        {
            Err(Error::UnknownTenant(tenant.to_owned()))
        }
        // Missing or blank: the intake's own check names the field.
        _ => Ok(()),
    }
}

fn text_field(name: &str) -> Option<TextField> {
    Some(match name {
        "firstName" => TextField::FirstName,
        "lastName" => TextField::LastName,
        "tenantName" => TextField::TenantName,
        "fromAddress" => TextField::FromAddress,
        "subject" => TextField::Subject,
        "text" => TextField::Text,
        "mailbox" => TextField::Mailbox,
        "userData" => TextField::UserData,
        _ => return None,
    })
}

fn multipart_error(e: multer::Error, max_size: u64) -> Error {
    match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            Error::Email(IntakeError::TooLarge { max: max_size })
        }
        other => Error::MalformedMultipart(other.to_string()),
    }
}
