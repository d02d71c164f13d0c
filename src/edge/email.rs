//! Receiving an e-mail into the intake, for both dialects' Send Email (`POST /api/v2/emails`,
//! `POST /genesys/2/email/{service}`): the multipart stream, or the GMS dialect's
//! form-encoded body.
//!
//! Owns the wire names of the form fields and the body streams. Each part (each form field)
//! is handed to the e-mail intake chunk by chunk as it arrives (attachments straight into the
//! spool), so the body is never held whole; the intake applies the rules. It must not decide
//! anything about an e-mail's content or delivery, and it answers the interactionId only once
//! the intake has made the e-mail durable. Its body limit is its own (`email.max_size` plus
//! framing), not the chat routes' `server.max_body_bytes`.
//!
//! It also owns the e-mail rate limits (per client address and for all clients together,
//! `email.per_address_*` and `email.global_*`), checked before a byte of the body is read:
//! they are what keeps the gateway from being a cheap way to send mail in bulk, whatever
//! the intake lets through.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use email::{EmailConfig, EmailService, Intake, IntakeError, InteractionId, TextField};
use governor::clock::DefaultClock;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use http_body_util::BodyExt;

use super::body::{too_slow, BodyHead};
use super::limits::{client_key, Keyed};
use crate::error::Error;
use crate::telemetry::REFUSALS;

/// Room for the multipart framing (boundaries and part headers) on top of `email.max_size`:
/// a stream longer than both together is cut off even if its parts are all tiny.
const FRAMING_ALLOWANCE: u64 = 1024 * 1024;

/// What the e-mail routes need (an axum sub-state of the gateway): the running e-mail side
/// and the tenants an e-mail may name. Cheap to clone.
#[derive(Clone)]
pub struct Emails {
    service: EmailService,
    tenants: Arc<[String]>,
    rates: Arc<Rates>,
}

/// The e-mail rate limits (GCRA, as the edge's other limits).
struct Rates {
    /// E-mails per client address; remembers at most `limits.max_tracked_keys` addresses.
    per_address: Option<Keyed<IpAddr>>,
    /// E-mails from all clients together.
    global: Option<RateLimiter<NotKeyed, InMemoryState, DefaultClock>>,
}

impl Rates {
    fn new(config: &EmailConfig, max_tracked: usize) -> Rates {
        Rates {
            per_address: hourly(config.per_address_per_hour, config.per_address_burst)
                .map(|quota| Keyed::new(quota, max_tracked)),
            global: hourly(config.global_per_hour, config.global_burst).map(RateLimiter::direct),
        }
    }

    /// Whether one more e-mail may be received now: the client's address first, so one
    /// flooding client is refused before it uses up the allowance of everyone.
    fn check(&self, client: Option<IpAddr>) -> Result<(), Error> {
        if let (Some(limiter), Some(ip)) = (&self.per_address, client) {
            if limiter.allow(&ip).is_err() {
                return Err(Error::EmailRateLimitedClient);
            }
        }
        if let Some(limiter) = &self.global {
            if limiter.check().is_err() {
                return Err(Error::EmailRateLimitedAll);
            }
        }
        Ok(())
    }
}

/// `per_hour` e-mails an hour sustained, `burst` at once; `None` when `per_hour` is 0 (off).
fn hourly(per_hour: u32, burst: u32) -> Option<Quota> {
    let burst = std::num::NonZeroU32::new(burst)?;
    (per_hour > 0)
        .then(|| Quota::with_period(Duration::from_secs(3600) / per_hour))
        .flatten()
        .map(|quota| quota.allow_burst(burst))
}

/// The `gateway_refusals_total` reason of an e-mail refused by a limit, if it was.
fn refusal_reason(error: &Error) -> Option<&'static str> {
    Some(match error {
        Error::EmailRateLimitedClient => "email_rate_address",
        Error::EmailRateLimitedAll => "email_rate_global",
        Error::Email(IntakeError::Busy) => "email_busy",
        Error::Email(IntakeError::MailboxNotAllowed(_)) => "email_mailbox",
        Error::Email(IntakeError::TextTooLong { .. }) => "email_text_size",
        _ => return None,
    })
}

impl Emails {
    /// `max_tracked` bounds the addresses the per-address rate limit remembers
    /// (`limits.max_tracked_keys`).
    pub fn new(service: EmailService, tenants: Vec<String>, max_tracked: usize) -> Emails {
        let rates = Arc::new(Rates::new(service.config(), max_tracked));
        Emails {
            service,
            tenants: tenants.into(),
            rates,
        }
    }

    /// The e-mail side: spool, limits, delivery queue.
    pub fn service(&self) -> &EmailService {
        &self.service
    }

    /// Reads one e-mail into the spool and answers its id once it is durable. `tenant` is
    /// set by the GMS dialect, whose tenant comes from the service's configuration: a
    /// `tenantName` field is then ignored. The GMS dialect also allows a form-encoded body
    /// (no files).
    pub async fn accept(&self, req: Request, tenant: Option<&str>) -> Result<InteractionId, Error> {
        let result = self.receive_request(req, tenant).await;
        if let Some(reason) = result.as_ref().err().and_then(refusal_reason) {
            metrics::counter!(REFUSALS, "reason" => reason).increment(1);
        }
        let id = result?;
        tracing::info!(interaction_id = %id, "e-mail accepted");
        Ok(id)
    }

    async fn receive_request(
        &self,
        req: Request,
        tenant: Option<&str>,
    ) -> Result<InteractionId, Error> {
        self.rates.check(client_key(&req))?;
        let email = &self.service;
        let head = BodyHead::of(&req);
        let stream_limit = email.limits().max_size.saturating_add(FRAMING_ALLOWANCE);
        if head.length.is_some_and(|n| n > stream_limit) {
            // Refused before a byte is read or written.
            return Err(too_large(email));
        }
        let id = if tenant.is_some() && head.media_type() == "application/x-www-form-urlencoded" {
            self.receive_form(req.into_body(), stream_limit, tenant)
                .await?
        } else {
            let boundary = multer::parse_boundary(head.raw_type()).map_err(|_| match tenant {
                Some(_) => Error::GmsNotMultipart(head.raw_type().to_owned()),
                None => Error::NotMultipart(head.raw_type().to_owned()),
            })?;
            let constraints = multer::Constraints::new()
                .size_limit(multer::SizeLimit::new().whole_stream(stream_limit));
            let multipart = multer::Multipart::with_constraints(
                req.into_body().into_data_stream(),
                boundary,
                constraints,
            );
            self.receive(multipart, tenant).await?
        };
        Ok(id)
    }

    /// An intake with the service's tenant set, when the dialect gives one.
    async fn intake(&self, tenant: Option<&str>) -> Result<Intake, Error> {
        let mut intake = self.service.intake().await?;
        if let Some(tenant) = tenant {
            intake.set_text(TextField::TenantName, tenant.as_bytes().to_vec())?;
        }
        Ok(intake)
    }

    /// A form-encoded e-mail (GMS dialect): text fields only, decoded and handed to the
    /// intake as the body arrives. More than `stream_limit` bytes, or a body that cannot be
    /// read to its end, is refused as too large.
    async fn receive_form(
        &self,
        mut body: Body,
        stream_limit: u64,
        tenant: Option<&str>,
    ) -> Result<InteractionId, Error> {
        let mut intake = self.intake(tenant).await?;
        let mut form = FormStream::new(&mut intake, tenant.is_some());
        let mut read: u64 = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| match too_slow(&e) {
                Some(slow) => Error::BodyTimeout(slow),
                None => too_large(&self.service),
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            read = read.saturating_add(data.len() as u64);
            if read > stream_limit {
                return Err(too_large(&self.service));
            }
            form.push(&data)?;
        }
        form.finish()?;
        self.check_tenant(&intake)?;
        Ok(intake.commit().await?)
    }

    /// Streams every part into the intake. On any error the intake is dropped, which removes
    /// whatever was written.
    async fn receive(
        &self,
        mut multipart: multer::Multipart<'static>,
        tenant: Option<&str>,
    ) -> Result<InteractionId, Error> {
        let mut intake = self.intake(tenant).await?;
        let limit = self.service.limits().max_size;
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
                while let Some(chunk) =
                    field.chunk().await.map_err(|e| multipart_error(e, limit))?
                {
                    sink.write(&chunk).await?;
                }
                sink.finish().await?;
                continue;
            }
            let text_field = wire_field(&name, tenant.is_some());
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
        self.check_tenant(&intake)?;
        Ok(intake.commit().await?)
    }

    /// The tenant must be one the gateway serves, as for chats.
    fn check_tenant(&self, intake: &Intake) -> Result<(), Error> {
        match intake.tenant_name() {
            Some(tenant)
                if !tenant.trim().is_empty() && !self.tenants.iter().any(|t| t == tenant) =>
            {
                Err(Error::UnknownTenant(tenant.to_owned()))
            }
            // Missing or blank: the intake's own check names the field.
            _ => Ok(()),
        }
    }
}

fn too_large(email: &EmailService) -> Error {
    Error::Email(IntakeError::TooLarge {
        max: email.limits().max_size,
    })
}

/// Which intake field a form field feeds, or none. `tenantName` is dropped (but counted)
/// when the dialect gives the tenant.
fn wire_field(name: &str, tenant_given: bool) -> Option<TextField> {
    text_field(name).filter(|_| !(tenant_given && name == "tenantName"))
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
    // The edge's pace cut the body off (`body::Paced`): 408, not a malformed body.
    if let Some(slow) = too_slow(&e) {
        return Error::BodyTimeout(slow);
    }
    match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            Error::Email(IntakeError::TooLarge { max: max_size })
        }
        other => Error::MalformedMultipart(other.to_string()),
    }
}

/// A form-encoded body decoded as it arrives (the `application/x-www-form-urlencoded` rules
/// of `form_urlencoded::parse`: `&`-separated pairs, the first `=` splits name from value,
/// `+` is a space, `%XX` a byte, empty pairs are skipped). Names are short and collected
/// whole; a value goes to the intake chunk by chunk, so no value is ever held beyond what
/// the intake keeps of a text field.
struct FormStream<'a> {
    intake: &'a mut Intake,
    tenant_given: bool,
    /// In a pair's value (after its `=`), or still in its name.
    in_value: bool,
    /// The raw bytes of the current pair's name.
    name: Vec<u8>,
    /// Where the current value goes: an intake text field (with what it has so far), or
    /// nowhere (counted only).
    target: Option<(TextField, Vec<u8>)>,
    /// The end of the previous chunk when it may be the start of a `%XX` escape.
    held: Vec<u8>,
}

impl<'a> FormStream<'a> {
    fn new(intake: &'a mut Intake, tenant_given: bool) -> FormStream<'a> {
        FormStream {
            intake,
            tenant_given,
            in_value: false,
            name: Vec::new(),
            target: None,
            held: Vec::new(),
        }
    }

    /// The next chunk of the body.
    fn push(&mut self, chunk: &[u8]) -> Result<(), Error> {
        let mut rest = chunk;
        while !rest.is_empty() {
            if !self.in_value {
                match rest.iter().position(|b| *b == b'=' || *b == b'&') {
                    None => {
                        self.name.extend_from_slice(rest);
                        return Ok(());
                    }
                    Some(i) => {
                        self.name.extend_from_slice(&rest[..i]);
                        let at_value = rest[i] == b'=';
                        rest = &rest[i + 1..];
                        if at_value {
                            self.start_value()?;
                        } else {
                            self.end_pair()?;
                        }
                    }
                }
                continue;
            }
            let end = rest.iter().position(|b| *b == b'&');
            let value = &rest[..end.unwrap_or(rest.len())];
            self.value(value, end.is_some())?;
            match end {
                Some(i) => {
                    rest = &rest[i + 1..];
                    self.end_pair()?;
                }
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// The end of the body.
    fn finish(mut self) -> Result<(), Error> {
        if self.in_value {
            self.value(&[], true)?;
        }
        self.end_pair()
    }

    /// The current pair's name is complete: decide where its value goes.
    fn start_value(&mut self) -> Result<(), Error> {
        let name = decode_name(&self.name);
        if crate::edge::body::has_control(&name) {
            // As in a multipart body, whose part header could not carry it.
            return Err(Error::MalformedForm(format!(
                "the field name {name:?} contains a control character"
            )));
        }
        self.target = match wire_field(&name, self.tenant_given) {
            Some(tf) => Some((tf, Vec::new())),
            None if name == "files" || name == "files[]" => {
                return Err(Error::Email(IntakeError::InvalidField {
                    field: "files",
                    reason: "attachments need a multipart/form-data body",
                }))
            }
            None => None,
        };
        self.in_value = true;
        Ok(())
    }

    /// Decodes and hands on part of the current value; `last` when the value ends with it.
    fn value(&mut self, raw: &[u8], last: bool) -> Result<(), Error> {
        let mut bytes = std::mem::take(&mut self.held);
        bytes.extend_from_slice(raw);
        // An escape cut by the chunk's end waits for the next chunk.
        let keep = if last { 0 } else { incomplete_escape(&bytes) };
        self.held = bytes.split_off(bytes.len() - keep);
        let decoded = percent_decode(&bytes);
        match &mut self.target {
            Some((tf, buf)) => self.intake.text_chunk(*tf, buf, &decoded)?,
            None => self.intake.ignored_chunk(&decoded)?,
        }
        Ok(())
    }

    /// A pair ends (`&` or the end of the body): its value is recorded.
    fn end_pair(&mut self) -> Result<(), Error> {
        if !self.in_value {
            if self.name.is_empty() {
                // `&&`: an empty pair, skipped.
                return Ok(());
            }
            // A name without `=`: its value is empty.
            self.start_value()?;
        }
        if let Some((tf, buf)) = self.target.take() {
            // Invalid UTF-8 becomes U+FFFD, as `form_urlencoded` decodes it.
            let text = String::from_utf8_lossy(&buf).into_owned();
            self.intake.set_text(tf, text.into_bytes())?;
        }
        self.in_value = false;
        self.name.clear();
        Ok(())
    }
}

/// A form name, decoded (names are complete and short).
fn decode_name(raw: &[u8]) -> String {
    String::from_utf8_lossy(&percent_decode(raw)).into_owned()
}

/// How many bytes at the end of `bytes` may be an escape still missing its hex digits.
fn incomplete_escape(bytes: &[u8]) -> usize {
    match bytes {
        [.., b'%'] => 1,
        [.., b'%', h] if h.is_ascii_hexdigit() => 2,
        _ => 0,
    }
}

/// `+` → space, `%XX` → its byte; a `%` not followed by two hex digits stays as it is.
fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => match raw.get(i + 1..i + 3).map(|h| (hex(h[0]), hex(h[1]))) {
                Some((Some(high), Some(low))) => {
                    out.push(high << 4 | low);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value decoded in two pieces, cut anywhere, the way `FormStream::value` decodes it.
    fn decoded_in_two(value: &[u8], cut: usize) -> String {
        let mut first = value[..cut].to_vec();
        let held = first.split_off(first.len() - incomplete_escape(&first));
        let mut out = percent_decode(&first);
        let mut last = held;
        last.extend_from_slice(&value[cut..]);
        out.extend(percent_decode(&last));
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The streaming decoder agrees with `form_urlencoded::parse` however a value is cut.
    #[test]
    fn values_decode_as_form_urlencoded_does_across_chunk_cuts() {
        for value in [
            &b"1%2B1+%3D+2"[..],
            b"%E2%82%AC",
            b"%4",
            b"%zz%",
            b"%%41",
            b"%4%41",
            b"\xff%FF",
        ] {
            let mut body = b"v=".to_vec();
            body.extend_from_slice(value);
            let (_, expected) = form_urlencoded::parse(&body).next().unwrap();
            for cut in 0..=value.len() {
                assert_eq!(
                    decoded_in_two(value, cut),
                    expected,
                    "{value:?} cut at {cut}"
                );
            }
        }
        assert_eq!(decode_name(b"userData%5Bk%5D"), "userData[k]");
    }
}
